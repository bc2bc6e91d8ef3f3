/* A gate and a countdown latch, shared by the tests (through gate.h) and
 * the benchmarks (through bench.h), so that both hold and count tasks the
 * same way.
 *
 * sync_gate_t: callers of sync_gate_pass() count themselves as arrived and
 * block until sync_gate_open(); sync_gate_wait_arrived() waits for n of
 * them. A pool saturated by gate tasks holds still until it opens.
 *
 * sync_latch_t: each task counts once; a waiter sleeps until `target`
 * counts have arrived. A count costs one atomic add; only the last takes
 * the lock, to wake the waiter (the benchmarks count every task with it).
 *
 * Waits take a bound in seconds (negative: none) and return false when it
 * passed: the tests turn that into a failure with a message, never a hang.
 */
#ifndef CT_TESTS_SYNC_H
#define CT_TESTS_SYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

/* `seconds` from now on CLOCK_REALTIME, the default clock of a condition
 * variable. */
static inline struct timespec sync_deadline(double seconds) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)seconds;
  return ts;
}

/* Wait on c/m (m held) until `cond_expr` holds; `ok` becomes false if
 * `bound` seconds (negative: no bound) pass first. */
#define SYNC_WAIT_UNTIL(c, m, cond_expr, bound, ok)                            \
  do {                                                                         \
    struct timespec dl_ = sync_deadline((bound) < 0 ? 0 : (bound));            \
    (ok) = true;                                                               \
    while (!(cond_expr)) {                                                     \
      if ((bound) < 0)                                                         \
        pthread_cond_wait((c), (m));                                           \
      else if (pthread_cond_timedwait((c), (m), &dl_) != 0 && !(cond_expr)) {  \
        (ok) = false;                                                          \
        break;                                                                 \
      }                                                                        \
    }                                                                          \
  } while (0)

typedef struct {
  pthread_mutex_t m;
  pthread_cond_t c;
  bool open;
  int arrived;
} sync_gate_t;

static inline void sync_gate_init(sync_gate_t *g) {
  pthread_mutex_init(&g->m, NULL);
  pthread_cond_init(&g->c, NULL);
  g->open = false;
  g->arrived = 0;
}

static inline void sync_gate_destroy(sync_gate_t *g) {
  pthread_mutex_destroy(&g->m);
  pthread_cond_destroy(&g->c);
}

static inline void sync_gate_open(sync_gate_t *g) {
  pthread_mutex_lock(&g->m);
  g->open = true;
  pthread_cond_broadcast(&g->c);
  pthread_mutex_unlock(&g->m);
}

/* Count this caller as arrived, then block until the gate is open. */
static inline bool sync_gate_pass(sync_gate_t *g, double bound) {
  bool ok;
  pthread_mutex_lock(&g->m);
  g->arrived++;
  pthread_cond_broadcast(&g->c);
  SYNC_WAIT_UNTIL(&g->c, &g->m, g->open, bound, ok);
  pthread_mutex_unlock(&g->m);
  return ok;
}

static inline bool sync_gate_wait_arrived(sync_gate_t *g, int n, double bound) {
  bool ok;
  pthread_mutex_lock(&g->m);
  SYNC_WAIT_UNTIL(&g->c, &g->m, g->arrived >= n, bound, ok);
  pthread_mutex_unlock(&g->m);
  return ok;
}

static inline int sync_gate_arrived(sync_gate_t *g) {
  pthread_mutex_lock(&g->m);
  int n = g->arrived;
  pthread_mutex_unlock(&g->m);
  return n;
}

typedef struct {
  atomic_long count;
  long target;
  bool reached; /* set under the lock by the last count */
  pthread_mutex_t lock;
  pthread_cond_t cond;
} sync_latch_t;

static inline void sync_latch_init(sync_latch_t *l, long target) {
  atomic_init(&l->count, 0);
  l->target = target;
  l->reached = target <= 0;
  pthread_mutex_init(&l->lock, NULL);
  pthread_cond_init(&l->cond, NULL);
}

static inline void sync_latch_destroy(sync_latch_t *l) {
  pthread_mutex_destroy(&l->lock);
  pthread_cond_destroy(&l->cond);
}

/* The latch may be destroyed as soon as the waiter returns, so a count
 * touches it only before its add, and the last one only until it unlocks:
 * the waiter returns once it has seen `reached`, which that count sets
 * under the lock. */
static inline void sync_latch_count(sync_latch_t *l) {
  long target = l->target;
  if (atomic_fetch_add_explicit(&l->count, 1, memory_order_acq_rel) + 1 != target)
    return;
  pthread_mutex_lock(&l->lock);
  l->reached = true;
  pthread_cond_broadcast(&l->cond);
  pthread_mutex_unlock(&l->lock);
}

static inline bool sync_latch_wait(sync_latch_t *l, double bound) {
  bool ok;
  pthread_mutex_lock(&l->lock);
  SYNC_WAIT_UNTIL(&l->cond, &l->lock, l->reached, bound, ok);
  pthread_mutex_unlock(&l->lock);
  return ok;
}

#endif
