/* ember - command-line front end (uses only the public API in ember.h).
 *
 *   ember -m MODEL -p PROMPT -n N [sampling flags]   generate text
 *   ember chat -m MODEL [--system TEXT]              chat on stdin/stdout
 *   ember template -m MODEL -f MESSAGES.json         print a rendered chat prompt
 *   ember perplexity -m MODEL -f TEXT [-c CTX]       llama.cpp-style perplexity
 *   ember tokenize -m MODEL (-p TEXT | -f FILE)      print token ids
 *   ember info -m MODEL                              hyperparameters, memory
 *   ember bench -m MODEL [-p N] [-n N] [-r R]        speed and bandwidth
 *
 * Generated text goes to stdout; everything else goes to stderr. */
#include "ember.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct options {
    const char *command, *model, *prompt, *file;
    int n_predict, n_ctx, n_batch, n_threads, repeats, n_prompt_bench;
    int echo, no_bos, special, json, kv_f32, load_mode, verbose;
    int ctx_given;                     /* -c was given: 0 then means the model's own */
    int n_contexts;                    /* bench: contexts stepped together */
    const char *state_save, *state_load;
    const char *kernels;               /* --kernels: NULL = auto */
    const char *stops[16];
    int n_stops;
    const char *chat_template, *system;                 /* chat, template */
    int no_think, no_generation_prompt, context_shift;
    ember_sampler_params sp;
    const char *grammar, *grammar_file, *json_schema;   /* constrained output */
} options;

static double now_s(void);

static void usage(FILE *out) {
    fprintf(out,
        "usage: ember [COMMAND] -m MODEL [options]\n"
        "commands: generate (default), chat, template, perplexity, tokenize, info, bench\n"
        "  -m, --model FILE        GGUF model\n"
        "  -p, --prompt TEXT       prompt (bench: prompt tokens, default 128)\n"
        "  -f, --file FILE         read the prompt / text from FILE\n"
        "  -n, --n-predict N       tokens to generate (default 128; bench: 64)\n"
        "  -c, --ctx-size N        context size (default: the model's up to 4096, 512 for\n"
        "                          perplexity; 0 = the model's)\n"
        "  -b, --batch-size N      prompt batch size (default 64)\n"
        "  -t, --threads N         threads (default: all cores)\n"
        "  --temp T                temperature, 0 = greedy (default 0.8)\n"
        "  --top-k K               (default 40, 0 = off)\n"
        "  --top-p P               (default 0.95, 1 = off)\n"
        "  --min-p P               (default 0.05, 0 = off)\n"
        "  --repeat-penalty R      (default 1.0 = off)\n"
        "  --repeat-last-n N       (default 64)\n"
        "  -s, --seed S            sampling seed (default: random)\n"
        "  --echo                  also print the prompt\n"
        "  --no-bos                (tokenize) do not add BOS\n"
        "  --special               parse special-token text such as <|eot_id|>\n"
        "  --mmap / --no-mmap      map the file, or read it into memory (default)\n"
        "  --kernels NAME          kernel set: auto (default), scalar, avx2, avx512, amx, neon\n"
        "  --kv-f32                F32 KV cache instead of F16\n"
        "  -r, --repeats N         (bench) repetitions, median reported (default 3)\n"
        "  --json                  (bench) print a JSON object as the last line\n"
        "  --contexts N            (bench) step N contexts together in one pass (default 1)\n"
        "  --stop TEXT             stop when the text appears (repeatable, up to 16)\n"
        "  --state-save FILE       after generating, save the context and sampler to FILE\n"
        "  --state-load FILE       before generating, restore them from FILE (then -p is\n"
        "                          appended without BOS; without -p generation continues)\n"
        "  -v, --verbose           (tokenize) report the encoding speed on stderr\n"
        "  --template NAME         (chat, template) chat format instead of the model's\n"
        "                          tokenizer.chat_template (llama3, chatml, qwen3, ...)\n"
        "  --system TEXT           (chat) system message\n"
        "  --no-think              (chat, template) Qwen3: answer without thinking\n"
        "  --no-generation-prompt  (template) do not end with the assistant's header\n"
        "  --context-shift         (chat) when the context is full, drop the oldest\n"
        "                          turns and go on (default: stop with an error)\n"
        "  --grammar TEXT          (generate) constrain the output to a GBNF grammar (start rule: root)\n"
        "  --grammar-file FILE     (generate) the same, read from FILE\n"
        "  --json-schema FILE      (generate) constrain the output to JSON matching the schema in FILE\n");
}

