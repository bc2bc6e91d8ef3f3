/* Task options of thread and loop tasks: arg_free (exactly once, after the
 * callback, whatever ends the task; never for a refused submission), the
 * per-task timeout (TimeoutError while the function still runs, its late
 * return discarded and counted) and delays for loop tasks. Process tasks'
 * options: test-process-options. */
#include <math.h>
#include <stdatomic.h>

#include "gate.h"

/* An argument that counts how often it was freed and whether the task's
 * callback had already run when it was. */
typedef struct {
  atomic_int freed;
  atomic_int done_calls;
  atomic_int done_before_free; /* on_done had run when arg_free came */
  atomic_int seen_by_fn;
} arg_t;

static void arg_free(void *p) {
  arg_t *a = p;
  atomic_store(&a->done_before_free, atomic_load(&a->done_calls));
  atomic_fetch_add(&a->freed, 1);
}

static void on_done(ct_task_t *task, void *data) {
  (void)task;
  arg_t *a = data;
  CHECK_EQ_INT(atomic_load(&a->freed), 0); /* arg is still valid in the callback */
  atomic_fetch_add(&a->done_calls, 1);
}

static json_t *touch(ct_task_t *self, void *p) {
  (void)self;
  arg_t *a = p;
  atomic_fetch_add(&a->seen_by_fn, 1);
  return json_integer(1);
}

static json_t *touch_and_fail(ct_task_t *self, void *p) {
  json_decref(touch(self, p));
  return ct_error_new("ValueError", "no");
}

static ct_task_opts_t opts_for(arg_t *a) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.arg_free = arg_free;
  o.on_done = on_done;
  o.done_data = a;
  return o;
}

static ct_stats_t stats(ct_supervisor_t *sup) {
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  return s;
}

TEST(arg_free_runs_once_after_the_callback_when_done_or_failed) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  arg_t a[4] = {0};
  ct_task_t *t[4];
  for (int i = 0; i < 4; i++) {
    ct_task_opts_t o = opts_for(&a[i]);
    o.loop = i >= 2 ? io : NULL; /* two on the pool, two on a loop */
    CHECK_OK(ct_background_task(sup, i % 2 ? touch_and_fail : touch, &a[i], &o, &t[i]));
  }
  CHECK_OK(ct_wait_completed(t, 4, WAIT_BOUND_S));
  for (int i = 0; i < 4; i++) {
    /* a waiter that returns sees the argument freed, after the callback */
    CHECK_EQ_INT(atomic_load(&a[i].seen_by_fn), 1);
    CHECK_EQ_INT(atomic_load(&a[i].done_calls), 1);
    CHECK_EQ_INT(atomic_load(&a[i].freed), 1);
    CHECK_EQ_INT(atomic_load(&a[i].done_before_free), 1);
    CHECK_EQ_INT(ct_task_failed(t[i]), i % 2);
    ct_task_unref(t[i]);
  }
  stop_and_free(sup);
}

/* Fire-and-forget, no callback: the cheap path must still free the arg. */
TEST(arg_free_runs_for_fire_and_forget_tasks) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  enum { N = 200 };
  static arg_t a[N];
  memset(a, 0, sizeof a);
  for (int i = 0; i < N; i++) {
    ct_task_opts_t o = CT_TASK_OPTS_INIT;
    o.arg_free = arg_free;
    CHECK_OK(ct_background_task(sup, touch, &a[i], &o, NULL));
  }
  stop_and_free(sup); /* a drain: every task has run */
  for (int i = 0; i < N; i++) {
    CHECK_EQ_INT(atomic_load(&a[i].seen_by_fn), 1);
    CHECK_EQ_INT(atomic_load(&a[i].freed), 1);
  }
}

