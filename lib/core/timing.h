/* Wait and run times of finished tasks, for the percentiles in ct_stats_t
 * (opt-in: ct_supervisor_opts_t.stats_timing).
 *
 * Two small fixed histograms, one counter per bucket: 4 buckets per power
 * of two of microseconds, from 1 us to 2^40 us (about 12 days), so a value
 * is known within 25% and recording one is two relaxed atomic adds, no
 * lock, no allocation. A percentile is the upper edge of the bucket that
 * holds it: never below the true value. An owner that does not record
 * (timing NULL) costs its tasks one pointer test at finish, no clock read.
 */
#ifndef CT_LIB_TIMING_H
#define CT_LIB_TIMING_H

#include <stdatomic.h>
#include <stdint.h>

#define CT__TIMING_SUB 4
#define CT__TIMING_BUCKETS (1 + 40 * CT__TIMING_SUB)

typedef struct ct__histogram {
  atomic_uint_fast64_t n[CT__TIMING_BUCKETS]; /* A */
} ct__histogram_t;

typedef struct ct__timing {
  ct__histogram_t wait; /* queued (or due, after a delay) to started */
  ct__histogram_t run;  /* started to completed */
} ct__timing_t;

/* Count one task that waited `wait` and ran `run` seconds. Any thread. */
void ct__timing_record(ct__timing_t *tm, double wait, double run);

/* The q-quantile (0 < q <= 1) in seconds of what h counted, and in *count
 * how many it counted; 0 if nothing. Any thread (a snapshot that may miss
 * values recorded meanwhile). */
double ct__histogram_quantile(const ct__histogram_t *h, double q, uint64_t *count);

#endif
