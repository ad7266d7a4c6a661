/* ember - command-line front end (uses only the public API in ember.h).
 *
 *   ember -m MODEL -p PROMPT -n N [sampling flags]   generate text
 *   ember chat -m MODEL [--system TEXT]              chat on stdin/stdout
 *   ember template -m MODEL -f MESSAGES.json         print a rendered chat prompt
 *   ember perplexity -m MODEL -f TEXT [-c CTX]       llama.cpp-style perplexity
 *   ember tokenize -m MODEL (-p TEXT | -f FILE)      print token ids
 *   ember info -m MODEL                              hyperparameters, memory
 *   ember bench -m MODEL [-p N] [-n N] [-r R]        speed and bandwidth
 *   ember help [COMMAND], ember --version            every flag with its default
 *
 * Generated text goes to stdout; everything else goes to stderr. */
#include "ember.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#include <windows.h>
#include <psapi.h>
/* POSIX getline for the chat loop (the Windows C library has none) */
static ssize_t cli_getline(char **line, size_t *cap, FILE *f) {
    size_t n = 0;
    for (int ch; (ch = fgetc(f)) != EOF;) {
        if (n + 2 > *cap) {
            size_t c = *cap ? *cap * 2 : 256;
            char *p = (char *)realloc(*line, c);
            if (!p) return -1;
            *line = p, *cap = c;
        }
        (*line)[n++] = (char)ch;
        if (ch == '\n') break;
    }
    if (n == 0) return -1;
    (*line)[n] = 0;
    return (ssize_t)n;
}
#define getline cli_getline
#else
#include <sys/mman.h>
#endif

typedef struct options {
    const char *command, *model, *prompt, *file;
    int n_predict, n_ctx, n_batch, n_threads, repeats, n_prompt_bench;
    int echo, no_bos, special, json, kv_f32, load_mode, verbose;
    int ctx_given;                     /* -c was given: 0 then means the model's own */
    int n_contexts;                    /* bench: contexts stepped together */
    const char *kernels;               /* --kernels: NULL = auto */
    const char *state_save, *state_load;
    const char *stops[16];
    int n_stops;
    const char *chat_template, *system;                 /* chat, template */
    int no_think, no_generation_prompt, context_shift;
    ember_sampler_params sp;
    const char *grammar, *grammar_file, *json_schema;   /* constrained output */
} options;

static double now_s(void);

static int die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ember: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* ---- the command line ------------------------------------------------------
 * One table says, for every flag, its names, its value and the range it
 * must lie in, the commands it applies to and its help line: the parser,
 * the checks and --help all read it.  A bad command line is found before
 * anything is loaded and ends with exit status 2 (EXIT_USAGE); a failure
 * while running (a model, a file, generation) with 1. */

#define EXIT_USAGE 2

enum {   /* the commands, as bits of flag_spec.commands */
    CMD_GENERATE = 1, CMD_CHAT = 2, CMD_TEMPLATE = 4, CMD_PERPLEXITY = 8,
    CMD_TOKENIZE = 16, CMD_INFO = 32, CMD_BENCH = 64, CMD_ALL = 127
};

typedef struct command_spec { const char *name; int bit; const char *synopsis, *about; } command_spec;

static const command_spec command_table[] = {
    {"generate", CMD_GENERATE, "-m MODEL [-p PROMPT | -f FILE] [-n N] [flags]", "generate text (the default command)"},
    {"chat", CMD_CHAT, "-m MODEL [--system TEXT] [flags]", "chat in the model's format: stdin lines are user turns; an empty line or EOF ends"},
    {"template", CMD_TEMPLATE, "-m MODEL -f MESSAGES.json [flags]", "print the prompt a conversation ([{\"role\": ..., \"content\": ...}]) renders to"},
    {"perplexity", CMD_PERPLEXITY, "-m MODEL (-f FILE | -p TEXT) [-c N]", "llama.cpp's perplexity; the last line is \"Final estimate: PPL = <v> +/- <err>\""},
    {"tokenize", CMD_TOKENIZE, "-m MODEL (-p TEXT | -f FILE) [flags]", "print the token ids as [1, 2, 3]"},
    {"info", CMD_INFO, "-m MODEL [-c N]", "hyperparameters, types, memory needed; the tokenizer of a vocabulary-only file"},
    {"bench", CMD_BENCH, "-m MODEL [-p N] [-n N] [-r R] [flags]", "prompt and generation speed, memory read bandwidth"},
    {"quantize", 128, "IN.gguf OUT.gguf TYPE [-t N]", "quantize F32/F16/BF16 weights as llama-quantize does (ember quantize --help lists the types)"},
    {"help", 0, "[COMMAND]", "this help, or one command's"},
};
#define N_COMMANDS (int)(sizeof command_table / sizeof command_table[0])

typedef enum flag_id {
    F_MODEL, F_PROMPT, F_FILE, F_N_PREDICT, F_CTX, F_BATCH, F_THREADS, F_TEMP, F_TOP_K, F_TOP_P, F_MIN_P,
    F_REPEAT_PENALTY, F_REPEAT_LAST_N, F_SEED, F_ECHO, F_NO_BOS, F_SPECIAL, F_STOP, F_GRAMMAR, F_GRAMMAR_FILE,
    F_JSON_SCHEMA, F_STATE_SAVE, F_STATE_LOAD, F_TEMPLATE, F_SYSTEM, F_NO_THINK, F_NO_GEN_PROMPT,
    F_CONTEXT_SHIFT, F_MMAP, F_NO_MMAP, F_KERNELS, F_KV_F32, F_REPEATS, F_JSON, F_CONTEXTS, F_VERBOSE, F_HELP, F_VERSION,
    F_COUNT
} flag_id;

typedef enum value_kind { V_NONE, V_TEXT, V_FILE, V_INT, V_FLOAT, V_SEED } value_kind;

#define NO_MAX 1e300   /* flag_spec.hi: no upper bound but the type's */

typedef struct flag_spec {
    flag_id id;
    const char *short_name, *long_name, *metavar;   /* short_name may be NULL */
    value_kind kind;
    double lo, hi;           /* V_INT, V_FLOAT: the allowed range */
    int lo_open, hi_open;    /* 1: the bound itself is outside it */
    const char *special;     /* what special values mean, e.g. "0 = greedy" */
    int commands;            /* CMD_* bits: the commands it applies to */
    const char *help;
    const char *def;         /* the default, for --help (NULL: none or said in help) */
} flag_spec;

#define SAMPLING (CMD_GENERATE | CMD_CHAT)
#define LOADING (CMD_GENERATE | CMD_CHAT | CMD_PERPLEXITY | CMD_BENCH)   /* commands that load weights */

/* A flag whose meaning or default differs between commands has one row per
 * meaning; the parser takes the row for the command at hand. */
