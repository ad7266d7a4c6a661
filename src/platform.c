/* platform.c - files, memory regions, CPU count and clock on POSIX and
 * Win32.  Each function has one POSIX and one Win32 body; what they share
 * (messages, the huge-page rounding) is written once above them. */
#if defined(_WIN32) && !defined(WIN32_LEAN_AND_MEAN)
#define WIN32_LEAN_AND_MEAN
#endif
#if defined(_WIN32) && !defined(NOMINMAX)
#define NOMINMAX
#endif
#include "platform.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#ifdef _MSC_VER
#pragma comment(lib, "advapi32.lib")   /* the token calls that enable large pages */
#endif
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#ifndef O_BINARY
#define O_BINARY 0       /* POSIX files have no text mode */
#endif
#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

/* Reads go in pieces of at most 1 GB (Win32's ReadFile takes a 32-bit
 * count; some POSIX systems cap read() near 2 GB). */
#define EP_READ_CHUNK ((size_t)1 << 30)

static int ep_fail(int code, char *msg, size_t msg_size, const char *what, const char *path, const char *why) {
    if (msg && msg_size) {
        if (why) snprintf(msg, msg_size, "%s '%s': %s", what, path, why);
        else snprintf(msg, msg_size, "'%s' %s", path, what);
    }
    return code;
}

/* A file of n bytes as a region size: not empty, and small enough to map
 * and index with size_t arithmetic. */
static int ep_check_size(unsigned long long n, const char *path, size_t *size, char *msg, size_t msg_size) {
    if (n == 0) {
        if (msg && msg_size) snprintf(msg, msg_size, "file is empty");
        return EMBER_ERR_TRUNCATED;
    }
    if (n > (unsigned long long)(SIZE_MAX / 2))
        return ep_fail(EMBER_ERR_NOMEM, msg, msg_size, "cannot map", path, "file too large");
    *size = (size_t)n;
    return EMBER_OK;
}

/* size rounded up to a whole number of page_size pages (a power of two) */
static size_t ep_round_up(size_t size, size_t page_size) {
    return (size + page_size - 1) & ~(page_size - 1);
}

#ifdef _WIN32
/* ---- Win32 ------------------------------------------------------------------ */

/* path as UTF-16 (caller frees), or NULL if it is not valid UTF-8 */
static wchar_t *ep_wide(const char *s) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) return NULL;
    wchar_t *w = (wchar_t *)malloc((size_t)n * sizeof *w);
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n) { free(w); w = NULL; }
    return w;
}

/* The system's sentence for GetLastError(), without its line break. */
static const char *ep_last_error(char *buf, size_t size) {
    DWORD e = GetLastError();
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, e, 0, buf,
                             (DWORD)size, NULL);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '.')) n--;
    if (n == 0) snprintf(buf, size, "Windows error %lu", (unsigned long)e);
    else buf[n] = 0;
    return buf;
}

/* Open an existing regular, non-empty file for reading (flags: how it will
 * be read); *size its length.  Others may read, write or delete it
 * meanwhile, as on POSIX. */
static int ep_open(const char *path, DWORD flags, HANDLE *h, size_t *size, char *msg, size_t msg_size) {
    char why[160];
    wchar_t *w = ep_wide(path);
    const DWORD share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
    *h = w ? CreateFileW(w, GENERIC_READ, share, NULL, OPEN_EXISTING, flags, NULL)
           : CreateFileA(path, GENERIC_READ, share, NULL, OPEN_EXISTING, flags, NULL);
    free(w);
    if (*h == INVALID_HANDLE_VALUE)
        return ep_fail(EMBER_ERR_IO, msg, msg_size, "cannot open", path, ep_last_error(why, sizeof why));
    LARGE_INTEGER n;
    if (GetFileType(*h) != FILE_TYPE_DISK || !GetFileSizeEx(*h, &n)) {
        CloseHandle(*h);
        return ep_fail(EMBER_ERR_IO, msg, msg_size, "is not a regular file", path, NULL);
    }
    int rc = ep_check_size((unsigned long long)n.QuadPart, path, size, msg, msg_size);
    if (rc != EMBER_OK) CloseHandle(*h);
    return rc;
}