static int die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ember: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int parse_int(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < -2147483647L || v > 2147483647L) return -1;
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->command = "generate";
    o->n_predict = -1;
    o->n_prompt_bench = 128;
    o->repeats = 3;
    o->sp = ember_sampler_default_params();
    o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int i = 1;
    if (argc > 1 && argv[1][0] != '-') o->command = argv[i++];
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE() do { if (!v) { die("option %s needs a value", a); return -1; } i++; } while (0)
#define INT_OPT(field) do { NEED_VALUE(); if (parse_int(v, &(field))) { die("bad number for %s: '%s'", a, v); return -1; } } while (0)
#define FLOAT_OPT(field) do { NEED_VALUE(); if (parse_float(v, &(field))) { die("bad number for %s: '%s'", a, v); return -1; } } while (0)
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_VALUE(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_VALUE(); o->prompt = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { NEED_VALUE(); o->file = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) INT_OPT(o->n_predict);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { INT_OPT(o->n_ctx); o->ctx_given = 1; }
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) INT_OPT(o->n_batch);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) INT_OPT(o->n_threads);
        else if (!strcmp(a, "-r") || !strcmp(a, "--repeats")) INT_OPT(o->repeats);
        else if (!strcmp(a, "--temp")) FLOAT_OPT(o->sp.temperature);
        else if (!strcmp(a, "--top-k")) INT_OPT(o->sp.top_k);
        else if (!strcmp(a, "--top-p")) FLOAT_OPT(o->sp.top_p);
        else if (!strcmp(a, "--min-p")) FLOAT_OPT(o->sp.min_p);
        else if (!strcmp(a, "--repeat-penalty")) FLOAT_OPT(o->sp.repeat_penalty);
        else if (!strcmp(a, "--repeat-last-n")) INT_OPT(o->sp.repeat_last_n);
        else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) {
            NEED_VALUE();
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || *end || end == v) { die("bad seed '%s'", v); return -1; }
            o->sp.seed = s;
        }
        else if (!strcmp(a, "--grammar")) { NEED_VALUE(); o->grammar = v; }
        else if (!strcmp(a, "--grammar-file")) { NEED_VALUE(); o->grammar_file = v; }
        else if (!strcmp(a, "--json-schema")) { NEED_VALUE(); o->json_schema = v; }
        else if (!strcmp(a, "--echo")) o->echo = 1;
        else if (!strcmp(a, "--no-bos")) o->no_bos = 1;
        else if (!strcmp(a, "--special")) o->special = 1;
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--contexts")) INT_OPT(o->n_contexts);
        else if (!strcmp(a, "--state-save")) { NEED_VALUE(); o->state_save = v; }
        else if (!strcmp(a, "--state-load")) { NEED_VALUE(); o->state_load = v; }
        else if (!strcmp(a, "--stop")) {
            NEED_VALUE();
            if (o->n_stops == 16) { die("at most 16 --stop strings"); return -1; }
            if (!*v) { die("--stop needs a non-empty text"); return -1; }
            o->stops[o->n_stops++] = v;
        }
        else if (!strcmp(a, "--kv-f32")) o->kv_f32 = 1;
        else if (!strcmp(a, "--mmap")) o->load_mode = EMBER_LOAD_MMAP;
        else if (!strcmp(a, "--no-mmap")) o->load_mode = EMBER_LOAD_READ;
        else if (!strcmp(a, "--kernels")) { NEED_VALUE(); o->kernels = v; }
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else if (!strcmp(a, "--template")) { NEED_VALUE(); o->chat_template = v; }
        else if (!strcmp(a, "--system")) { NEED_VALUE(); o->system = v; }
        else if (!strcmp(a, "--no-think")) o->no_think = 1;
        else if (!strcmp(a, "--no-generation-prompt")) o->no_generation_prompt = 1;
        else if (!strcmp(a, "--context-shift")) o->context_shift = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        else { die("unknown option '%s' (see --help)", a); return -1; }
    }
    if (!o->model) { die("no model given (-m MODEL)"); return -1; }
    if (o->n_ctx < 0 || o->n_batch < 0 || o->n_threads < 0 || o->repeats < 1) { die("negative sizes are not allowed"); return -1; }
    if (o->n_contexts < 0 || o->n_contexts > 64) { die("--contexts %d is not in 1..64", o->n_contexts); return -1; }
    return 0;
}