static const flag_spec flag_table[] = {
    {F_MODEL, "-m", "--model", "FILE", V_FILE, 0, 0, 0, 0, NULL, CMD_ALL, "the GGUF model file (required)", NULL},
    {F_PROMPT, "-p", "--prompt", "TEXT", V_TEXT, 0, 0, 0, 0, NULL, CMD_GENERATE, "the prompt; none = start from BOS", NULL},
    {F_PROMPT, "-p", "--prompt", "TEXT", V_TEXT, 0, 0, 0, 0, NULL, CMD_PERPLEXITY | CMD_TOKENIZE, "the text", NULL},
    {F_PROMPT, "-p", "--prompt", "N", V_INT, 1, NO_MAX, 0, 0, NULL, CMD_BENCH, "the prompt's length in tokens", "128"},
    {F_FILE, "-f", "--file", "FILE", V_FILE, 0, 0, 0, 0, NULL, CMD_GENERATE | CMD_PERPLEXITY | CMD_TOKENIZE,
     "read the prompt or text from FILE, byte for byte; - = standard input", NULL},
    {F_FILE, "-f", "--file", "FILE", V_FILE, 0, 0, 0, 0, NULL, CMD_TEMPLATE,
     "the messages, a JSON list of {\"role\": ..., \"content\": ...} objects; - = standard input", NULL},
    {F_N_PREDICT, "-n", "--n-predict", "N", V_INT, -1, NO_MAX, 0, 0, "-1 = until the context is full", CMD_GENERATE,
     "tokens to generate, -1 = until the context is full", "128"},
    {F_N_PREDICT, "-n", "--n-predict", "N", V_INT, -1, NO_MAX, 0, 0, "-1 = until the context is full", CMD_CHAT,
     "tokens to generate per reply, -1 = until the context is full", "256"},
    {F_N_PREDICT, "-n", "--n-predict", "N", V_INT, 1, NO_MAX, 0, 0, NULL, CMD_BENCH, "tokens to generate", "64"},
    {F_CTX, "-c", "--ctx-size", "N", V_INT, 0, NO_MAX, 0, 0, "0 = the model's own", CMD_GENERATE | CMD_CHAT,
     "context size in positions, 0 = the model's own", "the model's, at most 4096"},
    {F_CTX, "-c", "--ctx-size", "N", V_INT, 0, NO_MAX, 0, 0, "0 = the model's own", CMD_PERPLEXITY,
     "context size: the tokens in each scored chunk, 0 = the model's own", "512, at most the model's"},
    {F_CTX, "-c", "--ctx-size", "N", V_INT, 0, NO_MAX, 0, 0, "0 = the model's own", CMD_INFO,
     "context size the memory needed is given for, 0 = the model's own", "the model's"},
    {F_BATCH, "-b", "--batch-size", "N", V_INT, 1, NO_MAX, 0, 0, NULL, CMD_GENERATE | CMD_CHAT | CMD_PERPLEXITY | CMD_INFO,
     "prompt tokens evaluated at once", "64"},
    {F_BATCH, "-b", "--batch-size", "N", V_INT, 1, NO_MAX, 0, 0, NULL, CMD_BENCH, "prompt tokens evaluated at once",
     "the prompt's length, at most 512"},
    {F_THREADS, "-t", "--threads", "N", V_INT, 0, 1024, 0, 0, "0 = all cores", LOADING, "threads, 0 = all cores", "all cores"},
    {F_TEMP, NULL, "--temp", "T", V_FLOAT, 0, NO_MAX, 0, 0, "0 = greedy", SAMPLING, "temperature, 0 = greedy (always the likeliest token)", NULL},
    {F_TOP_K, NULL, "--top-k", "K", V_INT, 0, NO_MAX, 0, 0, "0 = off", SAMPLING, "keep the K likeliest tokens, 0 = off", NULL},
    {F_TOP_P, NULL, "--top-p", "P", V_FLOAT, 0, 1, 1, 0, "1 = off", SAMPLING, "keep the likeliest tokens up to probability P, 1 = off", NULL},
    {F_MIN_P, NULL, "--min-p", "P", V_FLOAT, 0, 1, 0, 1, "0 = off", SAMPLING, "drop tokens less likely than P times the likeliest, 0 = off", NULL},
    {F_REPEAT_PENALTY, NULL, "--repeat-penalty", "R", V_FLOAT, 0, NO_MAX, 1, 0, "1 = off", SAMPLING,
     "penalise the logits of recent tokens by R, 1 = off", NULL},
    {F_REPEAT_LAST_N, NULL, "--repeat-last-n", "N", V_INT, 0, 1 << 20, 0, 0, NULL, SAMPLING, "how many recent tokens the penalty looks at", NULL},
    {F_SEED, "-s", "--seed", "S", V_SEED, 0, 0, 0, 0, NULL, SAMPLING, "sampling seed, -1 = random", "random"},
    {F_ECHO, NULL, "--echo", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_GENERATE, "also print the prompt", NULL},
    {F_NO_BOS, NULL, "--no-bos", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_TOKENIZE, "do not add the BOS (or EOS) the model asks for", NULL},
    {F_SPECIAL, NULL, "--special", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_GENERATE | CMD_TOKENIZE,
     "parse special-token text such as <|eot_id|> into its id", NULL},
    {F_STOP, NULL, "--stop", "TEXT", V_TEXT, 0, 0, 0, 0, NULL, CMD_GENERATE, "stop when TEXT appears (repeatable, up to 16)", NULL},
    {F_GRAMMAR, NULL, "--grammar", "TEXT", V_TEXT, 0, 0, 0, 0, NULL, CMD_GENERATE, "constrain the output to a GBNF grammar (start rule: root)", NULL},
    {F_GRAMMAR_FILE, NULL, "--grammar-file", "FILE", V_FILE, 0, 0, 0, 0, NULL, CMD_GENERATE, "the same, read from FILE", NULL},
    {F_JSON_SCHEMA, NULL, "--json-schema", "FILE", V_FILE, 0, 0, 0, 0, NULL, CMD_GENERATE, "constrain the output to JSON matching the schema in FILE", NULL},
    {F_STATE_SAVE, NULL, "--state-save", "FILE", V_FILE, 0, 0, 0, 0, NULL, CMD_GENERATE, "after generating, save the context and sampler to FILE", NULL},
    {F_STATE_LOAD, NULL, "--state-load", "FILE", V_FILE, 0, 0, 0, 0, NULL, CMD_GENERATE,
     "before generating, restore them from FILE; -p is then appended without BOS, and without -p generation goes on", NULL},
    {F_TEMPLATE, NULL, "--template", "NAME", V_TEXT, 0, 0, 0, 0, NULL, CMD_CHAT | CMD_TEMPLATE,
     "chat format instead of the model's tokenizer.chat_template: llama3, chatml, qwen3, ...", NULL},
    {F_SYSTEM, NULL, "--system", "TEXT", V_TEXT, 0, 0, 0, 0, NULL, CMD_CHAT, "a system message", NULL},
    {F_NO_THINK, NULL, "--no-think", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_CHAT | CMD_TEMPLATE, "Qwen3: answer without thinking", NULL},
    {F_NO_GEN_PROMPT, NULL, "--no-generation-prompt", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_TEMPLATE, "do not end with the assistant's header", NULL},
    {F_CONTEXT_SHIFT, NULL, "--context-shift", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_CHAT,
     "when the context is full, drop the oldest turns and go on", "stop with an error"},
    {F_MMAP, NULL, "--mmap", NULL, V_NONE, 0, 0, 0, 0, NULL, LOADING, "map the file instead of reading it into memory", NULL},
    {F_NO_MMAP, NULL, "--no-mmap", NULL, V_NONE, 0, 0, 0, 0, NULL, LOADING, "read the file into (huge-page) memory: the default", NULL},
    {F_KERNELS, NULL, "--kernels", "NAME", V_TEXT, 0, 0, 0, 0, NULL, LOADING | CMD_INFO,
     "kernel set: auto, scalar, avx2, avx512, amx, neon, neon_dotprod (a set this CPU cannot run is an error)", "auto"},
    {F_KV_F32, NULL, "--kv-f32", NULL, V_NONE, 0, 0, 0, 0, NULL, LOADING, "F32 KV cache instead of F16", NULL},
    {F_REPEATS, "-r", "--repeats", "N", V_INT, 1, 1000, 0, 0, NULL, CMD_BENCH, "repetitions; the median is reported", "3"},
    {F_JSON, NULL, "--json", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_BENCH, "also print a JSON object as the last line", NULL},
    {F_CONTEXTS, NULL, "--contexts", "N", V_INT, 1, 64, 0, 0, NULL, CMD_BENCH, "step N contexts together in one pass", "1"},
    {F_VERBOSE, "-v", "--verbose", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_TOKENIZE, "report the encoding speed on stderr", NULL},
    {F_HELP, "-h", "--help", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_ALL, "this help; ember help COMMAND for one command's", NULL},
    {F_VERSION, NULL, "--version", NULL, V_NONE, 0, 0, 0, 0, NULL, CMD_ALL, "print the version and the CPU kernels in use", NULL},
};
#define N_FLAGS (int)(sizeof flag_table / sizeof flag_table[0])

