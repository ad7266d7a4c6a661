/* chat.c - a minimal multi-turn chat in the model's own chat format.
 *
 *   chat MODEL.gguf [SYSTEM_PROMPT [TEMPLATE]]
 *
 * Each line typed is a user turn; the reply streams back.  ember_chat
 * renders the conversation with the model's template (or the named one,
 * e.g. "chatml" for a model without a template) and keeps the KV cache
 * between turns, so each turn evaluates only its new tokens.  When the
 * context is full, the oldest turn is dropped.  Uses only ember.h. */
#include <stdio.h>
#include <string.h>
#include "ember.h"

static int print_piece(void *user_data, ember_token token, const char *text, size_t len) {
    (void)user_data; (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;   /* 0 = go on */
}

/* Drop the oldest user turn and its reply, keeping a system message. */
static int drop_oldest_turn(ember_chat *chat) {
    int first = ember_chat_n_messages(chat) > 0 && !strcmp(ember_chat_message_at(chat, 0)->role, "system");
    int end = first + 1;
    while (end < ember_chat_n_messages(chat) && strcmp(ember_chat_message_at(chat, end)->role, "user")) end++;
    if (end >= ember_chat_n_messages(chat)) return -1;   /* only the new message is left */
    return ember_chat_erase(chat, first, end - first);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [SYSTEM_PROMPT [TEMPLATE]]\n", argv[0]);
        return 2;
    }
    ember_model *model;
    ember_context *ctx;
    ember_sampler *sampler;
    ember_chat *chat;
    ember_error err;
    if (ember_model_open_file(argv[1], NULL, &model, &err) != EMBER_OK) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], err.message);
        return 1;
    }
    if (ember_context_create(model, NULL, &ctx, &err) != EMBER_OK) {
        fprintf(stderr, "cannot create a context: %s\n", err.message);
        ember_model_free(model);
        return 1;
    }
    if (ember_sampler_create(model, NULL, &sampler, &err) != EMBER_OK) {   /* default sampling */
        fprintf(stderr, "cannot create a sampler: %s\n", err.message);
        ember_context_free(ctx);
        ember_model_free(model);
        return 1;
    }
    ember_chat_params params = ember_chat_default_params();
    params.template_name = argc > 3 ? argv[3] : NULL;   /* NULL: the model's own template */
    if (ember_chat_create(model, ctx, &params, &chat, &err) != EMBER_OK) {
        fprintf(stderr, "cannot chat: %s\n", err.message);
        ember_sampler_free(sampler);
        ember_context_free(ctx);
        ember_model_free(model);
        return 1;
    }
    if (argc > 2 && argv[2][0]) ember_chat_add(chat, "system", argv[2]);

    char line[4096];
    int rc = EMBER_OK;
    while (fputs("> ", stderr), fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) break;
        ember_chat_add(chat, "user", line);
        while ((rc = ember_chat_respond(chat, sampler, 512, print_piece, NULL, NULL)) == EMBER_ERR_CONTEXT_FULL &&
               drop_oldest_turn(chat) == EMBER_OK)
            fprintf(stderr, "[context full: dropped the oldest turn]\n");
        putchar('\n');
        if (rc != EMBER_OK) {
            fprintf(stderr, "error: %s\n", ember_chat_errmsg(chat));
            break;
        }
    }
    ember_chat_free(chat);
    ember_sampler_free(sampler);
    ember_context_free(ctx);
    ember_model_free(model);
    return rc == EMBER_OK ? 0 : 1;
}
