/* The clock of tasks' timestamps (see stamp-clock.h).
 *
 * A tracked task is stamped when it is queued and when it ends (its end
 * also stamps the start of the task its thread takes next), and
 * clock_gettime() was a fifth of such a task's cost: in a loop it takes
 * 26 ns here, but on the hot path its ordered read of the time-stamp
 * counter (TSC) waits for every load before it, cache misses included
 * (the tracked path without those reads ran 25 % faster, measured).
 *
 * So, where the kernel's clock source is the TSC itself (it then keeps
 * the counters of all CPUs in step, and reading it is cheap), each thread
 * keeps its last full read: the counter beside the time. A read within
 * WINDOW of it takes the counter alone, unordered, and adds the ticks
 * since, at the rate measured once between two full reads at least
 * CALIBRATE_AFTER apart. Its error is that of the full read's pair (the
 * counter is read on both sides of the time: at most half of TIGHT_TICKS,
 * mostly a tenth of that), and the rate's over at most WINDOW: a rate off
 * by 500 parts per million (a clock that NTP slews as fast as it may) is
 * 2.5 ns off. A read is never earlier than the thread's previous one.
 * Elsewhere (another clock source, another processor, no /sys) every read
 * is clock_gettime().
 */
#include "base/stamp-clock.h"

#include "base/clock.h"

#if defined(__x86_64__)

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <x86intrin.h>

#define WINDOW 5e-6          /* seconds a thread's full read serves after it */
#define CALIBRATE_AFTER 0.01 /* seconds between the reads that give the rate */
#define TIGHT_TICKS 400      /* the most ticks a full read's pair may span */

static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static bool counter_is_clock; /* written once, under detect_once */
static uint64_t anchor_ticks; /* the first full read, under detect_once */
static double anchor_time;
static _Atomic double seconds_per_tick; /* 0 until calibrated */
static _Atomic uint64_t window_ticks;   /* WINDOW in ticks; 0 until calibrated */

/* The thread's last full read and last value. initial-exec: no
 * __tls_get_addr call per read (see core/slab.c). */
static _Thread_local __attribute__((tls_model("initial-exec"))) struct {
  uint64_t ticks;
  double time, last;
} mine;

/* The counter and the time read together: the counter halfway between
 * two reads of it around the time's, which are 78 ticks apart here, 364
 * at the 99.9th percentile. Tried again when they are more than
 * TIGHT_TICKS apart (the thread was interrupted between them); false if
 * they never were closer: then the pair is no anchor. */
static bool read_both(uint64_t *ticks, double *time) {
  for (int i = 0; i < 3; i++) {
    uint64_t before = __rdtsc();
    *time = ct__now();
    uint64_t spread = __rdtsc() - before;
    *ticks = before + spread / 2;
    if (spread < TIGHT_TICKS)
      return true;
  }
  return false;
}

static void detect(void) {
  char source[32] = "";
  FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
  if (f) {
    if (!fgets(source, sizeof source, f))
      source[0] = '\0';
    fclose(f);
  }
  counter_is_clock =
      strcmp(source, "tsc\n") == 0 && read_both(&anchor_ticks, &anchor_time);
}

static void calibrate(uint64_t ticks, double time) {
  if (atomic_load_explicit(&window_ticks, memory_order_relaxed) != 0 ||
      time - anchor_time < CALIBRATE_AFTER || ticks <= anchor_ticks)
    return;
  double rate = (time - anchor_time) / (double)(ticks - anchor_ticks);
  atomic_store_explicit(&seconds_per_tick, rate, memory_order_relaxed);
  /* Release: a reader that sees the window sees the rate. */
  atomic_store_explicit(&window_ticks, (uint64_t)(WINDOW / rate) + 1, memory_order_release);
}

/* No earlier than the thread's previous value. */
static double not_before_last(double t) {
  if (t < mine.last)
    t = mine.last;
  mine.last = t;
  return t;
}

static double full_read(void) {
  pthread_once(&detect_once, detect);
  if (!counter_is_clock)
    return not_before_last(ct__now());
  if (!read_both(&mine.ticks, &mine.time)) {
    mine.ticks = 0; /* no anchor: the next read is a full one too */
    return not_before_last(mine.time);
  }
  calibrate(mine.ticks, mine.time);
  return not_before_last(mine.time);
}

double ct__stamp_now(void) {
  uint64_t window = atomic_load_explicit(&window_ticks, memory_order_acquire);
  if (window == 0)
    return full_read();
  uint64_t since = __rdtsc() - mine.ticks; /* huge before the thread's first full read */
  if (since >= window)
    return full_read();
  double rate = atomic_load_explicit(&seconds_per_tick, memory_order_relaxed);
  return not_before_last(mine.time + (double)since * rate);
}

#else

double ct__stamp_now(void) { return ct__now(); }

#endif
