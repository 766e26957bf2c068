/* Single-record upserts and point gets through the C ABI. The Rust twin is
 * ffi/examples/bench_rust.rs (same records, same keys, same options);
 * ffi/bench/run.sh runs both and prints the ratio.
 * Usage: bench_c <scratch dir> <records> <gets> */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tidelog.h"

/* CPU time of the calling thread: robust when other processes compete for
 * the cores (the benchmark machine is shared). */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define MUST(call)                                                                     \
    do {                                                                               \
        if ((call) != TIDELOG_OK) {                                                    \
            fprintf(stderr, "%s failed: %s\n", #call, tidelog_last_error());           \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s <scratch dir> <records> <gets>\n", argv[0]);
        return 2;
    }
    long n = atol(argv[2]), gets = atol(argv[3]);
    tidelog_db *db = NULL;
    MUST(tidelog_open(argv[1], "{\"node_name\": \"bench\"}", &db));
    MUST(tidelog_create_table(db, "t", NULL));

    /* The inputs are made before the clock starts, as the Rust twin builds
     * its JSON values before: what is timed is the calls themselves. */
    enum { REC = 96, KEY = 24 };
    char *recs = malloc((size_t)n * REC), *keys = malloc((size_t)gets * KEY);
    if (recs == NULL || keys == NULL)
        return 1;
    for (long i = 0; i < n; i++)
        snprintf(recs + i * REC, REC, "{\"id\": %ld, \"sensor\": \"s-%ld\", \"value\": %.1f}", i,
                 i % 16, (double)i * 0.5);
    for (long i = 0; i < gets; i++)
        snprintf(keys + i * KEY, KEY, "%ld", (i * 7919) % n);

    double t0 = now_s();
    for (long i = 0; i < n; i++)
        MUST(tidelog_upsert(db, "t", recs + i * REC, NULL));
    double t_upsert = now_s() - t0;

    size_t bytes = 0;
    t0 = now_s();
    for (long i = 0; i < gets; i++) {
        tidelog_string *s = NULL;
        MUST(tidelog_get(db, "t", keys + i * KEY, &s));
        bytes += tidelog_string_len(s);
        tidelog_string_free(s);
    }
    double t_get = now_s() - t0;
    free(recs);
    free(keys);
    if (bytes == 0)
        return 1;

    MUST(tidelog_close(db));
    tidelog_db_free(db);
    printf("upsert_per_s=%.0f get_per_s=%.0f\n", (double)n / t_upsert, (double)gets / t_get);
    return 0;
}
