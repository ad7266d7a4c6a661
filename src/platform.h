/* platform.h - what differs between operating systems: reading and mapping
 * a file, memory for weights (huge / large pages where the OS gives them),
 * opening a file in binary mode, the CPU count, a monotonic clock and the
 * local date.  POSIX, or Win32 (MinGW-w64, MSVC).  Paths are UTF-8; on
 * Windows a path that is not valid UTF-8 is taken in the ANSI code page (as
 * main()'s argv arrives).  Knows nothing of GGUF or models. */
#ifndef EMBER_PLATFORM_H
#define EMBER_PLATFORM_H

#include <stdio.h>
#include <time.h>
#include "common.h"

/* A file's bytes held in memory the model owns: a read-only mapping of the
 * file, or fresh memory the file was read into. */
typedef struct ep_region {
    void *data;          /* the file's first byte */
    size_t size;         /* the file's length (> 0) */
    void *base;          /* what to release (data, or the block around it) */
    size_t base_size;
    int kind;            /* EP_MAPPED, EP_READ, EP_READ_LARGE */
} ep_region;

enum { EP_NONE, EP_MAPPED, EP_READ, EP_READ_LARGE };

/* Map path read-only, or read it whole.  Return EMBER_OK, or EMBER_ERR_IO /
 * EMBER_ERR_TRUNCATED (empty file) / EMBER_ERR_NOMEM with msg set (a
 * sentence naming path).  *r is zeroed on failure. */
EMBER_INTERNAL int ep_file_map(const char *path, ep_region *r, char *msg, size_t msg_size);
EMBER_INTERNAL int ep_file_read(const char *path, ep_region *r, char *msg, size_t msg_size);
EMBER_INTERNAL void ep_region_free(ep_region *r);   /* a zeroed region is fine */

/* fopen for mode "rb" or "wb" (always binary: no newline translation). */
EMBER_INTERNAL FILE *ep_fopen(const char *path, const char *mode);

EMBER_INTERNAL int ep_cpu_count(void);              /* online logical CPUs, >= 1 */
EMBER_INTERNAL double ep_seconds(void);             /* monotonic clock, seconds */
EMBER_INTERNAL int ep_localtime(time_t t, struct tm *out);  /* 0 on success */

#endif
