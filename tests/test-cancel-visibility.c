/* What a poller sees of a task canceled, or moved out of its delay, on
 * another thread.
 *
 * A cancel claims a queued or delayed task and then gives it its
 * CancelledError result and its completion time, on the canceling thread.
 * A poller spins on ct_task_is_terminal() and, as soon as it reads the task
 * terminal, reads its status, result, failed flag and completion time:
 * they must all be there already. Three ways of canceling are polled:
 * ct_task_cancel() of a task queued behind a gated task on a pool of one
 * thread, ct_task_cancel() of a delayed task, and a CANCEL stop, which
 * claims the whole queue at once and then finishes its tasks one after
 * another. Last, delayed tasks whose delay ends while the poller reads
 * their queued time: it reads 0 while the task is DELAYED, then one time
 * that never changes again.
 * Under TSan, a write that a poller's read is not ordered after is a
 * reported race.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "gate.h"

#define ROUNDS 2000
#define STOP_ROUNDS 40
#define STOP_TASKS 64
#define DELAY_ROUNDS 500

/* Spin until cond holds; abort after WAIT_BOUND_S (a hung test fails). */
#define SPIN_UNTIL(cond)                                                       \
  do {                                                                         \
    double spin_end_ = ct_now() + WAIT_BOUND_S;                                \
    while (!(cond)) {                                                          \
      if (ct_now() > spin_end_) {                                              \
        fprintf(stderr, "%s:%d: gave up waiting for %s\n", __FILE__, __LINE__, \
                #cond);                                                        \
        abort();                                                               \
      }                                                                        \
    }                                                                          \
  } while (0)

/* Tasks handed to the poller one list at a time: the test stores a list,
 * the poller says it is polling, checks each task in turn and clears the
 * list when done. */
typedef struct {
  _Atomic(ct_task_t **) tasks;
  size_t n;
  void (*check)(ct_task_t *t);
  atomic_bool polling;
  atomic_bool quit;
} poller_t;

static void *poll_lists(void *arg) {
  poller_t *p = arg;
  for (;;) {
    ct_task_t **tasks;
    SPIN_UNTIL((tasks = atomic_load(&p->tasks)) != NULL || atomic_load(&p->quit));
    if (!tasks)
      return NULL;
    atomic_store(&p->polling, true);
    for (size_t i = 0; i < p->n; i++)
      p->check(tasks[i]);
    atomic_store(&p->polling, false);
    atomic_store(&p->tasks, NULL);
  }
}

static void poller_start(poller_t *p, pthread_t *thread, void (*check)(ct_task_t *t)) {
  *p = (poller_t){.check = check};
  CHECK(pthread_create(thread, NULL, poll_lists, p) == 0);
}

/* Hand a list to the poller and return once it polls it. */
static void poller_give(poller_t *p, ct_task_t **tasks, size_t n) {
  p->n = n;
  atomic_store(&p->tasks, tasks);
  SPIN_UNTIL(atomic_load(&p->polling) || atomic_load(&p->tasks) == NULL);
}

static void poller_wait_done(poller_t *p) { SPIN_UNTIL(atomic_load(&p->tasks) == NULL); }

static void poller_join(poller_t *p, pthread_t thread) {
  atomic_store(&p->quit, true);
  CHECK(pthread_join(thread, NULL) == 0);
}

/* The poller's check of a task being canceled: the moment it reads
 * terminal, everything a canceled task has is there. */
static void check_canceled(ct_task_t *t) {
  SPIN_UNTIL(ct_task_is_terminal(t));
  json_t *result = ct_task_result(t);
  CHECK(result != NULL);
  CHECK(ct_result_is_error_class(result, "CancelledError"));
  CHECK(ct_task_failed(t));
  CHECK(ct_task_time_completed(t) > 0);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
}

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

static ct_task_t *submit_delayed(ct_supervisor_t *sup, double delay) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.delay = delay;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, nothing, NULL, &o, &t));
  return t;
}