TEST(arg_free_runs_once_for_canceled_tasks_and_never_for_refused_ones) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t g;
  gate_init(&g);
  ct_task_t *blocker;
  CHECK_OK(ct_background_task(sup, gate_task, &g, NULL, &blocker));
  gate_wait_arrived(&g, 1);
  arg_t queued = {0}, delayed = {0}, stopped = {0}, stopped_delayed = {0};
  ct_task_t *tq, *td, *ts, *tsd;
  ct_task_opts_t o = opts_for(&queued);
  CHECK_OK(ct_background_task(sup, touch, &queued, &o, &tq));
  o = opts_for(&delayed);
  o.delay = 3600;
  CHECK_OK(ct_background_task(sup, touch, &delayed, &o, &td));
  CHECK_OK(ct_task_cancel(tq));
  CHECK_OK(ct_task_cancel(td));
  CHECK_EQ_INT(ct_task_cancel(td), CT_EALREADY);
  /* freed by the cancel, on this thread, after the callback */
  CHECK_EQ_INT(atomic_load(&queued.freed), 1);
  CHECK_EQ_INT(atomic_load(&delayed.freed), 1);
  CHECK_EQ_INT(atomic_load(&queued.done_before_free), 1);
  CHECK_EQ_INT(atomic_load(&delayed.done_before_free), 1);

  /* a CANCEL stop frees what it cancels, queued or delayed */
  o = opts_for(&stopped);
  CHECK_OK(ct_background_task(sup, touch, &stopped, &o, &ts));
  o = opts_for(&stopped_delayed);
  o.delay = 3600;
  CHECK_OK(ct_background_task(sup, touch, &stopped_delayed, &o, &tsd));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, 0));
  gate_open(&g);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(ts), CT_TASK_CANCELED);
  CHECK_EQ_INT(ct_task_status(tsd), CT_TASK_CANCELED);
  CHECK_EQ_INT(atomic_load(&stopped.freed), 1);
  CHECK_EQ_INT(atomic_load(&stopped_delayed.freed), 1);
  /* refused: the caller keeps arg, arg_free never runs */
  arg_t refused = {0};
  o = opts_for(&refused);
  ct_task_t *tr;
  CHECK_EQ_INT(ct_background_task(sup, touch, &refused, &o, &tr), CT_ESHUTDOWN);
  o.priority = 1000;
  CHECK_EQ_INT(ct_background_task(NULL, touch, &refused, &o, &tr), CT_EINVAL);
  CHECK_EQ_INT(atomic_load(&refused.freed), 0);
  CHECK_EQ_INT(atomic_load(&refused.done_calls), 0);
  CHECK_EQ_INT(atomic_load(&queued.seen_by_fn) + atomic_load(&delayed.seen_by_fn) +
                   atomic_load(&stopped.seen_by_fn) + atomic_load(&stopped_delayed.seen_by_fn),
               0);
  ct_task_t *all[] = {blocker, tq, td, ts, tsd};
  for (int i = 0; i < 5; i++)
    ct_task_unref(all[i]);
  CHECK_OK(ct_supervisor_free(sup));
  gate_destroy(&g);
}

/* A function that blocks until its gate opens, then returns a result that
 * must be discarded (and freed: the sanitizers see a leak otherwise). */
typedef struct {
  arg_t a;
  gate_t gate;
  atomic_bool returned;
} blocking_t;

static json_t *block(ct_task_t *self, void *p) {
  blocking_t *b = p;
  atomic_fetch_add(&b->a.seen_by_fn, 1);
  gate_pass(&b->gate);
  CHECK(ct_task_cancel_requested(self)); /* a timeout sets the cancel flag */
  CHECK_EQ_INT(atomic_load(&b->a.freed), 0); /* arg lives until we return */
  atomic_store(&b->returned, true);
  return json_string("too late");
}

static void blocking_init(blocking_t *b) {
  memset(b, 0, sizeof *b);
  gate_init(&b->gate);
}

/* A task still running at its deadline completes with TimeoutError; its
 * late return is counted and discarded, and arg_free waits for it. */