/* Read a whole file exactly (NUL bytes and all). */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *nb = realloc(buf, cap * 2 + 1);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) { free(buf); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int open_model_ex(const options *o, int vocab_only, ember_model **m) {
    ember_model_params mp = ember_model_default_params();
    mp.load_mode = o->load_mode;
    mp.vocab_only = vocab_only;
    mp.kernels = o->kernels;
    ember_error err;
    if (ember_model_open_file(o->model, &mp, m, &err) != EMBER_OK)
        return die("cannot load model '%s': %s", o->model, err.message);
    return 0;
}

static int open_context(const options *o, ember_model *m, int n_ctx, ember_context **c) {
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = n_ctx;
    if (n_ctx == 0 && o->ctx_given) {   /* -c 0: the model's own length */
        ember_model_info info;
        ember_model_get_info(m, &info, NULL);
        cp.n_ctx = info.n_ctx_train;
    }
    cp.n_batch = o->n_batch;
    cp.n_threads = o->n_threads;
    cp.kv_type = o->kv_f32 ? EMBER_KV_F32 : EMBER_KV_F16;
    ember_error err;
    if (ember_context_create(m, &cp, c, &err) != EMBER_OK) return die("cannot create context: %s", err.message);
    return 0;
}

static int open_model(const options *o, ember_model **m) { return open_model_ex(o, 0, m); }

/* Load the text for -p / -f (exact bytes for -f). */
static int get_text(const options *o, char **owned, const char **text, size_t *len) {
    *owned = NULL;
    if (o->file) {
        *owned = read_file(o->file, len);
        if (!*owned) return die("cannot read '%s': %s", o->file, strerror(errno));
        *text = *owned;
    } else {
        *text = o->prompt ? o->prompt : "";
        *len = strlen(*text);
    }
    return 0;
}

static int tokenize_all(ember_model *m, const char *text, size_t len, int flags, ember_token **out, int *n) {
    /* A token covers at least one byte, plus BOS and a dummy prefix: one
     * pass suffices almost always; ask for the exact count otherwise. */
    int cap = len < 0x7fff0000u ? (int)len + 8 : 0x7fff0000;
    for (int attempt = 0; attempt < 2; attempt++) {
        *out = malloc(((size_t)cap + 1) * sizeof **out);
        if (!*out) return die("out of memory");
        size_t count = 0;
        ember_error err;
        ember_status rc = ember_tokenize(m, text, len, flags, *out, (size_t)cap, &count, &err);
        *n = (int)count;
        if (rc == EMBER_OK) return 0;
        free(*out);
        if (rc != EMBER_ERR_BUFFER_TOO_SMALL) return die("tokenization failed: %s", err.message);
        cap = *n;
    }
    return die("tokenization failed");
}

/* ---- generate ------------------------------------------------------------ */

static int print_token(void *ud, ember_token tok, const char *text, size_t len) {
    (void)ud; (void)tok;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static const char *stop_name(ember_stop_reason r) {
    switch (r) {
    case EMBER_STOP_EOG: return "end of text";
    case EMBER_STOP_LENGTH: return "length limit";
    case EMBER_STOP_CONTEXT_FULL: return "context full";
    case EMBER_STOP_CALLBACK: return "stopped";
    case EMBER_STOP_STRING: return "stop string";
    default: return "none";
    }
}

/* The grammar that --grammar, --grammar-file or --json-schema asks for
 * (*out = NULL if none); 1 after printing an error. */
static int load_grammar(const options *o, ember_grammar **out) {
    *out = NULL;
    if (!!o->grammar + !!o->grammar_file + !!o->json_schema > 1)
        return die("give only one of --grammar, --grammar-file, --json-schema");
    const char *path = o->grammar_file ? o->grammar_file : o->json_schema;
    char *owned = NULL;
    const char *text = o->grammar;
    size_t len = text ? strlen(text) : 0;
    if (path) {
        owned = read_file(path, &len);
        if (!owned) return die("cannot read '%s': %s", path, strerror(errno));
        text = owned;
    }
    if (!text) return 0;
    ember_error err;
    int rc = o->json_schema ? ember_grammar_from_json_schema(text, len, NULL, out, &err)
                            : ember_grammar_parse(text, len, NULL, NULL, out, &err);
    free(owned);
    if (rc != EMBER_OK) return die("%s%s%s", path ? path : "--grammar", ": ", err.message);
    return 0;
}

static int cmd_generate(const options *o) {
    ember_model *m;
    ember_context *c;
    ember_sampler *s;
    char *owned;
    const char *text;
    size_t len;
    if (get_text(o, &owned, &text, &len)) return 1;
    if (open_model(o, &m)) { free(owned); return 1; }
    /* a restored state goes on from where it was: no BOS, maybe no prompt */
    int flags = (o->state_load ? 0 : EMBER_TOKENIZE_ADD_BOS) | (o->special ? EMBER_TOKENIZE_SPECIAL : 0);
    ember_token *toks;
    int n;
    if (tokenize_all(m, text, len, flags, &toks, &n)) { free(owned); ember_model_free(m); return 1; }
    if (n == 0 && !o->state_load) {   /* no BOS in this vocabulary and no text: start from EOS, as GPT-2 does */
        toks[0] = ember_token_eos(m);
        n = toks[0] >= 0 ? 1 : 0;
        if (!n) { free(owned); free(toks); ember_model_free(m); return die("empty prompt and the model has no BOS/EOS token"); }
    }
    int rc = 1;
    ember_grammar *g = NULL;
    if (load_grammar(o, &g)) { free(owned); free(toks); ember_model_free(m); return 1; }
    if (open_context(o, m, o->n_ctx, &c) == 0) {
        ember_error serr;
        if (ember_sampler_create(m, &o->sp, &s, &serr) != EMBER_OK) {
            die("bad sampling parameters: %s", serr.message);
        } else if (g && ember_sampler_set_grammar(s, g) != EMBER_OK) {
            die("out of memory attaching the grammar");
            ember_sampler_free(s);
        } else if (o->state_load && ember_state_load_file(c, s, o->state_load) != EMBER_OK) {
            die("cannot restore the state: %s", ember_context_errmsg(c));
            ember_sampler_free(s);
        } else if (o->n_stops && ember_context_set_stop_strings(c, o->stops, o->n_stops) != EMBER_OK) {
            die("%s", ember_context_errmsg(c));
            ember_sampler_free(s);
        } else {
            if (o->echo) fwrite(text, 1, len, stdout);
            ember_generate_result res;
            int n_predict = o->n_predict < 0 ? 128 : o->n_predict;
            int st = ember_generate(c, s, toks, n, n_predict, print_token, NULL, &res);
            if (st != EMBER_OK) {
                die("generation failed: %s (%s)", ember_status_string(st), ember_context_errmsg(c));
            } else if (o->state_save && ember_state_save_file(c, s, o->state_save) != EMBER_OK) {
                die("cannot save the state: %s", ember_context_errmsg(c));
            } else {
                rc = 0;
                fputc('\n', stderr);
                fprintf(stderr, "ember: prompt %d tokens in %.3f s (%.1f tok/s), generated %d tokens in %.3f s (%.1f tok/s), stop: %s\n",
                        res.n_prompt, res.prompt_seconds, res.n_prompt / (res.prompt_seconds > 0 ? res.prompt_seconds : 1e-9),
                        res.n_generated, res.generate_seconds,
                        res.n_generated / (res.generate_seconds > 0 ? res.generate_seconds : 1e-9), stop_name(res.stop));
            }
            ember_sampler_free(s);
        }
        ember_context_free(c);
    }
    ember_grammar_free(g);
    free(toks);
    free(owned);
    ember_model_free(m);
    return rc;
}

/* ---- chat ------------------------------------------------------------------ */

/* "ember: unknown chat template ...; known: a, b, c" in one line. */
static int die_chat(const char *what, const char *msg) {
    char names[512] = "";
    size_t n = 0;
    for (int i = 0; ember_chat_template_name(i) && n + 1 < sizeof names; i++)
        n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "", ember_chat_template_name(i));
    return die("%s: %s (built-in formats for --template: %s)", what, msg, names);
}

static ember_chat_params chat_params(const options *o) {
    ember_chat_params p = ember_chat_default_params();
    p.template_name = o->chat_template;
    p.enable_thinking = !o->no_think;
    p.add_generation_prompt = !o->no_generation_prompt;
    return p;
}

/* Drop the oldest turn (a user message and the replies after it), keeping
 * a leading system message.  0 if there was an earlier turn to drop. */
static int drop_oldest_turn(ember_chat *chat) {
    int first = ember_chat_n_messages(chat) > 0 && !strcmp(ember_chat_message_at(chat, 0)->role, "system");
    int end = first + 1, n = ember_chat_n_messages(chat);
    while (end < n && strcmp(ember_chat_message_at(chat, end)->role, "user")) end++;
    if (end >= n) return -1;   /* only the newest message is left */
    return ember_chat_erase(chat, first, end - first);
}

static int cmd_chat(const options *o) {
    ember_model *m;
    ember_context *c;
    ember_sampler *s;
    ember_chat *chat;
    ember_error err;
    if (open_model(o, &m)) return 1;
    if (open_context(o, m, o->n_ctx, &c)) { ember_model_free(m); return 1; }
    if (ember_sampler_create(m, &o->sp, &s, &err) != EMBER_OK) { ember_context_free(c); ember_model_free(m); return die("bad sampling parameters: %s", err.message); }
    ember_chat_params cp = chat_params(o);
    cp.add_generation_prompt = 1;
    if (ember_chat_create(m, c, &cp, &chat, &err) != EMBER_OK) {
        ember_sampler_free(s); ember_context_free(c); ember_model_free(m);
        return die_chat("cannot chat with this model", err.message);
    }
    int rc = o->system ? ember_chat_add(chat, "system", o->system) : 0;
    int tty = isatty(0);   /* the prompts are for a person typing, not for piped input */
    if (tty) fprintf(stderr, "ember chat: type a message, an empty line or EOF ends the chat.\n");
    char *line = NULL;
    size_t cap = 0;
    int n_predict = o->n_predict < 0 ? 256 : o->n_predict;
    while (!rc) {
        if (tty) fprintf(stderr, "> ");
        ssize_t l = getline(&line, &cap, stdin);
        if (l < 0) break;
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
        if (!l) break;
        if (ember_chat_add(chat, "user", line)) { rc = die("out of memory"); break; }
        ember_generate_result res;
        int st;
        while ((st = ember_chat_respond(chat, s, n_predict, print_token, NULL, &res)) == EMBER_ERR_CONTEXT_FULL) {
            if (!o->context_shift) {
                rc = die("the conversation no longer fits in the context of %d positions (-c): %s; "
                         "use --context-shift to drop the oldest turns", ember_context_n_ctx(c), ember_chat_errmsg(chat));
                break;
            }
            if (drop_oldest_turn(chat)) {
                rc = die("this message does not fit in the context of %d positions even alone", ember_context_n_ctx(c));
                break;
            }
            fprintf(stderr, "ember: context full, dropped the oldest turn\n");
        }
        if (rc) break;
        putchar('\n');
        fflush(stdout);
        if (st != EMBER_OK) { rc = die("%s", ember_chat_errmsg(chat)); break; }
        if (res.stop == EMBER_STOP_CONTEXT_FULL) {
            if (!o->context_shift) {
                rc = die("the context of %d positions filled during the reply; use --context-shift to drop the "
                         "oldest turns and go on", ember_context_n_ctx(c));
                break;
            }
            fprintf(stderr, "ember: the context filled during the reply; the oldest turns go next turn\n");
        }
    }
    free(line);
    ember_chat_free(chat);
    ember_sampler_free(s);
    ember_context_free(c);
    ember_model_free(m);
    return rc ? 1 : 0;
}

/* ---- template ---------------------------------------------------------------- */

/* A reader for exactly [{"role": "...", "content": "..."}, ...]. */
typedef struct json_in {
    const char *p, *start, *end, *path;
    char err[200];
} json_in;

static int json_fail(json_in *j, const char *what) {
    int line = 1, col = 1;
    for (const char *q = j->start; q < j->p; q++) {
        if (*q == '\n') { line++; col = 1; } else col++;
    }
    snprintf(j->err, sizeof j->err, "%s: line %d, column %d: %s", j->path, line, col, what);
    return -1;
}

static void json_ws(json_in *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int json_hex4(json_in *j, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++, j->p++) {
        char c = j->p < j->end ? *j->p : 0;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return json_fail(j, "bad \\u escape (4 hex digits expected)");
        *v = *v * 16 + (unsigned)d;
    }
    return 0;
}

/* A JSON string into a new NUL-terminated UTF-8 buffer (NUL escapes are refused). */
static int json_string(json_in *j, char **out) {
    *out = NULL;
    if (j->p >= j->end || *j->p != '"') return json_fail(j, "a string was expected");
    j->p++;
    size_t cap = 64, n = 0;
    char *s = malloc(cap);
    for (;;) {
        if (!s) return json_fail(j, "out of memory");
        if (n + 8 > cap) { char *t = realloc(s, cap *= 2); if (!t) { free(s); return json_fail(j, "out of memory"); } s = t; }
        if (j->p >= j->end) { free(s); return json_fail(j, "the string is not closed"); }
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"') break;
        if (c < 0x20) { j->p--; free(s); return json_fail(j, "a control character inside a string (escape it)"); }
        if (c != '\\') { s[n++] = (char)c; continue; }
        char e = j->p < j->end ? *j->p++ : 0;
        unsigned u, lo;
        switch (e) {
        case '"': s[n++] = '"'; break;
        case '\\': s[n++] = '\\'; break;
        case '/': s[n++] = '/'; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'n': s[n++] = '\n'; break;
        case 'r': s[n++] = '\r'; break;
        case 't': s[n++] = '\t'; break;
        case 'u':
            if (json_hex4(j, &u)) { free(s); return -1; }
            if (u >= 0xD800 && u < 0xDC00) {   /* a surrogate pair */
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') { free(s); return json_fail(j, "a lone surrogate in \\u escapes"); }
                j->p += 2;
                if (json_hex4(j, &lo)) { free(s); return -1; }
                if (lo < 0xDC00 || lo > 0xDFFF) { free(s); return json_fail(j, "a lone surrogate in \\u escapes"); }
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            } else if (u >= 0xDC00 && u < 0xE000) {
                free(s);
                return json_fail(j, "a lone surrogate in \\u escapes");
            }
            if (u == 0) { free(s); return json_fail(j, "\\u0000 is not allowed (messages are C strings)"); }
            if (u < 0x80) s[n++] = (char)u;
            else if (u < 0x800) { s[n++] = (char)(0xC0 | u >> 6); s[n++] = (char)(0x80 | (u & 63)); }
            else if (u < 0x10000) { s[n++] = (char)(0xE0 | u >> 12); s[n++] = (char)(0x80 | (u >> 6 & 63)); s[n++] = (char)(0x80 | (u & 63)); }
            else { s[n++] = (char)(0xF0 | u >> 18); s[n++] = (char)(0x80 | (u >> 12 & 63)); s[n++] = (char)(0x80 | (u >> 6 & 63)); s[n++] = (char)(0x80 | (u & 63)); }
            break;
        default: j->p--; free(s); return json_fail(j, "an unknown escape");
        }
    }
    s[n] = 0;
    *out = s;
    return 0;
}

static void free_messages(ember_chat_message *m, int n) {
    for (int i = 0; i < n; i++) { free((void *)m[i].role); free((void *)m[i].content); }
    free(m);
}

static int json_messages(json_in *j, ember_chat_message **out, int *n_out) {
    ember_chat_message *m = NULL;
    int n = 0, cap = 0;
    *out = NULL;
    *n_out = 0;
    json_ws(j);
    if (j->p >= j->end || *j->p != '[') return json_fail(j, "expected '[' (a list of {\"role\": ..., \"content\": ...} objects)");
    j->p++;
    json_ws(j);
    if (j->p < j->end && *j->p == ']') j->p++;
    else for (;;) {
        if (n == cap) {
            ember_chat_message *t = realloc(m, sizeof *m * (size_t)(cap = cap ? cap * 2 : 8));
            if (!t) { free_messages(m, n); return json_fail(j, "out of memory"); }
            m = t;
        }
        m[n].role = m[n].content = NULL;
        n++;
        json_ws(j);
        if (j->p >= j->end || *j->p != '{') { free_messages(m, n); return json_fail(j, "expected '{' (a message object)"); }
        j->p++;
        for (int first = 1;; first = 0) {
            json_ws(j);
            if (j->p < j->end && *j->p == '}' && first) break;
            char *key, *val;
            if (json_string(j, &key)) { free_messages(m, n); return -1; }
            const char **slot = !strcmp(key, "role") ? &m[n - 1].role : !strcmp(key, "content") ? &m[n - 1].content : NULL;
            free(key);
            if (!slot) { free_messages(m, n); return json_fail(j, "unknown key (a message has only \"role\" and \"content\")"); }
            if (*slot) { free_messages(m, n); return json_fail(j, "a key appears twice"); }
            json_ws(j);
            if (j->p >= j->end || *j->p != ':') { free_messages(m, n); return json_fail(j, "expected ':'"); }
            j->p++;
            json_ws(j);
            if (json_string(j, &val)) { free_messages(m, n); return -1; }
            *slot = val;
            json_ws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == '}') break;
            free_messages(m, n);
            return json_fail(j, "expected ',' or '}'");
        }
        j->p++;
        if (!m[n - 1].role || !m[n - 1].content) { free_messages(m, n); return json_fail(j, "a message needs both \"role\" and \"content\""); }
        json_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == ']') { j->p++; break; }
        free_messages(m, n);
        return json_fail(j, "expected ',' or ']'");
    }
    json_ws(j);
    if (j->p != j->end) { free_messages(m, n); return json_fail(j, "text after the closing ']'"); }
    *out = m;
    *n_out = n;
    return 0;
}