static const command_spec *find_command(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(command_table[i].name, name)) return &command_table[i];
    return NULL;
}

/* The row for the flag name ("-x" or "--long", the first len bytes of
 * name) and a command (CMD_* bit): the command's own row, else any (one
 * that does not apply), else NULL. */
static const flag_spec *find_flag(const char *name, size_t len, int command) {
    const flag_spec *any = NULL;
    for (int i = 0; i < N_FLAGS; i++) {
        const char *s = flag_table[i].short_name, *l = flag_table[i].long_name;
        if ((s && strlen(s) == len && !strncmp(s, name, len)) || (strlen(l) == len && !strncmp(l, name, len))) {
            if (flag_table[i].commands & command) return &flag_table[i];
            if (!any) any = &flag_table[i];
        }
    }
    return any;
}

/* Edit distance with adjacent transpositions ("--tmep" is one edit from
 * "--temp"), for suggesting the flag or command meant. */
static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 40 || lb > 40) return 99;
    int d[41][41];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v) v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[la][lb];
}

/* The long flag (or command) closest to a mistyped one: a unique prefix
 * match ("--ctx" for "--ctx-size"), else one within two edits that are
 * fewer than half its letters; NULL if none is close. */
static const char *closest(const char *typed, const char *const *names, int n) {
    while (*typed == '-') typed++;
    size_t tl = strlen(typed);
    const char *best = NULL, *prefix = NULL;
    int best_d = 3, n_prefix = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        while (*name == '-') name++;
        if (tl >= 2 && !strncmp(name, typed, tl) && (!prefix || strcmp(prefix, names[i]))) { prefix = names[i]; n_prefix++; }
        int d = edit_distance(typed, name);
        if (d < best_d && 2 * d < (int)tl) { best = names[i]; best_d = d; }
    }
    return best ? best : n_prefix == 1 ? prefix : NULL;
}

static int unknown_flag(const char *a) {
    const char *names[N_FLAGS];
    for (int i = 0; i < N_FLAGS; i++) names[i] = flag_table[i].long_name;
    const char *s = closest(a, names, N_FLAGS);
    if (s) return die("unknown flag '%s'; did you mean %s?", a, s);
    return die("unknown flag '%s' (ember --help lists them)", a);
}

static int unknown_command(const char *a) {
    const char *names[N_COMMANDS];
    for (int i = 0; i < N_COMMANDS; i++) names[i] = command_table[i].name;
    const char *s = closest(a, names, N_COMMANDS);
    if (s) return die("unknown command '%s'; did you mean %s?", a, s);
    size_t n = strlen(a);
    if (n > 5 && !strcmp(a + n - 5, ".gguf")) return die("unknown command '%s' (the model is given with -m: ember -m %s ...)", a, a);
    return die("unknown command '%s' (commands: generate, chat, template, perplexity, tokenize, info, bench, help)", a);
}

static void commands_of(int bits, char *out, size_t size) {
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < N_COMMANDS && n < size; i++)
        if (bits & command_table[i].bit) n += (size_t)snprintf(out + n, size - n, "%s%s", n ? ", " : "", command_table[i].name);
}

/* The flag's default for --help: the sampler's come from the library. */
static const char *flag_default(const flag_spec *f, char *buf, size_t size) {
    const ember_sampler_params d = ember_sampler_default_params();
    switch (f->id) {
    case F_TEMP: snprintf(buf, size, "%g", (double)d.temperature); return buf;
    case F_TOP_K: snprintf(buf, size, "%d", d.top_k); return buf;
    case F_TOP_P: snprintf(buf, size, "%g", (double)d.top_p); return buf;
    case F_MIN_P: snprintf(buf, size, "%g", (double)d.min_p); return buf;
    case F_REPEAT_PENALTY: snprintf(buf, size, "%g", (double)d.repeat_penalty); return buf;
    case F_REPEAT_LAST_N: snprintf(buf, size, "%d", d.repeat_last_n); return buf;
    default: return f->def;
    }
}

/* Words of text after column col, wrapped at 100 columns; continued lines
 * start at column indent. */
static void print_wrapped(FILE *out, const char *text, int col, int indent) {
    int space = col > 0;
    while (*text) {
        const char *sp = strchr(text, ' ');
        int w = sp ? (int)(sp - text) : (int)strlen(text);
        if (col + space + w > 100 && col > indent) { fprintf(out, "\n%*s", indent, ""); col = indent; space = 0; }
        if (space) { fputc(' ', out); col++; }
        fprintf(out, "%.*s", w, text);
        col += w;
        space = 1;
        text += w;
        while (*text == ' ') text++;
    }
    fputc('\n', out);
}

/* --help: every command and flag, or (cmd != NULL) one command's. */
static void usage(FILE *out, const command_spec *cmd) {
    if (cmd) {
        fprintf(out, "usage: ember %s %s\n%s\n\nflags:\n", cmd->name, cmd->synopsis, cmd->about);
    } else {
        fprintf(out, "usage: ember [COMMAND] -m MODEL [flags]\n\ncommands:\n");
        for (int i = 0; i < N_COMMANDS; i++)
            fprintf(out, "  %-11s %s\n  %-11s   %s\n", command_table[i].name, command_table[i].synopsis, "", command_table[i].about);
        fprintf(out, "\nflags, with the commands they apply to (ember help COMMAND: one command's flags):\n");
    }
    for (int i = 0; i < N_FLAGS; i++) {
        const flag_spec *f = &flag_table[i];
        if (cmd && cmd->bit && !(f->commands & cmd->bit)) continue;
        char names[64], def[64], text[512], cmds[128] = "";
        snprintf(names, sizeof names, "%s%s%s%s%s", f->short_name ? f->short_name : "", f->short_name ? ", " : "",
                 f->long_name, f->metavar ? " " : "", f->metavar ? f->metavar : "");
        const char *d = flag_default(f, def, sizeof def);
        if (!cmd && f->commands != CMD_ALL) commands_of(f->commands, cmds, sizeof cmds);
        snprintf(text, sizeof text, "%s%s%s%s%s%s%s", f->help, d ? " (default: " : "", d ? d : "", d ? ")" : "",
                 *cmds ? " [" : "", cmds, *cmds ? "]" : "");
        fprintf(out, "  %-24s", names);
        print_wrapped(out, text, 2 + (int)(strlen(names) > 24 ? strlen(names) : 24), 27);
    }
    fprintf(out, "\n");
    print_wrapped(out,
        "Errors: a flag that does not apply to the command, a flag given twice (but --stop), a value out of "
        "range, and flags that conflict: -p with -f, two of --grammar, --grammar-file and --json-schema, --mmap "
        "with --no-mmap, --state-load with -s or a grammar. --long=VALUE works too. Generated text goes to "
        "stdout, everything else to stderr.", 0, 0);
    print_wrapped(out,
        "Exit status: 0 success; 1 a failure while running (model, file, generation); 2 a usage error "
        "(unknown command or flag, missing or bad value, conflicting flags).", 0, 0);
}

static void print_version(void) {
    printf("ember %s\ncpu kernels: %s\n", EMBER_VERSION, ember_cpu_features());
}