static void check_timeout_while_running(ct_supervisor_t *sup, ct_loop_t *loop) {
  blocking_t b;
  blocking_init(&b);
  ct_task_opts_t o = opts_for(&b.a);
  o.timeout = 0.2;
  o.loop = loop;
  ct_task_t *t;
  ct_stats_t before = stats(sup);
  CHECK_OK(ct_background_task(sup, block, &b, &o, &t));
  gate_wait_arrived(&b.gate, 1);
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S)); /* waiters wake at the deadline */
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t)), "TimeoutError");
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  CHECK(ct_task_cancel_requested(t));
  CHECK_EQ_INT(ct_task_cancel(t), CT_EALREADY);
  CHECK_EQ_INT(atomic_load(&b.a.done_calls), 1);
  CHECK_EQ_INT(atomic_load(&b.a.freed), 0);
  CHECK(!atomic_load(&b.returned));
  ct_stats_t s = stats(sup);
  CHECK_EQ_INT(s.overrun, 1);
  CHECK_EQ_INT(s.late_returns, before.late_returns);
  json_t *j = ct_supervisor_stats_json(sup);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "tasks"), "overrun")), 1);
  json_decref(j);

  gate_open(&b.gate);
  WAIT_FOR(atomic_load(&b.a.freed) == 1);
  CHECK(atomic_load(&b.returned));
  WAIT_FOR(stats(sup).failed == before.failed + 1); /* counted once, as failed */
  s = stats(sup);
  CHECK_EQ_INT(s.running, 0);
  CHECK_EQ_INT(s.overrun, 0);
  CHECK_EQ_INT(s.late_returns, before.late_returns + 1);
  CHECK_EQ_INT(s.completed, before.completed);
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t)), "TimeoutError");
  CHECK_EQ_INT(atomic_load(&b.a.done_calls), 1);
  CHECK_EQ_INT(atomic_load(&b.a.done_before_free), 1);
  ct_task_unref(t);
  gate_destroy(&b.gate);
}

TEST(timed_out_thread_task_completes_and_its_late_return_is_discarded) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  check_timeout_while_running(sup, NULL);
  stop_and_free(sup);
}

TEST(timed_out_loop_task_completes_and_its_late_return_is_discarded) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  check_timeout_while_running(sup, io);
  stop_and_free(sup);
}

/* A function that polls its cancel flag returns soon after the deadline. */
static json_t *poll_cancel(ct_task_t *self, void *p) {
  arg_t *a = p;
  atomic_fetch_add(&a->seen_by_fn, 1);
  while (!ct_task_cancel_requested(self))
    check_sleep(0.001);
  return json_true();
}

TEST(a_function_that_polls_its_cancel_flag_ends_at_the_timeout) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  arg_t a = {0};
  ct_task_opts_t o = opts_for(&a);
  o.timeout = 0.05;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, poll_cancel, &a, &o, &t));
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t)), "TimeoutError");
  WAIT_FOR(atomic_load(&a.freed) == 1);
  WAIT_FOR(stats(sup).late_returns == 1);
  CHECK_EQ_INT(stats(sup).overrun, 0);
  ct_task_unref(t);
  stop_and_free(sup);
}

/* The late return comes while the deadline's callback still runs: the
 * argument must outlive the callback all the same. */
static ct_supervisor_t *racing_sup;
static void on_done_after_the_return(ct_task_t *task, void *data) {
  (void)task;
  arg_t *a = data;
  ct_stats_t s = CT_STATS_INIT;
  do { /* the function's thread is done with the task: counted */
    CHECK_OK(ct_supervisor_stats(racing_sup, &s));
    check_sleep(0.001);
  } while (s.failed == 0);
  CHECK_EQ_INT(atomic_load(&a->freed), 0);
  atomic_fetch_add(&a->done_calls, 1);
}

