/* vocab.h - build the tokenizer from a GGUF file's tokenizer.* metadata. */
#ifndef EMBER_VOCAB_H
#define EMBER_VOCAB_H

#include "common.h"
#include "gguf.h"
#include "tokenizer.h"

/* Build the tokenizer described by f's tokenizer.* keys into *out, and set
 * *max_piece_bytes to the longest text any token decodes to.  Errors name
 * the key at fault (missing, wrong type, unsupported model or pre-tokenizer). */
EMBER_INTERNAL int em_vocab_load(const egf_file *f, const ember_allocator *a, etok **out, int *max_piece_bytes,
                                 char *err, size_t errlen);

#endif