/* One round: the poller polls the task while this thread cancels it. */
static void cancel_polled(poller_t *p, ct_task_t *t) {
  poller_give(p, &t, 1);
  CHECK_OK(ct_task_cancel(t));
  poller_wait_done(p);
}

TEST(cancel_queued_seen_whole) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *blocker = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  poller_t p;
  pthread_t poller;
  poller_start(&p, &poller, check_canceled);
  for (int i = 0; i < ROUNDS; i++) {
    ct_task_t *t = submit(sup, nothing, NULL, CT_PRIORITY_NORMAL);
    cancel_polled(&p, t);
    CHECK(ct_task_time_queued(t) > 0);
    ct_task_unref(t);
  }
  poller_join(&p, poller);
  gate_open(&gate);
  CHECK_OK(ct_task_wait(blocker, -1));
  ct_task_unref(blocker);
  stop_and_free(sup);
  gate_destroy(&gate);
}

TEST(cancel_delayed_seen_whole) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  poller_t p;
  pthread_t poller;
  poller_start(&p, &poller, check_canceled);
  for (int i = 0; i < ROUNDS; i++) {
    ct_task_t *t = submit_delayed(sup, 3600);
    cancel_polled(&p, t);
    CHECK(ct_task_time_queued(t) == 0); /* never queued */
    ct_task_unref(t);
  }
  poller_join(&p, poller);
  stop_and_free(sup);
}

static void *stop_canceling(void *arg) {
  CHECK_OK(ct_supervisor_stop(arg, CT_STOP_CANCEL, -1));
  return NULL;
}

/* A CANCEL stop claims every queued task, then finishes them in turn: the
 * poller, going down the queue, reads tasks claimed but not yet finished. */
static void stop_round(poller_t *p) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *blocker = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  ct_task_t *tasks[STOP_TASKS];
  for (int i = 0; i < STOP_TASKS; i++)
    tasks[i] = submit(sup, nothing, NULL, CT_PRIORITY_NORMAL);
  poller_give(p, tasks, STOP_TASKS);
  pthread_t stopper;
  CHECK(pthread_create(&stopper, NULL, stop_canceling, sup) == 0);
  poller_wait_done(p);
  gate_open(&gate); /* the stop waits for the blocker */
  CHECK(pthread_join(stopper, NULL) == 0);
  ct_task_unref_list(tasks, STOP_TASKS);
  ct_task_unref(blocker);
  CHECK_OK(ct_supervisor_free(sup));
  gate_destroy(&gate);
}

TEST(stop_cancel_seen_whole) {
  poller_t p;
  pthread_t poller;
  poller_start(&p, &poller, check_canceled);
  for (int i = 0; i < STOP_ROUNDS; i++)
    stop_round(&p);
  poller_join(&p, poller);
}

/* The poller's check of a delayed task on its way to run: its queued time
 * is 0 while it waits for its delay, then one time, there as soon as the
 * task reads QUEUED, and read again unchanged once it has completed. */
static void check_queued_time(ct_task_t *t) {
  double seen = 0;
  while (!ct_task_is_terminal(t)) {
    ct_task_status_t s = ct_task_status(t);
    double q = ct_task_time_queued(t);
    CHECK(s == CT_TASK_DELAYED || q > 0);
    if (seen == 0)
      seen = q;
    CHECK(q == seen);
  }
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  CHECK(ct_task_time_queued(t) > 0);
  CHECK(seen == 0 || ct_task_time_queued(t) == seen);
}

TEST(delay_end_queued_time) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  poller_t p;
  pthread_t poller;
  poller_start(&p, &poller, check_queued_time);
  for (int i = 0; i < DELAY_ROUNDS; i++) {
    ct_task_t *t = submit_delayed(sup, 1e-4);
    poller_give(&p, &t, 1);
    poller_wait_done(&p);
    ct_task_unref(t);
  }
  poller_join(&p, poller);
  stop_and_free(sup);
}

int main(void) {
  RUN(cancel_queued_seen_whole);
  RUN(cancel_delayed_seen_whole);
  RUN(stop_cancel_seen_whole);
  RUN(delay_end_queued_time);
  return check_done();
}
