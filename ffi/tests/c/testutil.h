/* Small helpers shared by the C tests of tidelog (plain C99). */
#ifndef TIDELOG_TESTUTIL_H
#define TIDELOG_TESTUTIL_H

#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tidelog.h"

static inline const char *tu_err(void) {
    const char *e = tidelog_last_error();
    return e ? e : "(none)";
}

#define FAIL(...)                                                   \
    do {                                                            \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);             \
        fprintf(stderr, __VA_ARGS__);                               \
        fprintf(stderr, "\n");                                      \
        exit(1);                                                    \
    } while (0)

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond))                                                                 \
            FAIL("CHECK failed: %s (last error: %s)", #cond, tu_err());              \
    } while (0)

/* Runs a call, requires the given status, and checks the last-error rule:
 * NULL after success, a message after failure. */
#define EXPECT(call, want)                                                           \
    do {                                                                             \
        tidelog_status got_ = (call);                                                \
        if (got_ != (want))                                                          \
            FAIL("%s returned %s, expected %s (last error: %s)", #call,              \
                 tidelog_status_name((int32_t)got_), tidelog_status_name((int32_t)(want)), \
                 tu_err());                                                          \
        if ((want) == TIDELOG_OK && tidelog_last_error() != NULL)                    \
            FAIL("%s succeeded but left a last error: %s", #call, tu_err());         \
        if ((want) != TIDELOG_OK &&                                                  \
            (tidelog_last_error() == NULL || tidelog_last_error()[0] == '\0'))       \
            FAIL("%s failed without a last-error message", #call);                   \
    } while (0)

#define OK(call) EXPECT(call, TIDELOG_OK)

/* Requires that a tidelog string contains a substring. */
#define CONTAINS(s, needle)                                                          \
    do {                                                                             \
        const char *d_ = tidelog_string_data(s);                                     \
        if (d_ == NULL || strstr(d_, (needle)) == NULL)                              \
            FAIL("expected %s in %s", (needle), d_ ? d_ : "(NULL)");                 \
    } while (0)

#define NOT_CONTAINS(s, needle)                                                      \
    do {                                                                             \
        const char *d_ = tidelog_string_data(s);                                     \
        if (d_ == NULL || strstr(d_, (needle)) != NULL)                              \
            FAIL("did not expect %s in %s", (needle), d_ ? d_ : "(NULL)");           \
    } while (0)

static inline void tu_sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static inline double tu_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "<base>/<name>" in a static buffer per call site's copy. */
static inline void tu_path(char *out, size_t n, const char *base, const char *name) {
    int w = snprintf(out, n, "%s/%s", base, name);
    if (w < 0 || (size_t)w >= n)
        FAIL("path too long: %s/%s", base, name);
}

#endif