/* "must be >= -1 (-1 = until the context is full)": the flag's range in words. */
static void range_text(const flag_spec *f, char *buf, size_t size) {
    const int is_int = f->kind == V_INT;
    const char *fmt = is_int ? "%.0f" : "%g";
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, fmt, f->lo);
    snprintf(hi, sizeof hi, fmt, f->hi);
    size_t n;
    if (f->hi == NO_MAX)
        n = (size_t)snprintf(buf, size, "must be %s %s", f->lo_open ? ">" : ">=", lo);
    else if (is_int && !f->lo_open && !f->hi_open)
        n = (size_t)snprintf(buf, size, "must be between %s and %s", lo, hi);
    else
        n = (size_t)snprintf(buf, size, "must be %s %s and %s %s", f->lo_open ? ">" : ">=", lo, f->hi_open ? "<" : "<=", hi);
    if (f->special && n < size) snprintf(buf + n, size - n, " (%s)", f->special);
}

/* Parse and range-check one value; prints "ember: NAME VALUE: what is wrong". */
static int parse_int_value(const flag_spec *f, const char *name, const char *v, int *out) {
    char *end, why[160];
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || (*v != '-' && *v != '+' && (*v < '0' || *v > '9'))) { die("%s %s: not an integer", name, v); return -1; }
    const int too_large = x > INT_MAX || (errno == ERANGE && x > 0);
    if (too_large && f->hi == NO_MAX) { die("%s %s: too large (at most %d)", name, v, INT_MAX); return -1; }
    if (errno == ERANGE || x < INT_MIN || x < f->lo + f->lo_open || x > f->hi - f->hi_open) {
        range_text(f, why, sizeof why);
        die("%s %s: %s", name, v, why);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_float_value(const flag_spec *f, const char *name, const char *v, float *out) {
    char *end, why[160];
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || isspace((unsigned char)*v)) { die("%s %s: not a number", name, v); return -1; }
    if (!isfinite(x)) { die("%s %s: not a finite number", name, v); return -1; }
    if (fabs(x) > 3e38) { die("%s %s: too large", name, v); return -1; }
    if ((f->lo_open ? !(x > f->lo) : !(x >= f->lo)) || (f->hi != NO_MAX && (f->hi_open ? !(x < f->hi) : !(x <= f->hi)))) {
        range_text(f, why, sizeof why);
        die("%s %s: %s", name, v, why);
        return -1;
    }
    *out = (float)x;
    return 0;
}

/* -1 = random, else any unsigned 64-bit number. */
static int parse_seed_value(const char *name, const char *v, uint64_t *out, int *given) {
    if (!strcmp(v, "-1")) { *given = 0; return 0; }
    char *end;
    errno = 0;
    unsigned long long s = strtoull(v, &end, 10);
    if (errno || *end || end == v || *v < '0' || *v > '9') {
        die("%s %s: must be an integer between 0 and %llu (-1 = random)", name, v, (unsigned long long)UINT64_MAX);
        return -1;
    }
    *out = s;
    *given = 1;
    return 0;
}

/* Where each flag was given (as typed), for "given twice" and conflicts. */
typedef struct seen_flags { const char *as[F_COUNT]; } seen_flags;

/* An error if both flags a and b were given: "--grammar and --json-schema
 * cannot be used together: why". */
static int conflict(const seen_flags *seen, int a, int b, const char *why) {
    if (!seen->as[a] || !seen->as[b]) return 0;
    die("%s and %s cannot be used together%s%s", seen->as[a], seen->as[b], why ? ": " : "", why ? why : "");
    return -1;
}

/* The checks that need the whole command line. */
static int check_options(const options *o, const seen_flags *seen) {
    static const char grammars[] = "give only one of --grammar, --grammar-file, --json-schema";
    if (conflict(seen, F_PROMPT, F_FILE, "both give the text; use one") ||
        conflict(seen, F_GRAMMAR, F_GRAMMAR_FILE, grammars) || conflict(seen, F_GRAMMAR, F_JSON_SCHEMA, grammars) ||
        conflict(seen, F_GRAMMAR_FILE, F_JSON_SCHEMA, grammars) || conflict(seen, F_MMAP, F_NO_MMAP, NULL) ||
        conflict(seen, F_SEED, F_STATE_LOAD, "the saved state holds the sampler's random state") ||
        conflict(seen, F_GRAMMAR, F_STATE_LOAD, "a saved state does not hold the grammar's parse state") ||
        conflict(seen, F_GRAMMAR_FILE, F_STATE_LOAD, "a saved state does not hold the grammar's parse state") ||
        conflict(seen, F_JSON_SCHEMA, F_STATE_LOAD, "a saved state does not hold the grammar's parse state"))
        return -1;
    if (!o->model) { die("no model given (-m MODEL)"); return -1; }
    const char *cmd = o->command;
    if (!strcmp(cmd, "tokenize") && !o->prompt && !o->file) {
        die("tokenize needs the text: -p TEXT or -f FILE (-f - reads standard input)");
        return -1;
    }
    if (!strcmp(cmd, "perplexity") && !o->prompt && !o->file) { die("perplexity needs the text: -f FILE (or -p TEXT)"); return -1; }
    if (!strcmp(cmd, "template") && !o->file) {
        die("template needs the messages: -f MESSAGES.json ([{\"role\": \"user\", \"content\": \"...\"}])");
        return -1;
    }
    return 0;
}

/* Store a parsed value. */
static int set_flag(options *o, const flag_spec *f, const char *name, const char *v, int *seed_given) {
    int *ip = NULL;
    float *fp = NULL;
    switch (f->id) {
    case F_MODEL: o->model = v; break;
    case F_PROMPT:
        if (f->kind == V_INT) ip = &o->n_prompt_bench;   /* bench: a length */
        else o->prompt = v;
        break;
    case F_FILE: o->file = v; break;
    case F_N_PREDICT: ip = &o->n_predict; break;
    case F_CTX: ip = &o->n_ctx; o->ctx_given = 1; break;
    case F_BATCH: ip = &o->n_batch; break;
    case F_THREADS: ip = &o->n_threads; break;
    case F_TEMP: fp = &o->sp.temperature; break;
    case F_TOP_K: ip = &o->sp.top_k; break;
    case F_TOP_P: fp = &o->sp.top_p; break;
    case F_MIN_P: fp = &o->sp.min_p; break;
    case F_REPEAT_PENALTY: fp = &o->sp.repeat_penalty; break;
    case F_REPEAT_LAST_N: ip = &o->sp.repeat_last_n; break;
    case F_SEED: return parse_seed_value(name, v, &o->sp.seed, seed_given);
    case F_ECHO: o->echo = 1; break;
    case F_NO_BOS: o->no_bos = 1; break;
    case F_SPECIAL: o->special = 1; break;
    case F_STOP:
        if (!*v) { die("%s: the text is empty", name); return -1; }
        if (o->n_stops == 16) { die("%s: at most 16 stop strings", name); return -1; }
        o->stops[o->n_stops++] = v;
        break;
    case F_GRAMMAR: o->grammar = v; break;
    case F_GRAMMAR_FILE: o->grammar_file = v; break;
    case F_JSON_SCHEMA: o->json_schema = v; break;
    case F_STATE_SAVE: o->state_save = v; break;
    case F_STATE_LOAD: o->state_load = v; break;
    case F_TEMPLATE: o->chat_template = v; break;
    case F_SYSTEM: o->system = v; break;
    case F_NO_THINK: o->no_think = 1; break;
    case F_NO_GEN_PROMPT: o->no_generation_prompt = 1; break;
    case F_CONTEXT_SHIFT: o->context_shift = 1; break;
    case F_MMAP: o->load_mode = EMBER_LOAD_MMAP; break;
    case F_NO_MMAP: o->load_mode = EMBER_LOAD_READ; break;
    case F_KERNELS: o->kernels = v; break;
    case F_KV_F32: o->kv_f32 = 1; break;
    case F_REPEATS: ip = &o->repeats; break;
    case F_JSON: o->json = 1; break;
    case F_CONTEXTS: ip = &o->n_contexts; break;
    case F_VERBOSE: o->verbose = 1; break;
    case F_HELP: case F_VERSION: case F_COUNT: break;
    }
    if (ip) return parse_int_value(f, name, v, ip);
    if (fp) return parse_float_value(f, name, v, fp);
    return 0;
}

