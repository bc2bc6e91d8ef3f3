/* Small helpers shared by the benchmarks: a clock, a countdown latch and a
 * gate that holds tasks back (tests/sync.h), submit->start probes, order statistics, the
 * heap in use, the process's CPU time, context switches and resident set,
 * the load average, calibrated busy work and settings read from the
 * environment.
 *
 * Everything is header-only and static: each benchmark is one program.
 */
#ifndef CT_BENCH_H
#define CT_BENCH_H

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "sync.h"

/* Nanoseconds on the monotonic clock. */
static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void bench_sleep_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static inline void bench_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* The countdown latch and the gate are tests/sync.h's (sync_latch_t,
 * sync_gate_t), shared with the tests; benchmarks wait without a bound. */

/* One submit->start measurement: the task stamps its start and raises
 * `done` as its last act. */
typedef struct bench_probe {
  uint64_t started_ns;
  atomic_int done;
} bench_probe_t;

static inline void bench_probe_hit(bench_probe_t *p) {
  p->started_ns = bench_now_ns();
  atomic_store_explicit(&p->done, 1, memory_order_release);
}

static inline void bench_probe_await(bench_probe_t *p) {
  while (!atomic_load_explicit(&p->done, memory_order_acquire))
    bench_cpu_relax();
}

static int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int bench_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v); NAN when n is 0. */
static inline double bench_median(double *v, size_t n) {
  if (n == 0)
    return NAN;
  qsort(v, n, sizeof *v, bench_cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The q-quantile (0 < q <= 1) of sorted[0..n), nearest rank. */
static inline uint64_t bench_quantile(const uint64_t *sorted, size_t n, double q) {
  size_t rank = (size_t)ceil(q * (double)n);
  return sorted[rank == 0 ? 0 : rank - 1];
}

static inline void bench_sort_u64(uint64_t *v, size_t n) {
  qsort(v, n, sizeof *v, bench_cmp_u64);
}

/* What the whole process has used so far: CPU time of every thread (user
 * and system) and context switches, voluntary and not. On a shared machine
 * these per-task costs hold still where wall-clock throughput does not. */
typedef struct bench_usage {
  double cpu_s;
  long csw;
} bench_usage_t;

static inline bench_usage_t bench_usage(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (bench_usage_t){(double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                             (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
                         ru.ru_nvcsw + ru.ru_nivcsw};
}

/* The 1-minute load average, NAN if /proc/loadavg cannot be read. */
static inline double bench_load1(void) {
  double v = NAN;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &v) != 1)
      v = NAN;
    fclose(f);
  }
  return v;
}

/* The process's resident set in bytes (VmRSS), 0 if unknown. */
static inline size_t bench_rss_bytes(void) {
  char line[128];
  size_t kb = 0;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f)
    return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %zu kB", &kb) == 1)
      break;
  fclose(f);
  return kb * 1024;
}

/* Busy work: `iters` steps of a dependent multiply-add that the compiler
 * cannot drop. bench_calibrate_work() says how many steps take one
 * microsecond on this CPU (the fastest of a few tries, so that a
 * preemption during calibration does not shrink every later task). */
static inline void bench_work(long iters) {
  volatile uint64_t x = 1;
  for (long i = 0; i < iters; i++)
    x = x * 6364136223846793005u + 1442695040888963407u;
}

static inline double bench_calibrate_work(void) {
  const long iters = 2000000;
  uint64_t best = UINT64_MAX;
  for (int i = 0; i < 7; i++) {
    uint64_t t0 = bench_now_ns();
    bench_work(iters);
    uint64_t t = bench_now_ns() - t0;
    best = t < best ? t : best;
  }
  return (double)iters * 1e3 / (double)(best ? best : 1);
}

/* A positive integer from the environment, or `fallback`. */
static inline long bench_env_long(const char *name, long fallback) {
  const char *s = getenv(name);
  if (!s || !*s)
    return fallback;
  char *end;
  double v = strtod(s, &end);
  return (*end == '\0' && v >= 1) ? (long)v : fallback;
}

#endif
