/* The wait and run time histograms behind ct_stats_t's percentiles: a
 * percentile is the upper edge of its bucket, never below the true value
 * and within 25% above it. */
#include "check.h"
#include "core/timing.h"

static double quantile_of(const ct__histogram_t *h, double q) {
  uint64_t n;
  return ct__histogram_quantile(h, q, &n);
}

TEST(quantiles_bound_known_values_from_above_within_a_quarter) {
  static ct__timing_t tm; /* zeroed */
  for (int i = 0; i < 50; i++)
    ct__timing_record(&tm, 0.001, 2.0);
  for (int i = 0; i < 49; i++)
    ct__timing_record(&tm, 0.1, 2.0);
  ct__timing_record(&tm, 1.0, 2.0);
  uint64_t n;
  double p50 = ct__histogram_quantile(&tm.wait, 0.5, &n);
  CHECK_EQ_INT(n, 100);
  CHECK(p50 >= 0.001 && p50 <= 0.00125);
  double p99 = quantile_of(&tm.wait, 0.99);
  CHECK(p99 >= 0.1 && p99 <= 0.125);
  double max = quantile_of(&tm.wait, 1.0);
  CHECK(max >= 1.0 && max <= 1.25);
  double run = quantile_of(&tm.run, 0.5);
  CHECK(run >= 2.0 && run <= 2.5);
}

TEST(empty_tiny_and_huge_values_have_a_bucket) {
  static ct__timing_t tm;
  uint64_t n;
  CHECK(ct__histogram_quantile(&tm.wait, 0.5, &n) == 0 && n == 0);
  ct__timing_record(&tm, 0, -1); /* a clock step: counted, not lost */
  ct__timing_record(&tm, 1e-9, 1e12);
  CHECK(ct__histogram_quantile(&tm.wait, 1.0, &n) <= 1e-6 && n == 2);
  CHECK(quantile_of(&tm.run, 1.0) > 1e6); /* the last bucket holds the rest */
}

int main(void) {
  RUN(quantiles_bound_known_values_from_above_within_a_quarter);
  RUN(empty_tiny_and_huge_values_have_a_bucket);
  return check_done();
}