/* A flag's numeric default for a command: its row's def (0 if none). */
static int default_int(flag_id id, int command) {
    for (int i = 0; i < N_FLAGS; i++)
        if (flag_table[i].id == id && (flag_table[i].commands & command) && flag_table[i].def) return atoi(flag_table[i].def);
    return 0;
}

/* -h/--help and --version win over everything else on the line (even over
 * errors in it).  Returns 1 if one was handled. */
static int help_or_version(int argc, char **argv, const command_spec *cmd, int first) {
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout, cmd); return 1; }
        if (!strcmp(a, "--version")) { print_version(); return 1; }
        const flag_spec *f = a[0] == '-' && !strchr(a, '=') ? find_flag(a, strlen(a), cmd ? cmd->bit : CMD_GENERATE) : NULL;
        if (f && f->metavar) i++;   /* a value, even one that looks like a flag */
    }
    return 0;
}

/* 0: run o->command; 1: done (help, version); -1: a usage error (reported). */
static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->command = "generate";
    o->sp = ember_sampler_default_params();
    int i = 1, seed_given = 0;
    const command_spec *cmd = find_command("generate");
    if (argc > 1 && argv[1][0] != '-') {
        cmd = find_command(argv[1]);
        if (!cmd) { unknown_command(argv[1]); return -1; }
        o->command = argv[i++];
        if (!strcmp(o->command, "help")) {
            if (argc > 3) { die("help takes one command name"); return -1; }
            if (argc == 3 && !find_command(argv[2])) { unknown_command(argv[2]); return -1; }
            usage(stdout, argc == 3 ? find_command(argv[2]) : NULL);
            return 1;
        }
    }
    if (help_or_version(argc, argv, i > 1 ? cmd : NULL, i)) return 1;
    o->n_predict = default_int(F_N_PREDICT, cmd->bit);
    o->n_prompt_bench = default_int(F_PROMPT, CMD_BENCH);
    o->repeats = default_int(F_REPEATS, CMD_BENCH);
    o->n_contexts = default_int(F_CONTEXTS, CMD_BENCH);
    seen_flags seen;
    memset(&seen, 0, sizeof seen);
    char name[64];
    for (; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (a[0] != '-' || !a[1]) {
            if (find_command(a)) die("unexpected argument '%s' (the command comes first: ember %s -m MODEL ...)", a, a);
            else die("unexpected argument '%s' (a flag takes one value: quote a prompt with spaces, -p \"...\")", a);
            return -1;
        }
        const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;   /* --long=value */
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), a);
        const flag_spec *f = find_flag(a, len, cmd->bit);
        if (!f) { unknown_flag(name); return -1; }
        if (!(f->commands & cmd->bit)) { die("%s does not apply to %s (see ember help %s)", name, cmd->name, cmd->name); return -1; }
        if (seen.as[f->id] && f->id != F_STOP) { die("%s is given twice", name); return -1; }
        seen.as[f->id] = f->short_name && !strcmp(name, f->short_name) ? f->short_name : f->long_name;
        if (f->metavar) {
            if (eq) v = eq + 1;
            else if (i + 1 < argc) v = argv[++i];
            else { die("%s needs a value: %s %s", name, name, f->metavar); return -1; }
            if (f->kind == V_FILE && !*v) { die("%s: the file name is empty", name); return -1; }
        } else if (eq) {
            die("%s takes no value", name);
            return -1;
        }
        if (set_flag(o, f, seen.as[f->id], v, &seed_given)) return -1;
    }
    if (check_options(o, &seen)) return -1;
    if (!seed_given) o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

