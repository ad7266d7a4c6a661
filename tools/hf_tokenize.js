// hf_tokenize.js - reference ids from Hugging Face's tokenizers (the Rust library,
// npm package `tokenizers`, whose Node binding ships a prebuilt binary).
//   NODE_PATH=/tmp/hf/node_modules node tools/hf_tokenize.js tokenizer.json texts.jsonl out.jsonl
// texts.jsonl: one {"text": ...} per line; out.jsonl: {"text": ..., "ids": [...]} per line,
// encode(text, addSpecialTokens=false) as transformers' tokenizer(text, add_special_tokens=False).
const fs = require("fs");
const { Tokenizer } = require("tokenizers");

async function main() {
    const [tjPath, inPath, outPath] = process.argv.slice(2);
    const tok = Tokenizer.fromFile(tjPath);
    const lines = fs.readFileSync(inPath, "utf8").split("\n").filter((l) => l.length);
    const out = [];
    for (const line of lines) {
        const text = JSON.parse(line).text;
        const enc = await tok.encode(text, null, { addSpecialTokens: false });
        out.push(JSON.stringify({ text: text, ids: Array.from(enc.getIds()) }));
    }
    fs.writeFileSync(outPath, out.join("\n") + "\n");
}
main().catch((e) => { console.error(e); process.exit(1); });