static int cmd_template(const options *o) {
    if (!o->file) return die("template needs the messages: -f MESSAGES.json ([{\"role\": \"user\", \"content\": \"...\"}])");
    size_t len;
    char *text = read_file(o->file, &len);
    if (!text) return die("cannot read '%s': %s", o->file, strerror(errno));
    json_in j = {text, text, text + len, o->file, ""};
    ember_chat_message *msgs;
    int n;
    if (json_messages(&j, &msgs, &n)) { free(text); return die("%s", j.err); }
    free(text);
    ember_model *m;
    if (open_model_ex(o, 1, &m)) { free_messages(msgs, n); return 1; }   /* the vocabulary is all it needs */
    ember_chat_params cp = chat_params(o);
    ember_error err;
    size_t need = 0;
    int rc = 1;
    ember_status st = ember_chat_apply(m, &cp, msgs, n, NULL, 0, &need, &err);
    if (st != EMBER_OK && st != EMBER_ERR_BUFFER_TOO_SMALL) {
        if (st == EMBER_ERR_UNSUPPORTED || st == EMBER_ERR_MISSING) die_chat("cannot render the chat", err.message);
        else die("cannot render the chat: %s", err.message);
    } else {
        char *out = malloc(need + 1);
        if (!out) die("out of memory");
        else {
            ember_chat_apply(m, &cp, msgs, n, out, need + 1, NULL, &err);
            fwrite(out, 1, need, stdout);
            rc = 0;
            free(out);
        }
    }
    free_messages(msgs, n);
    ember_model_free(m);
    return rc;
}

