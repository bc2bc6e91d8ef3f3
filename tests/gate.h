/* Test helpers to make concurrency deterministic without sleeping.
 *
 * gate_t: the gate of sync.h (shared with the benchmarks): tasks that
 * call gate_pass() block until the test calls gate_open();
 * gate_wait_arrived(g, n) returns once n callers have reached the gate. A pool saturated by gate tasks holds still until the test opens
 * it, so queue order and caps can be checked exactly.
 *
 * counter_t: a count that threads add to and the test waits on.
 *
 * order_t: a log of tags in the order tasks recorded them.
 *
 * All waits end in abort() after a generous bound (a hung test fails
 * instead of timing out without a message); none asserts a duration.
 */
#ifndef CT_TESTS_GATE_H
#define CT_TESTS_GATE_H

#include <ctasker.h>
#include <pthread.h>
#include <stdbool.h>

#include "check.h"
#include "sync.h"

#define WAIT_BOUND_S 60.0

/* Wait on c/m until cond_expr holds; abort after WAIT_BOUND_S. m held. */
#define HELPER_WAIT_UNTIL(c, m, cond_expr)                                     \
  do {                                                                         \
    bool ok_;                                                                  \
    SYNC_WAIT_UNTIL((c), (m), (cond_expr), WAIT_BOUND_S, ok_);                 \
    if (!ok_) {                                                                \
      fprintf(stderr, "%s:%d: gave up waiting for %s\n", __FILE__, __LINE__,  \
              #cond_expr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* The shared gate (sync.h), its waits bounded by WAIT_BOUND_S. */
typedef sync_gate_t gate_t;

static inline void gate_init(gate_t *g) { sync_gate_init(g); }
static inline void gate_destroy(gate_t *g) { sync_gate_destroy(g); }
static inline void gate_open(gate_t *g) { sync_gate_open(g); }

/* Count this caller as arrived, then block until the gate is open. */
static inline void gate_pass(gate_t *g) {
  if (!sync_gate_pass(g, WAIT_BOUND_S)) {
    fprintf(stderr, "gave up waiting for a gate to open\n");
    abort();
  }
}

static inline void gate_wait_arrived(gate_t *g, int n) {
  if (!sync_gate_wait_arrived(g, n, WAIT_BOUND_S)) {
    fprintf(stderr, "gave up waiting for %d arrivals at a gate\n", n);
    abort();
  }
}

static inline int gate_arrived(gate_t *g) { return sync_gate_arrived(g); }

/* A task function: wait at the gate given as arg, return null. */
static inline json_t *gate_task(ct_task_t *self, void *arg) {
  (void)self;
  gate_pass(arg);
  return NULL;
}

typedef struct {
  pthread_mutex_t m;
  pthread_cond_t c;
  long n;
} counter_t;

static inline void counter_init(counter_t *k) {
  pthread_mutex_init(&k->m, NULL);
  pthread_cond_init(&k->c, NULL);
  k->n = 0;
}

static inline void counter_destroy(counter_t *k) {
  pthread_mutex_destroy(&k->m);
  pthread_cond_destroy(&k->c);
}

static inline void counter_add(counter_t *k, long d) {
  pthread_mutex_lock(&k->m);
  k->n += d;
  pthread_cond_broadcast(&k->c);
  pthread_mutex_unlock(&k->m);
}

static inline long counter_get(counter_t *k) {
  pthread_mutex_lock(&k->m);
  long n = k->n;
  pthread_mutex_unlock(&k->m);
  return n;
}

static inline void counter_wait_at_least(counter_t *k, long n) {
  pthread_mutex_lock(&k->m);
  HELPER_WAIT_UNTIL(&k->c, &k->m, k->n >= n);
  pthread_mutex_unlock(&k->m);
}

#define ORDER_MAX 256

typedef struct {
  pthread_mutex_t m;
  int tags[ORDER_MAX];
  int len;
} order_t;

static inline void order_init(order_t *o) {
  pthread_mutex_init(&o->m, NULL);
  o->len = 0;
}

static inline void order_destroy(order_t *o) { pthread_mutex_destroy(&o->m); }

static inline void order_add(order_t *o, int tag) {
  pthread_mutex_lock(&o->m);
  CHECK(o->len < ORDER_MAX);
  o->tags[o->len++] = tag;
  pthread_mutex_unlock(&o->m);
}

/* A supervisor made with these options and started. */
static inline ct_supervisor_t *start_supervisor_with(const ct_supervisor_opts_t *o) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(o, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
}

/* A supervisor started with these sizes (and otherwise default options). */
static inline ct_supervisor_t *start_supervisor(int pool, int reserve_normal, int reserve_high) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = pool;
  o.reserve_normal = reserve_normal;
  o.reserve_high = reserve_high;
  return start_supervisor_with(&o);
}

/* A supervisor of `pool` threads started with its log going to `log`. */
static inline ct_supervisor_t *start_supervisor_logging(int pool, ct_log_fn log) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = pool;
  o.log = log;
  return start_supervisor_with(&o);
}

static inline void stop_and_free(ct_supervisor_t *sup) {
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  CHECK_OK(ct_supervisor_free(sup));
}

/* Submit fn(arg) at `priority` with a handle. */
static inline ct_task_t *submit(ct_supervisor_t *sup, ct_task_fn fn, void *arg, int priority) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.priority = priority;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, fn, arg, &o, &t));
  return t;
}

#endif