TEST(arg_free_waits_for_the_callback_when_the_late_return_comes_first) {
  ct_supervisor_t *sup = racing_sup = start_supervisor(2, 0, 0);
  arg_t a = {0};
  ct_task_opts_t o = opts_for(&a);
  o.on_done = on_done_after_the_return;
  o.timeout = 0.05;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, poll_cancel, &a, &o, &t));
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(atomic_load(&a.done_calls), 1);
  CHECK_EQ_INT(atomic_load(&a.freed), 1); /* by the callback's thread, after it */
  CHECK_EQ_INT(atomic_load(&a.done_before_free), 1);
  CHECK_EQ_INT(stats(sup).late_returns, 1);
  ct_task_unref(t);
  stop_and_free(sup);
}

TEST(a_task_that_returns_in_time_keeps_its_result) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  enum { N = 100 };
  static arg_t a[N];
  memset(a, 0, sizeof a);
  ct_task_t *t[N];
  for (int i = 0; i < N; i++) {
    ct_task_opts_t o = opts_for(&a[i]);
    o.timeout = 60;
    CHECK_OK(ct_background_task(sup, touch, &a[i], &o, &t[i]));
  }
  CHECK_OK(ct_wait_completed(t, N, WAIT_BOUND_S));
  for (int i = 0; i < N; i++) {
    CHECK_EQ_INT(json_integer_value(ct_task_result(t[i])), 1);
    CHECK(!ct_task_cancel_requested(t[i]));
    CHECK_EQ_INT(atomic_load(&a[i].freed), 1);
    ct_task_unref(t[i]);
  }
  WAIT_FOR(stats(sup).completed == N); /* counted after the waiters woke */
  ct_stats_t s = stats(sup);
  CHECK_EQ_INT(s.overrun + s.late_returns + s.failed, 0);
  /* a timeout that never fires does not hold the supervisor's stop up */
  stop_and_free(sup);
}

TEST(timeout_values_are_checked) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  arg_t a = {0};
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  ct_task_t *t;
  o.timeout = -1;
  CHECK_EQ_INT(ct_background_task(sup, touch, &a, &o, &t), CT_EINVAL);
  o.timeout = NAN;
  CHECK_EQ_INT(ct_background_task(sup, touch, &a, &o, &t), CT_EINVAL);
  o.timeout = INFINITY; /* no bound */
  CHECK_OK(ct_background_task(sup, touch, &a, &o, &t));
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(json_integer_value(ct_task_result(t)), 1);
  ct_task_unref(t);
  /* an older, smaller struct (before timeout and arg_free) is accepted */
  o = (ct_task_opts_t)CT_TASK_OPTS_INIT;
  o.size = offsetof(ct_task_opts_t, timeout);
  o.timeout = -1; /* past its size: never read */
  CHECK_OK(ct_background_task(sup, touch, &a, &o, &t));
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  ct_task_unref(t);
  stop_and_free(sup);
}

typedef struct {
  pthread_t thread;
  double started;
} where_t;

static void record_loop_thread(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  *(pthread_t *)data = pthread_self();
}

static json_t *where(ct_task_t *self, void *p) {
  where_t *w = p;
  w->thread = pthread_self();
  w->started = ct_task_time_started(self);
  return NULL;
}

TEST(a_delayed_loop_task_runs_on_its_loop_after_the_delay) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  where_t w = {0};
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.loop = io;
  o.delay = 0.2;
  ct_task_t *t;
  double before = ct_now();
  CHECK_OK(ct_background_task(sup, where, &w, &o, &t));
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  CHECK(w.started >= before + 0.2 - 1e-3); /* a lower bound: never early */
  pthread_t loop_thread;
  CHECK_OK(ct_loop_call(io, record_loop_thread, &loop_thread));
  ct_task_t *sync;
  where_t unused = {0};
  o.delay = 0;
  CHECK_OK(ct_background_task(sup, where, &unused, &o, &sync)); /* runs after the call */
  CHECK_OK(ct_task_wait(sync, WAIT_BOUND_S));
  CHECK(pthread_equal(w.thread, loop_thread));
  ct_task_unref(sync);
  ct_task_unref(t);
  WAIT_FOR(stats(sup).completed == 2); /* counted after the waiters woke */
  CHECK_EQ_INT(stats(sup).delayed, 0);
  stop_and_free(sup);
}