/* ---- perplexity ------------------------------------------------------------ */

static int report_progress(void *ud, int chunk, int n_chunks, double ppl) {
    (void)ud;
    fprintf(stderr, "[%d/%d] %.4f\n", chunk, n_chunks, ppl);
    return 0;
}

static int cmd_perplexity(const options *o) {
    if (!o->file && !o->prompt) return die("perplexity needs a text file (-f FILE)");
    ember_model *m;
    ember_context *c;
    char *owned;
    const char *text;
    size_t len;
    if (get_text(o, &owned, &text, &len)) return 1;
    if (open_model(o, &m)) { free(owned); return 1; }
    int n_ctx = o->n_ctx ? o->n_ctx : 512;
    ember_model_info info;
    ember_model_get_info(m, &info, NULL);
    if (n_ctx > info.n_ctx_train) n_ctx = info.n_ctx_train;
    int rc = 1;
    if (open_context(o, m, n_ctx, &c) == 0) {
        ember_perplexity_result r;
        int st = ember_perplexity(c, text, len, report_progress, NULL, &r);
        if (st != EMBER_OK) {
            die("perplexity failed: %s", ember_context_errmsg(c));
        } else {
            printf("chunks %d, context %d, tokens scored %d\n", r.n_chunks, n_ctx, r.n_scored);
            printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_err);
            rc = 0;
        }
        ember_context_free(c);
    }
    free(owned);
    ember_model_free(m);
    return rc;
}

