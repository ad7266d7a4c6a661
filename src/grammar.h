/* grammar.h - GBNF grammars: the compiled form and the per-sampler matcher
 * that says which tokens may come next.  Sits below the sampler: it sees a
 * vocabulary only as token texts and end-of-generation flags. */
#ifndef EMBER_GRAMMAR_H
#define EMBER_GRAMMAR_H

#include "common.h"

/* A grammar's parse position for one sampler, plus what it precomputed
 * about the vocabulary (each token's bytes and a byte trie of them). */
typedef struct eg_matcher eg_matcher;

/* Build the vocabulary side for model (token texts as they appear in the
 * middle of a text, the end-of-generation tokens, the trie) and start at
 * grammar g.  The grammar must outlive the matcher. */
EMBER_INTERNAL int eg_matcher_create(const ember_grammar *g, const ember_model *model, const ember_allocator *a,
                                     eg_matcher **out);
EMBER_INTERNAL void eg_matcher_free(eg_matcher *m);
/* Use grammar g from its start (the vocabulary side is kept). */
EMBER_INTERNAL void eg_matcher_set_grammar(eg_matcher *m, const ember_grammar *g);
EMBER_INTERNAL void eg_matcher_reset(eg_matcher *m);
/* 1 if token may come next, 0 if not. */
EMBER_INTERNAL int eg_matcher_allows(eg_matcher *m, int32_t token);
/* allowed[t] = 1 for every token that may come next, else 0.  Returns the
 * number allowed, or a negative status (the grammar blew its work budget). */
EMBER_INTERNAL int eg_matcher_mask(eg_matcher *m, uint8_t *allowed);
/* eg_matcher_mask, but giving up (EG_MASK_UNFINISHED, allowed undefined)
 * after visiting max_nodes nodes of the trie: cheap positions are masked
 * at once, the caller has something cheaper to try for the others. */
#define EG_MASK_UNFINISHED (-1000)
EMBER_INTERNAL int eg_matcher_mask_within(eg_matcher *m, uint8_t *allowed, long max_nodes);
/* Advance over token (an end-of-generation token ends the text).  A token
 * the grammar does not allow leaves the matcher dead: nothing is allowed
 * until a reset. */
EMBER_INTERNAL void eg_matcher_accept(eg_matcher *m, int32_t token);
/* 1 when the text so far is complete and nothing may follow it: only an
 * end-of-generation token may come next. */
EMBER_INTERNAL int eg_matcher_complete(const eg_matcher *m);
/* An end-of-generation token of the vocabulary (the best by logits among
 * them if logits is given), or -1 if there is none. */
EMBER_INTERNAL int32_t eg_matcher_eog(const eg_matcher *m, const float *logits);

#endif
