/* Wait and run time histograms (core/timing.h). */
#include "core/timing.h"

#include <math.h>

/* The bucket of a value in seconds: 0 below 1 us (and for anything not a
 * positive number), then CT__TIMING_SUB linear buckets per power of two. */
static int bucket_of(double seconds) {
  double us = seconds * 1e6;
  if (!(us >= 1))
    return 0;
  int e;
  double m = frexp(us, &e); /* us = m * 2^e, 0.5 <= m < 1, e >= 1 */
  int b = 1 + (e - 1) * CT__TIMING_SUB + (int)((m - 0.5) * 2 * CT__TIMING_SUB);
  return b < CT__TIMING_BUCKETS ? b : CT__TIMING_BUCKETS - 1;
}

/* The upper edge of bucket b, in seconds. */
static double upper_edge(int b) {
  if (b == 0)
    return 1e-6;
  int e = (b - 1) / CT__TIMING_SUB + 1, sub = (b - 1) % CT__TIMING_SUB;
  return ldexp(0.5 + (sub + 1) / (2.0 * CT__TIMING_SUB), e) * 1e-6;
}

void ct__timing_record(ct__timing_t *tm, double wait, double run) {
  atomic_fetch_add_explicit(&tm->wait.n[bucket_of(wait)], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&tm->run.n[bucket_of(run)], 1, memory_order_relaxed);
}

double ct__histogram_quantile(const ct__histogram_t *h, double q, uint64_t *count) {
  uint64_t n[CT__TIMING_BUCKETS], total = 0;
  for (int b = 0; b < CT__TIMING_BUCKETS; b++)
    total += n[b] = atomic_load_explicit(&h->n[b], memory_order_relaxed);
  *count = total;
  if (total == 0)
    return 0;
  uint64_t want = (uint64_t)ceil(q * (double)total), seen = 0;
  for (int b = 0; b < CT__TIMING_BUCKETS; b++)
    if ((seen += n[b]) >= want)
      return upper_edge(b);
  return upper_edge(CT__TIMING_BUCKETS - 1);
}