/* ---- tokenize -------------------------------------------------------------- */

static int cmd_tokenize(const options *o) {
    ember_model *m;
    char *owned;
    const char *text;
    size_t len;
    if (get_text(o, &owned, &text, &len)) return 1;
    if (open_model_ex(o, 1, &m)) { free(owned); return 1; }   /* the tokenizer is all it needs */
    int flags = (o->no_bos ? 0 : EMBER_TOKENIZE_ADD_BOS) | (o->special ? EMBER_TOKENIZE_SPECIAL : 0);
    ember_token *toks;
    int n;
    double t0 = now_s();
    int rc = tokenize_all(m, text, len, flags, &toks, &n);
    double dt = now_s() - t0;
    if (!rc && o->verbose)
        fprintf(stderr, "ember: %zu bytes -> %d tokens in %.4f s (%.2f MB/s)\n", len, n, dt, len / (dt > 0 ? dt : 1e-9) / 1e6);
    if (!rc) {
        fputc('[', stdout);
        for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", toks[i]);
        fputs("]\n", stdout);
        free(toks);
    }
    free(owned);
    ember_model_free(m);
    return rc;
}

/* ---- info ------------------------------------------------------------------ */

static int cmd_info(const options *o) {
    ember_model *m;
    options mapped = *o;
    mapped.load_mode = EMBER_LOAD_MMAP;   /* nothing is computed: mapping is instant and reads little */
    if (open_model(&mapped, &m)) return 1;
    ember_model_info i;
    ember_model_get_info(m, &i, NULL);
    int n_ctx = o->n_ctx ? o->n_ctx : i.n_ctx_train;
    printf("model:          %s\n", o->model);
    printf("name:           %s\n", i.name);
    printf("architecture:   %s\n", i.architecture);
    printf("tokenizer:      %s, %d tokens, bos %d, eos %d\n", i.tokenizer, i.n_vocab, ember_token_bos(m), ember_token_eos(m));
    printf("context:        %d (trained)\n", i.n_ctx_train);
    printf("embedding:      %d\n", i.n_embd);
    printf("layers:         %d\n", i.n_layer);
    printf("heads:          %d (kv %d, head dim %d)\n", i.n_head, i.n_head_kv, i.head_dim);
    printf("feed-forward:   %d\n", i.n_ff);
    printf("rope:           dim %d, base %g\n", i.rope_dim, (double)i.rope_freq_base);
    printf("rms eps:        %g\n", (double)i.rms_eps);
    if (i.n_swa)
        printf("sliding window: %d positions on %d of %d layers (their cache keeps window + batch)\n", i.n_swa,
               i.n_swa_layers, i.n_layer);
    printf("output:         %s\n", i.tied_output ? "tied to token_embd" : "separate");
    printf("weight type:    %s\n", ember_type_name(i.file_type) ? ember_type_name(i.file_type) : "?");
    printf("parameters:     %llu\n", (unsigned long long)i.n_params);
    printf("weights:        %.2f MiB (%.2f MiB read per token)\n", i.weight_bytes / 1048576.0, i.bytes_per_token / 1048576.0);
    uint64_t kv16 = ember_context_memory_needed(m, n_ctx, EMBER_KV_F16, o->n_batch);
    printf("context memory: %.2f MiB for %d positions (F16 KV cache and scratch)\n", kv16 / 1048576.0, n_ctx);
    printf("total memory:   %.2f MiB\n", (i.weight_bytes + kv16) / 1048576.0);
    printf("cpu kernels:    %s (best on this CPU: %s)\n", i.kernels, ember_cpu_features());
    ember_model_free(m);
    return 0;
}

/* ---- bench ----------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Memory read bandwidth: threads each xor-sum their share of a buffer much
 * larger than the caches, huge-page backed like the weights ember reads in.
 * A share is read as 1, 4 or 8 interleaved sequential streams, each with
 * and without software prefetch: on some machines one core only reaches its
 * share of the bandwidth with several streams or prefetches in flight, and
 * the bandwidth to compare against is the best that a plain reader gets,
 * not that of one naive loop. */
#if defined(__GNUC__)
typedef unsigned long long bw_vec __attribute__((vector_size(64)));
#else
typedef unsigned long long bw_vec;
#endif

typedef struct bw_job { const unsigned char *p; size_t n; int streams, prefetch; bw_vec sum; } bw_job;

#if defined(__GNUC__)
#define BW_PREFETCH(p) __builtin_prefetch(p)
#else
#define BW_PREFETCH(p) ((void)(p))
#endif