/* Read a whole file exactly (NUL bytes and all); "-" is standard input. */
static char *read_file(const char *path, size_t *len) {
    const int is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = (char *)malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *nb = (char *)realloc(buf, cap * 2 + 1);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    if (!is_stdin) fclose(f);
    if (!buf || bad) { free(buf); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* The number of tensors a GGUF v2/v3 file's header declares, or -1 if the
 * header cannot say: a vocabulary-only file (a tokenizer, as converters and
 * llama.cpp's tests write them) declares none. */
static long long gguf_header_tensors(const char *path) {
    unsigned char h[16];
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(h, 1, sizeof h, f);
    fclose(f);
    if (n != sizeof h || memcmp(h, "GGUF", 4) || (h[4] != 2 && h[4] != 3) || h[5] || h[6] || h[7]) return -1;
    unsigned long long count = 0;
    for (int i = 7; i >= 0; i--) count = count << 8 | h[8 + i];
    return count > (1ull << 40) ? -1 : (long long)count;
}

static int open_model_ex(const options *o, int vocab_only, ember_model **m) {
    ember_model_params mp = ember_model_default_params();
    mp.load_mode = (ember_load_mode)o->load_mode;
    mp.kernels = o->kernels;
    mp.vocab_only = vocab_only;
    ember_error err;
    if (ember_model_open_file(o->model, &mp, m, &err) != EMBER_OK) {
        if (!vocab_only && gguf_header_tensors(o->model) == 0)
            return die("cannot load model '%s': it holds a tokenizer and no weights (tokenize, template and info work "
                       "on it; %s needs the weights): %s", o->model, o->command, err.message);
        return die("cannot load model '%s': %s", o->model, err.message);
    }
    return 0;
}

static int open_context(const options *o, ember_model *m, int n_ctx, ember_context **c) {
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = n_ctx;
    if (o->ctx_given) {   /* -c 0: the model's own length */
        ember_model_info info;
        ember_model_get_info(m, &info, NULL);
        if (n_ctx == 0) cp.n_ctx = info.n_ctx_train;
        if (n_ctx > info.n_ctx_train)
            return die("-c %d: must be at most %d, the model's context length (0 = the model's own)", n_ctx, info.n_ctx_train);
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
        *out = (ember_token *)malloc(((size_t)cap + 1) * sizeof **out);
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
            int n_predict = o->n_predict < 0 ? INT_MAX : o->n_predict;   /* -1: until the context is full */
            ember_status st = ember_generate(c, s, toks, n, n_predict, print_token, NULL, &res);
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
    int n_predict = o->n_predict < 0 ? INT_MAX : o->n_predict;
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
    char *s = (char *)malloc(cap);
    for (;;) {
        if (!s) return json_fail(j, "out of memory");
        if (n + 8 > cap) { char *t = (char *)realloc(s, cap *= 2); if (!t) { free(s); return json_fail(j, "out of memory"); } s = t; }
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
            ember_chat_message *t = (ember_chat_message *)realloc(m, sizeof *m * (size_t)(cap = cap ? cap * 2 : 8));
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
        char *out = (char *)malloc(need + 1);
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
    int n_ctx = o->ctx_given ? o->n_ctx : 512;
    ember_model_info info;
    ember_model_get_info(m, &info, NULL);
    if (!o->ctx_given && n_ctx > info.n_ctx_train) n_ctx = info.n_ctx_train;
    int rc = 1;
    if (open_context(o, m, n_ctx, &c) == 0) {
        ember_perplexity_result r;
        int st = ember_perplexity(c, text, len, report_progress, NULL, &r);
        if (st != EMBER_OK) {
            die("perplexity failed: %s", ember_context_errmsg(c));
        } else {
            printf("chunks %d, context %d, tokens scored %d\n", r.n_chunks, ember_context_n_ctx(c), r.n_scored);
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

/* A metadata value as text in a new string ("" if absent); NULL if out of memory. */
static char *meta_dup(const ember_model *m, const char *key) {
    size_t n = 0;
    ember_status st = ember_model_meta(m, key, NULL, 0, &n, NULL);
    char *s = (char *)malloc(n + 1);
    if (!s) return NULL;
    s[0] = 0;
    if (st == EMBER_ERR_BUFFER_TOO_SMALL && ember_model_meta(m, key, s, n + 1, NULL, NULL) != EMBER_OK) s[0] = 0;
    return s;
}

/* A token as "id 'text'" (its bytes, special text included, escaped). */
static void print_token_text(const ember_model *m, ember_token t) {
    char piece[256];
    size_t n = 0;
    if (ember_token_to_piece(m, t, -1, EMBER_TOKENIZE_SPECIAL, piece, sizeof piece, &n, NULL) != EMBER_OK) n = 0;
    printf("%d '", t);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)piece[i];
        if (c == '\n') printf("\\n");
        else if (c == '\t') printf("\\t");
        else if (c == '\'' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('\'');
}

static void print_chat_template(const ember_model *m) {
    char *tpl = meta_dup(m, "tokenizer.chat_template");
    const char *name = tpl && *tpl ? ember_chat_template_detect(tpl) : NULL;
    if (!tpl || !*tpl) printf("chat template:  none (chat and template need --template NAME)\n");
    else if (name) printf("chat template:  %s (recognised in tokenizer.chat_template)\n", name);
    else printf("chat template:  one ember does not recognise (chat and template need --template NAME)\n");
    free(tpl);
}

/* `ember info` on a file with a tokenizer and no weights. */
static int info_vocab_only(const options *o, const ember_model *m) {
    ember_model_info i;
    ember_model_get_info(m, &i, NULL);
    char *kind = meta_dup(m, "tokenizer.ggml.model"), *pre = meta_dup(m, "tokenizer.ggml.pre");
    const int V = ember_n_vocab(m);
    int n_control = 0, n_eog = 0;
    for (ember_token t = 0; t < V; t++) {   /* control tokens: text only when special text is asked for */
        char b[8];
        size_t plain = 0, special = 0;
        ember_token_to_piece(m, t, -1, 0, b, sizeof b, &plain, NULL);
        ember_token_to_piece(m, t, -1, EMBER_TOKENIZE_SPECIAL, b, sizeof b, &special, NULL);
        n_control += plain == 0 && special > 0;
        n_eog += ember_token_is_eog(m, t) != 0;
    }
    printf("model:          %s\n", o->model);
    printf("name:           %s\n", i.name);
    printf("architecture:   %s\n", i.architecture);
    printf("weights:        none: a vocabulary-only file (it tokenizes and renders chats; generation needs a model's weights)\n");
    printf("tokenizer:      %s (%s), pre-tokenizer %s\n", kind && *kind ? kind : i.tokenizer,
           !strcmp(i.tokenizer, "llama") ? "SentencePiece BPE" : "byte-level BPE", pre && *pre ? pre : "default");
    printf("vocabulary:     %d tokens, %d of them control tokens\n", V, n_control);
    ember_token *toks = NULL;
    int n = 0, added = tokenize_all((ember_model *)m, "", 0, EMBER_TOKENIZE_ADD_BOS, &toks, &n) == 0 && n > 0 &&
                           toks[0] == ember_token_bos(m);
    free(toks);
    printf("bos:            ");
    if (ember_token_bos(m) < 0) printf("none");
    else { print_token_text(m, ember_token_bos(m)); printf(", %s", added ? "added before a text" : "not added"); }
    printf("\neos:            ");
    if (ember_token_eos(m) < 0) printf("none");
    else print_token_text(m, ember_token_eos(m));
    printf("\nend of text:    %d token%s:", n_eog, n_eog == 1 ? "" : "s");
    for (ember_token t = 0, shown = 0; t < V && shown < 8; t++)
        if (ember_token_is_eog(m, t)) { printf(shown++ ? ", " : " "); print_token_text(m, t); }
    printf("%s\n", n_eog > 8 ? ", ..." : "");
    static const char *const others[] = {"unknown", "padding", "eot", "eom", "sep", "cls", "mask"};
    for (int k = 0; k < (int)(sizeof others / sizeof others[0]); k++) {
        char key[64];
        snprintf(key, sizeof key, "tokenizer.ggml.%s_token_id", others[k]);
        char *id = meta_dup(m, key), *end = NULL, label[24];
        long t = id && *id ? strtol(id, &end, 10) : -1;
        if (end && !*end && t >= 0 && t < V) {
            snprintf(label, sizeof label, "%s:", others[k]);
            printf("%-16s", label);
            print_token_text(m, (ember_token)t);
            putchar('\n');
        }
        free(id);
    }
    print_chat_template(m);
    free(kind);
    free(pre);
    return 0;
}

static int cmd_info(const options *o) {
    ember_model *m;
    ember_model_params mp = ember_model_default_params();
    mp.load_mode = EMBER_LOAD_MMAP;   /* nothing is computed: mapping is instant and reads little */
    mp.kernels = o->kernels;
    ember_error err;
    if (ember_model_open_file(o->model, &mp, &m, &err) != EMBER_OK) {
        if (gguf_header_tensors(o->model) != 0) return die("cannot load model '%s': %s", o->model, err.message);
        mp.vocab_only = 1;   /* no tensors: a tokenizer to describe */
        if (ember_model_open_file(o->model, &mp, &m, &err) != EMBER_OK)
            return die("cannot load the tokenizer of '%s' (a file without tensors): %s", o->model, err.message);
        int rc = info_vocab_only(o, m);
        ember_model_free(m);
        return rc;
    }
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
    print_chat_template(m);
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
 * not that of one naive loop.
 *
 * The reader must be memory-bound, never compute-bound: eight independent
 * accumulators, vector loads of the widest width each build has, the stream
 * count and the prefetch switch constants in each loop.  It is built at every
 * instruction set the CPU has (16-byte vectors baseline, 32 for AVX2, 64 for
 * AVX-512) and the best build is taken, as the kernels it is compared with
 * run at the best one.  tools/mem_bandwidth.c measures the same readers as a
 * standalone program; docs/benchmarks.md compares both with likwid-bench. */
typedef struct bw_job { const unsigned char *p; size_t n; int streams, prefetch; unsigned long long sum; } bw_job;

#if defined(__GNUC__)
#define BW_PREFETCH(p) __builtin_prefetch(p)
#define BW_INLINE static inline __attribute__((always_inline))
#define BW_TYPEDEF_VEC(name, bytes) typedef unsigned long long name __attribute__((vector_size(bytes)))
#define BW_UNROLL _Pragma("GCC unroll 16")
#else
#define BW_UNROLL
#define BW_PREFETCH(p) ((void)(p))
#define BW_INLINE static inline
#define BW_TYPEDEF_VEC(name, bytes) typedef unsigned long long name
#endif

/* BW_READER(name, attributes, vector bytes) defines `void *name(void *job)`:
 * each step reads 256 bytes (four 64-byte lines) of every stream into eight
 * accumulators; with prefetch, the lines PF ahead in each stream too. */
#define BW_PF_BYTES 4096
#define BW_READER(name, attr, vbytes)                                                                   \
    BW_TYPEDEF_VEC(name##_vec, vbytes);                                                                  \
    attr BW_INLINE void name##_steps(name##_vec acc[8], const unsigned char *p, size_t len, int streams, \
                                     size_t from, size_t to, int pf, size_t ahead) {                     \
        const size_t per_line = 64 / sizeof(name##_vec);                                                 \
        for (size_t i = from; i < to; i += 256)                                                          \
            BW_UNROLL for (int s = 0; s < streams; s++) {                                                \
                const unsigned char *q = p + (size_t)s * len + i;                                        \
                if (pf)                                                                                  \
                    BW_UNROLL for (int l = 0; l < 4; l++) BW_PREFETCH(q + ahead + 64 * l);               \
                BW_UNROLL for (size_t v = 0; v < 4 * per_line; v++) {                                    \
                    name##_vec x;                                                                        \
                    memcpy(&x, q + v * sizeof x, sizeof x);                                              \
                    acc[v % 8] ^= x;                                                                     \
                }                                                                                        \
            }                                                                                            \
    }                                                                                                    \
    attr BW_INLINE void name##_all(name##_vec acc[8], const unsigned char *p, size_t len, int streams,   \
                                   int pf) {                                                             \
        const size_t ahead = BW_PF_BYTES / (size_t)streams / 64 * 64;                                    \
        const size_t stop = pf && len > ahead + 256 ? (len - ahead) / 256 * 256 : 0;                     \
        if (stop) name##_steps(acc, p, len, streams, 0, stop, 1, ahead);                                 \
        name##_steps(acc, p, len, streams, stop, len, 0, 0);                                             \
    }                                                                                                    \
    attr static void *name(void *arg) {                                                                  \
        bw_job *j = (bw_job *)arg;                                                                       \
        const size_t len = j->n / (size_t)j->streams / 256 * 256;                                        \
        name##_vec acc[8];                                                                               \
        memset(acc, 0, sizeof acc);                                                                      \
        /* one call per constant (streams, prefetch), so each loop is unrolled for it */                 \
        switch (j->streams * 2 + (j->prefetch != 0)) {                                                   \
        case 2: name##_all(acc, j->p, len, 1, 0); break;                                                 \
        case 3: name##_all(acc, j->p, len, 1, 1); break;                                                 \
        case 8: name##_all(acc, j->p, len, 4, 0); break;                                                 \
        case 9: name##_all(acc, j->p, len, 4, 1); break;                                                 \
        case 16: name##_all(acc, j->p, len, 8, 0); break;                                                \
        default: name##_all(acc, j->p, len, 8, 1); break;                                                \
        }                                                                                                \
        for (int k = 1; k < 8; k++) acc[0] ^= acc[k];                                                    \
        unsigned long long w[sizeof acc[0] / 8];                                                         \
        memcpy(w, &acc[0], sizeof w);                                                                    \
        j->sum = w[0];                                                                                   \
        return NULL;                                                                                     \
    }

BW_READER(bw_read_base, , 16)
#if defined(__GNUC__) && defined(__x86_64__)
BW_READER(bw_read_avx2, __attribute__((target("avx2"))), 32)
BW_READER(bw_read_avx512, __attribute__((target("avx512f"))), 64)
#endif

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
#ifdef _WIN32
    void *m = malloc(p->bytes);
    if (!m) return -1;
#else
    void *m = mmap(NULL, p->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -1;
#ifdef MADV_HUGEPAGE
    madvise(m, p->bytes, MADV_HUGEPAGE);
#endif
#endif
    memset(m, 1, p->bytes);
    p->buf = (unsigned char *)m;
    return 0;
}

#define BW_READERS 18   /* 3 stream counts x prefetch or not x up to 3 builds */
/* Reader v: build v / 6 of bw_readers, bw_streams[v % 3] streams, prefetch if v % 6 >= 3. */
static const int bw_streams[3] = {1, 4, 8};

/* One pass of each reader (1, 4, 8 streams; without and with software
 * prefetch, as ember's kernels use it; each build of bw_readers) with n
 * threads: gbs[v] in GB/s (0 for a build this CPU lacks). */
static void bw_measure(const bw_probe *p, int n_threads, double gbs_out[BW_READERS]) {
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
            jobs[k] = (bw_job){p->buf + share * (size_t)k, share, bw_streams[v % 3], v % 6 / 3, 0};
            pthread_create(&th[k], NULL, read, &jobs[k]);
        }
        unsigned long long x = 0;
        for (int k = 0; k < nt; k++) {
            pthread_join(th[k], NULL);
            x ^= jobs[k].sum;
        }
        gbs_out[v] = share * (double)nt / (now_s() - t0) / 1e9;
        if (x == 42) fputc(' ', stderr);   /* keep the sums alive */
    }
}

/* The best reader by its median over the repeats (not the luckiest single
 * pass: taking the best of six noisy passes each time would flatter it). */
static double bw_best_median(double *bw, int repeats, int *best_reader) {
    double best = 0, col[64];
    int n = repeats > 64 ? 64 : repeats;
    *best_reader = 0;
    for (int v = 0; v < BW_READERS; v++) {
        for (int r = 0; r < n; r++) col[r] = bw[(size_t)r * BW_READERS + v];
        double m = median(col, n);
        if (m > best) best = m, *best_reader = v;
    }
    return best;
}

/* "avx2 build, 4 streams, prefetch": reader v of bw_measure. */
static void bw_describe(int v, char *buf, size_t size) {
    static const char *const builds[] = {"baseline", "avx2", "avx512"};
    snprintf(buf, size, "%s build, %d stream%s%s", builds[v / 6], bw_streams[v % 3], v % 3 ? "s" : "",
             v % 6 / 3 ? ", prefetch" : "");
}

/* Peak resident memory of this process so far, in bytes (0 where unknown):
 * what loading and running took in RAM (weights, KV caches, scratch, mapped
 * file pages included), the figure /usr/bin/time reports as "maximum
 * resident set size" for any other program. */
static unsigned long long peak_resident_bytes(void) {
#ifdef _WIN32
    PROCESS_MEMORY_COUNTERS pmc;
    if (K32GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc)) return pmc.PeakWorkingSetSize;
    return 0;
#else
    unsigned long long kib = 0;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %llu kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024;
#endif
}

static int cmd_bench(const options *o) {
    ember_model *m;
    ember_context *c;
    if (open_model(o, &m)) return 1;
    ember_model_info info;
    ember_model_get_info(m, &info, NULL);
    int n_pp = o->n_prompt_bench;
    int n_tg = o->n_predict;
    int n_ctx = n_pp + n_tg + 1;
    if (n_ctx > info.n_ctx_train) { ember_model_free(m); return die("-p + -n exceeds the model's context (%d)", info.n_ctx_train); }
    options oo = *o;
    if (!oo.n_batch) oo.n_batch = n_pp < 512 ? n_pp : 512;
    if (open_context(&oo, m, n_ctx, &c)) { ember_model_free(m); return 1; }
    int V = ember_n_vocab(m);
    ember_token *toks = (ember_token *)malloc(sizeof *toks * (size_t)(n_pp > n_tg ? n_pp : n_tg));
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
    double *pp = (double *)calloc((size_t)o->repeats, sizeof *pp), *tg = (double *)calloc((size_t)o->repeats, sizeof *tg);
    double *bw = (double *)calloc((size_t)o->repeats * BW_READERS, sizeof *bw);
#ifdef _WIN32
    const char *ncpu = getenv("NUMBER_OF_PROCESSORS");
    int threads = o->n_threads ? o->n_threads : ncpu && atoi(ncpu) > 0 ? atoi(ncpu) : 1;
#else
    int threads = o->n_threads ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
#endif
    /* The bandwidth is measured between the repeats, so a machine whose
     * bandwidth drifts (shared hosts) is compared against itself; its buffer
     * is made after the first generation, whose resident memory is taken. */
    bw_probe probe = {NULL, 0};
    int have_bw = 0;
    unsigned long long rss = 0;
    int rc = 0;
    /* Warm-up pass over the whole prompt, as llama-bench's: first touches
     * of the weights, the KV cache and the scratch of an n_pp batch, which
     * would otherwise land in the first timed repeat. */
    ember_eval(c, toks, n_pp, NULL);
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
        if (r == 0) {
            rss = peak_resident_bytes();   /* before the probe's buffer */
            have_bw = bw_open(&probe) == 0;
        }
        if (have_bw) bw_measure(&probe, threads, bw + (size_t)r * BW_READERS);
    }
#ifdef _WIN32
    if (have_bw) free(probe.buf);
#else
    if (have_bw) munmap(probe.buf, probe.bytes);
#endif
    if (rc) { die("evaluation failed: %s", ember_context_errmsg(c)); }
    else {
        double pp_m = median(pp, o->repeats), tg_m = median(tg, o->repeats);
        double tg_gbps = tg_m * (double)info.bytes_per_token / 1e9;
        int reader;
        double mem = bw_best_median(bw, o->repeats, &reader);
        char method[64];
        bw_describe(reader, method, sizeof method);
        const char *type = ember_type_name(info.file_type) ? ember_type_name(info.file_type) : "?";
        fprintf(stderr, "model %s (%s, %.1f MiB, %s, %d matrices packed), %d threads, kernels %s\n", o->model, type,
                info.weight_bytes / 1048576.0, info.load_mode == EMBER_LOAD_MMAP ? "mapped" : "read in", info.n_packed,
                threads, info.kernels);
        printf("pp%d: %.2f tok/s   tg%d: %.2f tok/s   (median of %d)\n", n_pp, pp_m, n_tg, tg_m, o->repeats);
        if (n_cx > 1)
            printf("%d contexts in one pass: %.2f tok/s in total, %.2f tok/s each\n", n_cx, tg_m * n_cx, tg_m);
        printf("weights read per token: %.1f MB, %.2f GB/s; ", info.bytes_per_token / 1e6, tg_gbps);
        if (mem > 0)
            printf("memory read bandwidth %.2f GB/s (%.0f%%): xor-sum of a 1 GiB huge-page buffer by %d thread%s, "
                   "best reader by median of %d passes (%s)\n",
                   mem, 100 * tg_gbps / mem, threads, threads == 1 ? "" : "s", o->repeats, method);
        else printf("memory read bandwidth not measured (no 1 GiB buffer)\n");
        if (rss) printf("peak resident memory: %.1f MiB (weights %.1f MiB)\n", rss / 1048576.0,
                        info.weight_bytes / 1048576.0);
        if (o->json) {
            printf("{\"model\": \"");
            for (const char *c = o->model; *c; c++)   /* JSON string escaping */
                printf((unsigned char)*c < 0x20 ? "\\u%04x" : *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
            printf("\", \"load_mode\": \"%s\", \"type\": \"%s\", \"threads\": %d, \"n_prompt\": %d, \"n_gen\": %d, "
                   "\"pp_tok_s\": %.3f, \"tg_tok_s\": %.3f, \"weight_bytes\": %llu, \"tg_gbps\": %.3f, "
                   "\"mem_gbps\": %.3f, \"mem_method\": \"%s\", \"kernels\": \"%s\", \"n_packed\": %d, \"contexts\": %d, "
                   "\"tg_tok_s_total\": %.3f, \"peak_rss_bytes\": %llu}\n",
                   info.load_mode == EMBER_LOAD_MMAP ? "mmap" : "read", type, threads, n_pp, n_tg, pp_m, tg_m,
                   (unsigned long long)info.bytes_per_token, tg_gbps, mem, mem > 0 ? method : "", info.kernels, info.n_packed, n_cx,
                   tg_m * n_cx, rss);
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

/* ember quantize IN.gguf OUT.gguf TYPE [-t N]: its own arguments (no model
 * to open); progress, one line per tensor, on stderr. */
static int quantize_progress(void *user_data, int tensor, int n_tensors, const char *name) {
    (void)user_data;
    fprintf(stderr, "[%4d/%4d] %s\n", tensor + 1, n_tensors, name);
    return 0;
}

static int cmd_quantize(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0;
    ember_quantize_params qp = ember_quantize_default_params();
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: ember quantize IN.gguf OUT.gguf TYPE [-t N]\n"
                   "  IN.gguf holds F32, F16 or BF16 weights; OUT.gguf gets them quantized as llama-quantize\n"
                   "  would (same type per tensor, same bytes, without an importance matrix).\n"
                   "  -t, --threads N   threads (default: all cores)\n"
                   "types:");
            for (int t = 0; ember_quantize_type_name(t); t++) printf(" %s", ember_quantize_type_name(t));
            printf("\n");
            return 0;
        }
        if (!strcmp(argv[i], "-t") || !strcmp(argv[i], "--threads")) {
            if (i + 1 >= argc) return die("%s needs a value", argv[i]), EXIT_USAGE;
            const flag_spec *tf = NULL;   /* -t's spec: the same range and message as elsewhere */
            for (int k = 0; k < N_FLAGS; k++)
                if (!strcmp(flag_table[k].long_name, "--threads")) tf = &flag_table[k];
            if (!tf || parse_int_value(tf, argv[i], argv[i + 1], &qp.n_threads)) return EXIT_USAGE;
            i++;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return die("quantize: unknown option '%s' (see ember quantize --help)", argv[i]), EXIT_USAGE;
        } else if (n_pos == 3) {
            return die("quantize: unexpected argument '%s' (usage: ember quantize IN.gguf OUT.gguf TYPE [-t N])", argv[i]), EXIT_USAGE;
        } else {
            pos[n_pos++] = argv[i];
        }
    }
    if (n_pos != 3) return die("usage: ember quantize IN.gguf OUT.gguf TYPE [-t N] (ember quantize --help lists the types)"), EXIT_USAGE;
    qp.type = pos[2];
    qp.progress = quantize_progress;
    ember_error err;
    double t0 = now_s();
    if (ember_quantize(pos[0], pos[1], &qp, &err) != EMBER_OK) return die("quantize: %s", err.message);
    fprintf(stderr, "ember: wrote %s (%s) in %.2f s\n", pos[1], pos[2], now_s() - t0);
    return 0;
}

int main(int argc, char **argv) {
    options o;
#ifdef _WIN32
    _setmode(_fileno(stdout), _O_BINARY);   /* the same bytes as on POSIX: no "
" */
#endif
    if (argc < 2) { usage(stderr, NULL); return EXIT_USAGE; }
    /* quantize has its own arguments: two files and a type, no model to open */
    if (!strcmp(argv[1], "quantize")) return cmd_quantize(argc - 2, argv + 2);
    if (argc == 3 && !strcmp(argv[1], "help") && !strcmp(argv[2], "quantize")) {
        char help[] = "--help", *hv[] = {help};
        return cmd_quantize(1, hv);
    }
    int parsed = parse_args(argc, argv, &o);
    if (parsed) return parsed > 0 ? 0 : EXIT_USAGE;
    if (!strcmp(o.command, "generate")) return cmd_generate(&o);
    if (!strcmp(o.command, "chat")) return cmd_chat(&o);
    if (!strcmp(o.command, "template")) return cmd_template(&o);
    if (!strcmp(o.command, "perplexity")) return cmd_perplexity(&o);
    if (!strcmp(o.command, "tokenize")) return cmd_tokenize(&o);
    if (!strcmp(o.command, "info")) return cmd_info(&o);
    if (!strcmp(o.command, "bench")) return cmd_bench(&o);
    return die("unknown command '%s' (see --help)", o.command);
}