int ep_file_map(const char *path, ep_region *r, char *msg, size_t msg_size) {
    char why[160];
    HANDLE h;
    size_t size;
    memset(r, 0, sizeof *r);
    int rc = ep_open(path, FILE_ATTRIBUTE_NORMAL, &h, &size, msg, msg_size);
    if (rc != EMBER_OK) return rc;
    HANDLE m = CreateFileMappingW(h, NULL, PAGE_READONLY, 0, 0, NULL);
    void *p = m ? MapViewOfFile(m, FILE_MAP_READ, 0, 0, 0) : NULL;
    if (!p) ep_last_error(why, sizeof why);
    /* the view keeps the mapping and the file open */
    if (m) CloseHandle(m);
    CloseHandle(h);
    if (!p) return ep_fail(EMBER_ERR_IO, msg, msg_size, "cannot map", path, why);
    r->data = r->base = p;
    r->size = r->base_size = size;
    r->kind = EP_MAPPED;
    return EMBER_OK;
}

/* Large pages need SeLockMemoryPrivilege, which an administrator grants to
 * a user ("Lock pages in memory") and the process must then enable; most
 * processes do not hold it, and then plain pages are used.  Asked once. */
static int ep_large_pages_allowed(void) {
    static volatile LONG state;      /* 0 not asked yet, 1 allowed, 2 not */
    if (state == 0) {
        HANDLE tok;
        int ok = 0;
        if (OpenProcessToken(GetCurrentProcess(), TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY, &tok)) {
            TOKEN_PRIVILEGES tp;
            tp.PrivilegeCount = 1;
            tp.Privileges[0].Attributes = SE_PRIVILEGE_ENABLED;
            /* AdjustTokenPrivileges succeeds with ERROR_NOT_ALL_ASSIGNED when
             * the privilege is not held */
            ok = LookupPrivilegeValueW(NULL, L"SeLockMemoryPrivilege", &tp.Privileges[0].Luid) &&
                 AdjustTokenPrivileges(tok, FALSE, &tp, 0, NULL, NULL) && GetLastError() == ERROR_SUCCESS;
            CloseHandle(tok);
        }
        InterlockedExchange(&state, ok ? 1 : 2);
    }
    return state == 1;
}

int ep_file_read(const char *path, ep_region *r, char *msg, size_t msg_size) {
    char why[160];
    HANDLE h;
    size_t size;
    memset(r, 0, sizeof *r);
    int rc = ep_open(path, FILE_FLAG_SEQUENTIAL_SCAN, &h, &size, msg, msg_size);
    if (rc != EMBER_OK) return rc;
    size_t large = GetLargePageMinimum();
    void *p = NULL;
    if (large && size >= large && ep_large_pages_allowed()) {
        r->base_size = ep_round_up(size, large);
        p = VirtualAlloc(NULL, r->base_size, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE);
        r->kind = EP_READ_LARGE;
    }
    if (!p) {
        r->base_size = size;
        p = VirtualAlloc(NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        r->kind = EP_READ;
    }
    if (!p) {
        CloseHandle(h);
        memset(r, 0, sizeof *r);
        if (msg && msg_size) snprintf(msg, msg_size, "cannot allocate memory for the weights");
        return EMBER_ERR_NOMEM;
    }
    r->data = r->base = p;
    r->size = size;
    for (size_t done = 0; done < size;) {
        DWORD want = (DWORD)(size - done > EP_READ_CHUNK ? EP_READ_CHUNK : size - done), got = 0;
        BOOL ok = ReadFile(h, (char *)p + done, want, &got, NULL);
        if (!ok || got == 0) {
            if (ok) snprintf(why, sizeof why, "unexpected end");
            else ep_last_error(why, sizeof why);
            CloseHandle(h);
            ep_region_free(r);
            return ep_fail(EMBER_ERR_IO, msg, msg_size, "cannot read", path, why);
        }
        done += got;
    }
    CloseHandle(h);
    return EMBER_OK;
}

void ep_region_free(ep_region *r) {
    if (!r->base) return;
    if (r->kind == EP_MAPPED) UnmapViewOfFile(r->base);
    else VirtualFree(r->base, 0, MEM_RELEASE);
    memset(r, 0, sizeof *r);
}

FILE *ep_fopen(const char *path, const char *mode) {
    wchar_t *w = ep_wide(path), wmode[4] = {0};
    FILE *f;
    if (!w) return fopen(path, mode);
    for (int i = 0; i < 3 && mode[i]; i++) wmode[i] = (wchar_t)mode[i];
    f = _wfopen(w, wmode);
    free(w);
    return f;
}

int ep_cpu_count(void) {
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return si.dwNumberOfProcessors < 1 ? 1 : (int)si.dwNumberOfProcessors;
}

double ep_seconds(void) {
    static LARGE_INTEGER freq;       /* fixed at boot; racing writers agree */
    LARGE_INTEGER t;
    if (!freq.QuadPart) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart / (double)freq.QuadPart;
}

int ep_localtime(time_t t, struct tm *out) {
    return localtime_s(out, &t) == 0 ? 0 : -1;
}

#else
/* ---- POSIX -------------------------------------------------------------------- */

/* Open an existing regular, non-empty file for reading; *size its length. */
static int ep_open(const char *path, int *fd, size_t *size, char *msg, size_t msg_size) {
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_BINARY);
    if (*fd < 0) return ep_fail(EMBER_ERR_IO, msg, msg_size, "cannot open", path, strerror(errno));
    struct stat st;
    if (fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(*fd);
        return ep_fail(EMBER_ERR_IO, msg, msg_size, "is not a regular file", path, NULL);
    }
    int rc = ep_check_size((unsigned long long)st.st_size, path, size, msg, msg_size);
    if (rc != EMBER_OK) close(*fd);
    return rc;
}