/* The reader is built at each instruction set the CPU has, and every build
 * is measured: which one streams fastest differs between machines (on an
 * EPYC Zen 5 the baseline build was compute-bound at ~11 GB/s where AVX2
 * read 19-20; on a Zen 3 guest the baseline build read 12 GB/s and AVX2 8),
 * and the bandwidth to compare against is the best a plain reader gets. */
#if defined(__GNUC__)
#define BW_INLINE static inline __attribute__((always_inline))
#else
#define BW_INLINE static inline
#endif

BW_INLINE void *bw_read_body(void *arg) {
    bw_job *j = arg;
    const size_t len = j->n / (size_t)j->streams / 64 * 64;
    const size_t ahead = (size_t)4096 / (size_t)j->streams;   /* prefetch distance per stream */
    bw_vec a = {0}, b = {0};
    for (size_t i = 0; i < len; i += 64)
        for (int s = 0; s < j->streams; s += 2) {
            bw_vec x, y = {0};
            const unsigned char *p = j->p + (size_t)s * len + i;
            if (j->prefetch && i + ahead < len) BW_PREFETCH(p + ahead);
            memcpy(&x, p, sizeof x);
            if (s + 1 < j->streams) {
                if (j->prefetch && i + ahead < len) BW_PREFETCH(p + len + ahead);
                memcpy(&y, p + len, sizeof y);
            }
            a ^= x;
            b ^= y;
        }
    j->sum = a ^ b;
    return NULL;
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) static void *bw_read_avx512(void *arg) { return bw_read_body(arg); }
__attribute__((target("avx2"))) static void *bw_read_avx2(void *arg) { return bw_read_body(arg); }
#endif
static void *bw_read_base(void *arg) { return bw_read_body(arg); }

typedef void *(*bw_reader)(void *);
/* The builds of the reader this CPU runs; returns how many. */
static int bw_readers(bw_reader out[3]) {
    int n = 0;
    out[n++] = bw_read_base;
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) out[n++] = bw_read_avx2;
    if (__builtin_cpu_supports("avx512f")) out[n++] = bw_read_avx512;
#endif
    return n;
}

typedef struct bw_probe { unsigned char *buf; size_t bytes; } bw_probe;

