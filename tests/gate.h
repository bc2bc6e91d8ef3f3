/* Test helpers to make concurrency deterministic without sleeping.
 *
 * gate_t: tasks that call gate_pass() block until the test calls
 * gate_open(); gate_wait_arrived(g, n) returns once n callers have reached
 * the gate. A pool saturated by gate tasks holds still until the test opens
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

#define WAIT_BOUND_S 60.0

static inline struct timespec helper_deadline(double seconds) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)seconds;
  return ts;
}

/* Wait on c/m until pred(arg) holds; abort after WAIT_BOUND_S. m held. */
#define HELPER_WAIT_UNTIL(c, m, cond_expr)                                     \
  do {                                                                         \
    struct timespec dl_ = helper_deadline(WAIT_BOUND_S);                       \
    while (!(cond_expr)) {                                                     \
      if (pthread_cond_timedwait((c), (m), &dl_) != 0 && !(cond_expr)) {       \
        fprintf(stderr, "%s:%d: gave up waiting for %s\n", __FILE__,          \
                __LINE__, #cond_expr);                                         \
        abort();                                                               \
      }                                                                        \
    }                                                                          \
  } while (0)

typedef struct {
  pthread_mutex_t m;
  pthread_cond_t c;
  bool open;
  int arrived;
} gate_t;

static inline void gate_init(gate_t *g) {
  pthread_mutex_init(&g->m, NULL);
  pthread_cond_init(&g->c, NULL);
  g->open = false;
  g->arrived = 0;
}

static inline void gate_destroy(gate_t *g) {
  pthread_mutex_destroy(&g->m);
  pthread_cond_destroy(&g->c);
}

static inline void gate_open(gate_t *g) {
  pthread_mutex_lock(&g->m);
  g->open = true;
  pthread_cond_broadcast(&g->c);
  pthread_mutex_unlock(&g->m);
}

/* Count this caller as arrived, then block until the gate is open. */
static inline void gate_pass(gate_t *g) {
  pthread_mutex_lock(&g->m);
  g->arrived++;
  pthread_cond_broadcast(&g->c);
  HELPER_WAIT_UNTIL(&g->c, &g->m, g->open);
  pthread_mutex_unlock(&g->m);
}

static inline void gate_wait_arrived(gate_t *g, int n) {
  pthread_mutex_lock(&g->m);
  HELPER_WAIT_UNTIL(&g->c, &g->m, g->arrived >= n);
  pthread_mutex_unlock(&g->m);
}

static inline int gate_arrived(gate_t *g) {
  pthread_mutex_lock(&g->m);
  int n = g->arrived;
  pthread_mutex_unlock(&g->m);
  return n;
}

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

/* A supervisor started with these sizes (and otherwise default options). */
static inline ct_supervisor_t *start_supervisor(int pool, int reserve_normal, int reserve_high) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = pool;
  o.reserve_normal = reserve_normal;
  o.reserve_high = reserve_high;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
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
