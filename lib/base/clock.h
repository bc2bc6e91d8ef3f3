/* Monotonic time helpers shared by the library, and the one place where a
 * caller's "seconds" become a time: every public seconds argument is
 * checked by ct__seconds_valid() and turned into an absolute time only by
 * ct__timespec_at() (directly or through ct__deadline()), which saturate
 * instead of overflowing time_t, so a huge or infinite value means "no
 * bound" everywhere rather than an already-passed deadline. */
#ifndef CT_LIB_CLOCK_H
#define CT_LIB_CLOCK_H

#include <math.h>
#include <stdbool.h>
#include <time.h>

/* Seconds from which a span has no bound: over 30 years, beyond any
 * process's life, and far inside time_t, so deadlines up to here are exact
 * and later ones are clamped to here. */
#define CT__SECONDS_FOREVER 1e9

static inline double ct__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* What a seconds argument is, for ct__seconds_valid(). */
enum ct__seconds_kind {
  CT__SEC_SIGNED, /* any number: negative has a documented meaning (a
                    * timeout's "no bound", a start option's "keep") */
  CT__SEC_LIMIT,   /* an option bounding something: >= 0; huge or INFINITY
                    * mean "no bound" (0 keeps its documented meaning) */
  CT__SEC_DELAY,   /* when something happens (delays, intervals): finite,
                    * >= 0; a huge value waits beyond any process's life */
};

/* Whether a caller's seconds argument is acceptable. NaN never is. */
static inline bool ct__seconds_valid(double s, enum ct__seconds_kind kind) {
  switch (kind) {
  case CT__SEC_SIGNED:
    return !isnan(s);
  case CT__SEC_LIMIT:
    return s >= 0;
  case CT__SEC_DELAY:
    return s >= 0 && isfinite(s);
  }
  return false;
}

/* Whether a timeout (already valid) has no bound: negative, INFINITY, or
 * CT__SECONDS_FOREVER and beyond. */
static inline bool ct__seconds_forever(double s) {
  return s < 0 || s >= CT__SECONDS_FOREVER;
}

/* `t` seconds on CLOCK_MONOTONIC (the ct__now() base) as a timespec, for
 * timerfds and timed waits; clamped to [0, now + CT__SECONDS_FOREVER]. */
static inline struct timespec ct__timespec_at(double t) {
  double limit = ct__now() + CT__SECONDS_FOREVER;
  t = t > limit ? limit : t > 0 ? t : 0; /* never NaN here: callers validate */
  double whole = floor(t);
  struct timespec ts = {(time_t)whole, (long)((t - whole) * 1e9)};
  return ts;
}

/* The absolute CLOCK_MONOTONIC time `seconds` from now (negative: now),
 * for pthread_cond_timedwait on a condition variable using that clock.
 * Saturates at CT__SECONDS_FOREVER from now. */
static inline struct timespec ct__deadline(double seconds) {
  if (!(seconds > 0))
    seconds = 0;
  if (seconds > CT__SECONDS_FOREVER)
    seconds = CT__SECONDS_FOREVER;
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

/* A timeout argument (already valid) as a deadline: true and *out, or false
 * when it has no bound (ct__seconds_forever) and the caller waits without. */
static inline bool ct__timeout_deadline(double timeout, struct timespec *out) {
  if (ct__seconds_forever(timeout))
    return false;
  *out = ct__deadline(timeout);
  return true;
}

#endif
