/* Monotonic time helpers shared by the library. */
#ifndef CT_LIB_CLOCK_H
#define CT_LIB_CLOCK_H

#include <math.h>
#include <time.h>

static inline double ct__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The absolute CLOCK_MONOTONIC time `seconds` from now, for
 * pthread_cond_timedwait on a condition variable using that clock. */
static inline struct timespec ct__deadline(double seconds) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double whole = floor(seconds);
  ts.tv_sec += (time_t)whole;
  ts.tv_nsec += (long)((seconds - whole) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec += 1;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

#endif