TEST(a_delayed_loop_task_canceled_in_its_delay_frees_its_arg_once) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  arg_t a = {0}, b = {0};
  ct_task_opts_t o = opts_for(&a);
  o.loop = io;
  o.delay = 3600;
  ct_task_t *t, *u;
  CHECK_OK(ct_background_task(sup, touch, &a, &o, &t));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_DELAYED);
  CHECK_EQ_INT(stats(sup).delayed, 1);
  CHECK_OK(ct_task_cancel(t));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  CHECK_EQ_INT(atomic_load(&a.freed), 1);
  CHECK_EQ_INT(atomic_load(&a.done_calls), 1);
  /* the supervisor's stop cancels one still waiting */
  o = opts_for(&b);
  o.loop = io;
  o.delay = 3600;
  CHECK_OK(ct_background_task(sup, touch, &b, &o, &u));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(u), CT_TASK_CANCELED);
  CHECK_EQ_INT(atomic_load(&b.freed), 1);
  CHECK_EQ_INT(atomic_load(&a.seen_by_fn) + atomic_load(&b.seen_by_fn), 0);
  ct_stats_t s = stats(sup);
  CHECK_EQ_INT(s.canceled, 2);
  CHECK_EQ_INT(s.delayed, 0);
  CHECK_EQ_INT(s.submitted, 2);
  ct_task_unref(t);
  ct_task_unref(u);
  CHECK_OK(ct_supervisor_free(sup));
}

static atomic_int warnings;
static void count_warnings(int level, const char *msg, void *data) {
  (void)data;
  if (level >= CT_LOG_WARNING && strstr(msg, "its loop has ended"))
    atomic_fetch_add(&warnings, 1);
}

TEST(a_delayed_loop_task_whose_loop_ended_is_canceled_and_said) {
  ct_supervisor_t *sup = start_supervisor_logging(2, count_warnings);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  arg_t a = {0};
  ct_task_opts_t o = opts_for(&a);
  o.loop = io;
  o.delay = 3; /* the loop ends well before */
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, touch, &a, &o, &t));
  CHECK_OK(ct_loop_stop(io, -1));
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  CHECK_EQ_INT(atomic_load(&a.freed), 1);
  CHECK_EQ_INT(atomic_load(&a.seen_by_fn), 0);
  CHECK_EQ_INT(atomic_load(&warnings), 1);
  ct_stats_t s = stats(sup);
  CHECK_EQ_INT(s.canceled, 1);
  CHECK_EQ_INT(s.submitted, 1);
  CHECK_EQ_INT(s.loop_active, 0);
  ct_task_unref(t);
  stop_and_free(sup);
}

int main(void) {
  RUN(arg_free_runs_once_after_the_callback_when_done_or_failed);
  RUN(arg_free_runs_for_fire_and_forget_tasks);
  RUN(arg_free_runs_once_for_canceled_tasks_and_never_for_refused_ones);
  RUN(timed_out_thread_task_completes_and_its_late_return_is_discarded);
  RUN(timed_out_loop_task_completes_and_its_late_return_is_discarded);
  RUN(a_function_that_polls_its_cancel_flag_ends_at_the_timeout);
  RUN(arg_free_waits_for_the_callback_when_the_late_return_comes_first);
  RUN(a_task_that_returns_in_time_keeps_its_result);
  RUN(timeout_values_are_checked);
  RUN(a_delayed_loop_task_runs_on_its_loop_after_the_delay);
  RUN(a_delayed_loop_task_canceled_in_its_delay_frees_its_arg_once);
  RUN(a_delayed_loop_task_whose_loop_ended_is_canceled_and_said);
  return check_done();
}
