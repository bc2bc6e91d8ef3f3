/* Thread pool faults: no pool thread can be started. An accepted task waits
 * (the pool retries, with backoff, and logs) and runs once threads can be
 * started again; a DRAIN stop waits for that, a bounded one times out, and
 * a CANCEL stop, also one that follows a waiting DRAIN stop, completes
 * without any thread.
 *
 * The library's pthread_create() is routed through __wrap_pthread_create()
 * by the linker (--wrap, see tests/meson.build), which fails with EAGAIN
 * while `refuse_threads` is set, as RLIMIT_NPROC would. The supervisor's
 * loop thread is started before that, so only pool threads are refused.
 */
#include <errno.h>
#include <ev.h>
#include <stdatomic.h>

#include "gate.h"

int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);

static atomic_bool refuse_threads;
static atomic_long refused;

int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg) {
  if (atomic_load(&refuse_threads)) {
    atomic_fetch_add(&refused, 1);
    return EAGAIN;
  }
  return __real_pthread_create(th, attr, fn, arg);
}

static atomic_long errors_logged, recoveries_logged;

static void count_log(int level, const char *msg, void *data) {
  (void)data;
  if (level == CT_LOG_ERROR && strstr(msg, "could not start a pool thread"))
    atomic_fetch_add(&errors_logged, 1);
  if (strstr(msg, "pool thread started after"))
    atomic_fetch_add(&recoveries_logged, 1);
}

static counter_t ran, done_canceled;

static json_t *count_run(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  counter_add(&ran, 1);
  return json_integer(7);
}

static void count_canceled(ct_task_t *task, void *data) {
  (void)data;
  if (ct_task_status(task) == CT_TASK_CANCELED)
    counter_add(&done_canceled, 1);
}

/* A started supervisor with no pool thread yet, and pool threads refused. */
static ct_supervisor_t *start_refusing(void) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 2;
  o.log = count_log;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  atomic_store(&errors_logged, 0);
  atomic_store(&recoveries_logged, 0);
  atomic_store(&refused, 0);
  atomic_store(&refuse_threads, true);
  counter_init(&ran);
  counter_init(&done_canceled);
  return sup;
}

static void submit_n(ct_supervisor_t *sup, ct_task_t **tasks, int n) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.on_done = count_canceled;
  for (int i = 0; i < n; i++)
    CHECK_OK(ct_background_task(sup, count_run, NULL, &o, &tasks[i]));
}

/* Release the handles and the counters; threads may be started again. */
static void end_test(ct_task_t **tasks, int n) {
  for (int i = 0; i < n; i++)
    ct_task_unref(tasks[i]);
  counter_destroy(&ran);
  counter_destroy(&done_canceled);
  atomic_store(&refuse_threads, false);
}

#define N 8

TEST(accepted_task_runs_once_threads_can_start) {
  ct_supervisor_t *sup = start_refusing();
  ct_task_t *tasks[N];
  submit_n(sup, tasks, N);
  WAIT_FOR(atomic_load(&refused) >= N + 3); /* retried after the submissions */
  CHECK_EQ_INT(atomic_load(&errors_logged), 1);
  CHECK_EQ_INT(counter_get(&ran), 0);
  CHECK_EQ_INT(ct_task_status(tasks[0]), CT_TASK_QUEUED);
  atomic_store(&refuse_threads, false);
  CHECK_OK(ct_wait_completed(tasks, N, WAIT_BOUND_S));
  CHECK_EQ_INT(counter_get(&ran), N);
  CHECK_EQ_INT(json_integer_value(ct_task_result(tasks[N - 1])), 7);
  CHECK_EQ_INT(atomic_load(&recoveries_logged), 1);
  stop_and_free(sup);
  end_test(tasks, N);
}

TEST(drain_stop_waits_for_threads_then_completes) {
  ct_supervisor_t *sup = start_refusing();
  ct_task_t *tasks[N];
  submit_n(sup, tasks, N);
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0.2), CT_ETIMEDOUT);
  long before = atomic_load(&refused);
  WAIT_FOR(atomic_load(&refused) >= before + 2); /* still retrying */
  CHECK_EQ_INT(counter_get(&ran), 0);
  CHECK_EQ_INT(ct_supervisor_free(sup), CT_EBUSY);
  atomic_store(&refuse_threads, false);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, WAIT_BOUND_S));
  CHECK_EQ_INT(counter_get(&ran), N);
  CHECK_EQ_INT(counter_get(&done_canceled), 0);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.completed, N);
  CHECK_EQ_INT(st.queued, 0);
  CHECK_OK(ct_supervisor_free(sup));
  end_test(tasks, N);
}

TEST(cancel_stop_completes_without_threads) {
  ct_supervisor_t *sup = start_refusing();
  ct_task_t *tasks[N];
  submit_n(sup, tasks, N);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, WAIT_BOUND_S));
  CHECK_EQ_INT(counter_get(&ran), 0);
  CHECK_EQ_INT(counter_get(&done_canceled), N);
  for (int i = 0; i < N; i++)
    CHECK_EQ_INT(ct_task_status(tasks[i]), CT_TASK_CANCELED);
  CHECK_OK(ct_supervisor_free(sup));
  end_test(tasks, N);
}

TEST(cancel_stop_ends_a_drain_stop_waiting_for_threads) {
  ct_supervisor_t *sup = start_refusing();
  ct_task_t *tasks[N];
  submit_n(sup, tasks, N);
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0.2), CT_ETIMEDOUT);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, WAIT_BOUND_S));
  CHECK_EQ_INT(counter_get(&ran), 0);
  CHECK_EQ_INT(counter_get(&done_canceled), N);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.canceled, N);
  CHECK_EQ_INT(st.queued, 0);
  CHECK_OK(ct_supervisor_free(sup));
  end_test(tasks, N);
}

/* A start that fails (no loop thread) and is tried again: the watchdog's
 * timer, started before the loop thread, stayed in the loop's timer heap,
 * and the retry started it a second time: libev's own check found the heap
 * broken (an abort), and the watchdog went on after it was turned off. */
static void verify_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ev_verify(ev);
  atomic_store((atomic_bool *)data, true);
}

TEST(a_start_tried_again_after_eagain_leaves_the_loop_sound) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 1;
  o.timeout_warning = 0.2; /* the watchdog runs */
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  atomic_store(&refuse_threads, true);
  CHECK_EQ_INT(ct_supervisor_start(sup), CT_EAGAIN);
  atomic_store(&refuse_threads, false);
  CHECK_OK(ct_supervisor_start(sup));
  atomic_bool verified = false;
  CHECK_OK(ct_loop_call(ct_supervisor_loop(sup), verify_loop, &verified));
  WAIT_FOR(atomic_load(&verified));
  stop_and_free(sup);
}

int main(void) {
  RUN(a_start_tried_again_after_eagain_leaves_the_loop_sound);
  RUN(accepted_task_runs_once_threads_can_start);
  RUN(drain_stop_waits_for_threads_then_completes);
  RUN(cancel_stop_completes_without_threads);
  RUN(cancel_stop_ends_a_drain_stop_waiting_for_threads);
  return check_done();
}