int ep_file_map(const char *path, ep_region *r, char *msg, size_t msg_size) {
    int fd;
    size_t size;
    memset(r, 0, sizeof *r);
    int rc = ep_open(path, &fd, &size, msg, msg_size);
    if (rc != EMBER_OK) return rc;
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return ep_fail(EMBER_ERR_IO, msg, msg_size, "cannot map", path, strerror(e));
    r->data = r->base = p;
    r->size = r->base_size = size;
    r->kind = EP_MAPPED;
    return EMBER_OK;
}

/* Anonymous memory for a read-in file: 2 MB aligned so the kernel can back
 * it with transparent huge pages, which stream faster than 4 KB pages. */
static void *ep_alloc_huge(size_t size, size_t *region_size) {
    const size_t huge = (size_t)2 << 20;
    size_t n = ep_round_up(size, huge) + huge;
    char *p = (char *)mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    char *aligned = (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
    if (aligned > p) munmap(p, (size_t)(aligned - p));
    size_t tail = (size_t)((p + n) - (aligned + (n - huge)));
    if (tail) munmap(aligned + (n - huge), tail);
    *region_size = n - huge;
#ifdef MADV_HUGEPAGE
    madvise(aligned, *region_size, MADV_HUGEPAGE);
#endif
    return aligned;
}

int ep_file_read(const char *path, ep_region *r, char *msg, size_t msg_size) {
    int fd;
    size_t size;
    memset(r, 0, sizeof *r);
    int rc = ep_open(path, &fd, &size, msg, msg_size);
    if (rc != EMBER_OK) return rc;
    void *p = ep_alloc_huge(size, &r->base_size);
    if (!p) {
        close(fd);
        r->base_size = 0;
        if (msg && msg_size) snprintf(msg, msg_size, "cannot allocate memory for the weights");
        return EMBER_ERR_NOMEM;
    }
    r->data = r->base = p;
    r->size = size;
    r->kind = EP_READ;
    for (size_t done = 0; done < size;) {
        ssize_t got = read(fd, (char *)p + done, size - done > EP_READ_CHUNK ? EP_READ_CHUNK : size - done);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            const char *why = got < 0 ? strerror(errno) : "unexpected end";
            ep_fail(EMBER_ERR_IO, msg, msg_size, "cannot read", path, why);
            close(fd);
            ep_region_free(r);
            return EMBER_ERR_IO;
        }
        done += (size_t)got;
    }
    close(fd);
    return EMBER_OK;
}

void ep_region_free(ep_region *r) {
    if (r->base) munmap(r->base, r->base_size);
    memset(r, 0, sizeof *r);
}

FILE *ep_fopen(const char *path, const char *mode) { return fopen(path, mode); }

int ep_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 65536 ? 65536 : (int)n;
}

double ep_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int ep_localtime(time_t t, struct tm *out) { return localtime_r(&t, out) ? 0 : -1; }
#endif
