/* sampler.h - a sampler's state as bytes, for saved context states. */
#ifndef EMBER_SAMPLER_H
#define EMBER_SAMPLER_H

#include "common.h"

/* Bytes es_state_write writes: the random state and the repetition
 * history, oldest first. */
EMBER_INTERNAL size_t es_state_bytes(const ember_sampler *s);
EMBER_INTERNAL void es_state_write(const ember_sampler *s, uint8_t *out);
/* Restore from n bytes es_state_write made (any sampler of a model with
 * the same vocabulary; a shorter history keeps the newest tokens).
 * EMBER_ERR_CORRUPT if the bytes cannot be such a state. */
EMBER_INTERNAL int es_state_read(ember_sampler *s, const uint8_t *in, size_t n);

#endif
