/* Condition variables whose timed waits take CLOCK_MONOTONIC times (the
 * ct__now() base, as ct__timespec_at() gives them), so that a change of
 * the wall clock moves no deadline. */
#ifndef CT_LIB_COND_H
#define CT_LIB_COND_H

#include <pthread.h>
#include <time.h>

/* Returns 0 or pthread_cond_init()'s error. */
static inline int ct__cond_init_monotonic(pthread_cond_t *c) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(c, &attr);
  pthread_condattr_destroy(&attr);
  return rc;
}

#endif