static int bw_open(bw_probe *p) {
    p->bytes = (size_t)1 << 30;
    void *m = mmap(NULL, p->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -1;
#ifdef MADV_HUGEPAGE
    madvise(m, p->bytes, MADV_HUGEPAGE);
#endif
    memset(m, 1, p->bytes);
    p->buf = m;
    return 0;
}

#define BW_READERS 18   /* 3 stream counts x prefetch or not x up to 3 builds */

/* One pass of each reader (1, 4, 8 streams; without and with software
 * prefetch, as ember's kernels use it; each build of bw_readers) with n
 * threads: gbs[v] in GB/s (0 for a build this CPU lacks). */
static void bw_measure(const bw_probe *p, int n_threads, double gbs_out[BW_READERS]) {
    static const int streams[] = {1, 4, 8};
    bw_reader builds[3];
    const int n_builds = bw_readers(builds);
    int nt = n_threads > 64 ? 64 : n_threads;
    for (int v = 0; v < BW_READERS; v++) {
        gbs_out[v] = 0;
        if (v / 6 >= n_builds) continue;
        const bw_reader read = builds[v / 6];
        pthread_t th[64];
        bw_job jobs[64];
        size_t share = p->bytes / (size_t)nt / 4096 * 4096;
        double t0 = now_s();
        for (int k = 0; k < nt; k++) {
            jobs[k] = (bw_job){p->buf + share * (size_t)k, share, streams[v % 3], v % 6 / 3, {0}};
            pthread_create(&th[k], NULL, read, &jobs[k]);
        }
        unsigned long long x = 0;
        for (int k = 0; k < nt; k++) {
            pthread_join(th[k], NULL);
            unsigned long long w[sizeof(bw_vec) / 8];
            memcpy(w, &jobs[k].sum, sizeof w);
            x ^= w[0];
        }
        gbs_out[v] = share * (double)nt / (now_s() - t0) / 1e9;
        if (x == 42) fputc(' ', stderr);   /* keep the sums alive */
    }
}

/* The best reader by its median over the repeats (not the luckiest single
 * pass: taking the best of six noisy passes each time would flatter it). */
static double bw_best_median(double *bw, int repeats) {
    double best = 0, col[64];
    int n = repeats > 64 ? 64 : repeats;
    for (int v = 0; v < BW_READERS; v++) {
        for (int r = 0; r < n; r++) col[r] = bw[(size_t)r * BW_READERS + v];
        double m = median(col, n);
        if (m > best) best = m;
    }
    return best;
}

static int cmd_bench(const options *o) {
    ember_model *m;
    ember_context *c;
    if (open_model(o, &m)) return 1;
    ember_model_info info;
    ember_model_get_info(m, &info, NULL);
    int n_pp = o->prompt ? atoi(o->prompt) : o->n_prompt_bench;
    int n_tg = o->n_predict < 0 ? 64 : o->n_predict;
    if (n_pp < 1) n_pp = 1;
    int n_ctx = n_pp + n_tg + 1;
    if (n_ctx > info.n_ctx_train) { ember_model_free(m); return die("-p + -n exceeds the model's context (%d)", info.n_ctx_train); }
    options oo = *o;
    if (!oo.n_batch) oo.n_batch = n_pp < 512 ? n_pp : 512;
    if (open_context(&oo, m, n_ctx, &c)) { ember_model_free(m); return 1; }
    int V = ember_n_vocab(m);
    ember_token *toks = malloc(sizeof *toks * (size_t)(n_pp > n_tg ? n_pp : n_tg));
    for (int i = 0; i < n_pp; i++) toks[i] = (ember_token)((i * 7919 + 13) % V);
    /* --contexts N: N contexts generate together, one pass per token */
    const int n_cx = o->n_contexts > 1 ? o->n_contexts : 1;
    ember_context *cx[64] = {c};
    for (int k = 1; k < n_cx; k++)
        if (open_context(&oo, m, n_ctx, &cx[k])) {
            for (int j = 1; j < k; j++) ember_context_free(cx[j]);
            free(toks); ember_context_free(c); ember_model_free(m);
            return 1;
        }
    double *pp = calloc((size_t)o->repeats, sizeof *pp), *tg = calloc((size_t)o->repeats, sizeof *tg);
    double *bw = calloc((size_t)o->repeats * BW_READERS, sizeof *bw);
    int threads = o->n_threads ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    /* The bandwidth is measured between the repeats, so a machine whose
     * bandwidth drifts (shared hosts) is compared against itself. */
    bw_probe probe = {0};
    int have_bw = bw_open(&probe) == 0;
    int rc = 0;
    /* Warm-up pass: first touches of the weights and caches. */
    ember_eval(c, toks, n_pp < 16 ? n_pp : 16, NULL);
    for (int r = 0; r < o->repeats && !rc; r++) {
        ember_context_set_pos(c, 0);
        double t0 = now_s();
        rc = ember_eval(c, toks, n_pp, NULL);
        pp[r] = n_pp / (now_s() - t0);
        for (int k = 1; k < n_cx && !rc; k++) {   /* the others' prompts, untimed */
            ember_context_set_pos(cx[k], 0);
            rc = ember_eval(cx[k], toks, n_pp, NULL);
        }
        ember_token t[64];
        for (int k = 0; k < n_cx; k++) t[k] = toks[k % n_pp];
        t0 = now_s();
        for (int i = 0; i < n_tg && !rc; i++) {
            rc = n_cx > 1 ? ember_eval_multi(cx, t, n_cx) : ember_eval(c, t, 1, NULL);
            for (int k = 0; k < n_cx; k++) t[k] = (t[k] * 31 + 7 + k) % V;
        }
        tg[r] = n_tg / (now_s() - t0);   /* per context */
        if (have_bw) bw_measure(&probe, threads, bw + (size_t)r * BW_READERS);
    }
    if (have_bw) munmap(probe.buf, probe.bytes);
    if (rc) { die("evaluation failed: %s", ember_context_errmsg(c)); }
    else {
        double pp_m = median(pp, o->repeats), tg_m = median(tg, o->repeats);
        double tg_gbps = tg_m * (double)info.bytes_per_token / 1e9;
        double mem = bw_best_median(bw, o->repeats);
        const char *type = ember_type_name(info.file_type) ? ember_type_name(info.file_type) : "?";
        fprintf(stderr, "model %s (%s, %.1f MiB, %s, %d matrices packed), %d threads, kernels %s\n", o->model, type,
                info.weight_bytes / 1048576.0, info.load_mode == EMBER_LOAD_MMAP ? "mapped" : "read in", info.n_packed,
                threads, info.kernels);
        printf("pp%d: %.2f tok/s   tg%d: %.2f tok/s   (median of %d)\n", n_pp, pp_m, n_tg, tg_m, o->repeats);
        if (n_cx > 1)
            printf("%d contexts in one pass: %.2f tok/s in total, %.2f tok/s each\n", n_cx, tg_m * n_cx, tg_m);
        printf("weights read per token: %.1f MB, %.2f GB/s; ", info.bytes_per_token / 1e6, tg_gbps);
        if (mem > 0) printf("memory read bandwidth %.2f GB/s (%.0f%%)\n", mem, 100 * tg_gbps / mem);
        else printf("memory read bandwidth not measured (no 1 GiB buffer)\n");
        if (o->json) {
            printf("{\"model\": \"");
            for (const char *c = o->model; *c; c++)   /* JSON string escaping */
                printf((unsigned char)*c < 0x20 ? "\\u%04x" : *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
            printf("\", \"load_mode\": \"%s\", \"type\": \"%s\", \"threads\": %d, \"n_prompt\": %d, \"n_gen\": %d, "
                   "\"pp_tok_s\": %.3f, \"tg_tok_s\": %.3f, \"weight_bytes\": %llu, \"tg_gbps\": %.3f, "
                   "\"mem_gbps\": %.3f, \"kernels\": \"%s\", \"n_packed\": %d, \"contexts\": %d, "
                   "\"tg_tok_s_total\": %.3f}\n",
                   info.load_mode == EMBER_LOAD_MMAP ? "mmap" : "read", type, threads, n_pp, n_tg, pp_m, tg_m,
                   (unsigned long long)info.bytes_per_token, tg_gbps, mem, info.kernels, info.n_packed, n_cx,
                   tg_m * n_cx);
        }
    }
    free(pp);
    free(tg);
    free(bw);
    free(toks);
    for (int k = 1; k < n_cx; k++) ember_context_free(cx[k]);
    ember_context_free(c);
    ember_model_free(m);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    options o;
    if (argc < 2) { usage(stderr); return 1; }
    if (parse_args(argc, argv, &o)) return 1;
    if (!strcmp(o.command, "generate")) return cmd_generate(&o);
    if (!strcmp(o.command, "chat")) return cmd_chat(&o);
    if (!strcmp(o.command, "template")) return cmd_template(&o);
    if (!strcmp(o.command, "perplexity")) return cmd_perplexity(&o);
    if (!strcmp(o.command, "tokenize")) return cmd_tokenize(&o);
    if (!strcmp(o.command, "info")) return cmd_info(&o);
    if (!strcmp(o.command, "bench")) return cmd_bench(&o);
    return die("unknown command '%s' (see --help)", o.command);
}
