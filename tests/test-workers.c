/* Workers: the four kinds, the life cycle, failures and bad input. */
#include <ctasker.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "check.h"
#include "gate.h"

/* What the runs record. */
typedef struct {
  atomic_int runs, started, fails, errors, dropped, in_run, max_in_run;
  atomic_bool gate; /* runs that wait, wait until this is true */
  int order[64];
  int priority[64]; /* run->item_priority */
  double begin[64], end[64], scheduled[64];
  void *seen_data, *seen_args;
  ct_worker_t *self;
  int stop_rc;
} rec_t;

static void wait_gate(rec_t *r) {
  while (!atomic_load(&r->gate))
    check_sleep(0.0005);
}

static void note_start(rec_t *r, ct_worker_run_t *run) {
  int n = atomic_fetch_add(&r->started, 1);
  int in = atomic_fetch_add(&r->in_run, 1) + 1;
  if (in > atomic_load(&r->max_in_run))
    atomic_store(&r->max_in_run, in);
  if (n < 64) {
    r->begin[n] = ct_now();
    r->scheduled[n] = run->scheduled;
    r->order[n] = (int)(intptr_t)run->item;
    r->priority[n] = run->item_priority;
  }
  r->seen_data = run->data;
  r->seen_args = run->args;
}

static int note_end(rec_t *r, int outcome) {
  int n = atomic_fetch_add(&r->runs, 1);
  if (n < 64)
    r->end[n] = ct_now();
  atomic_fetch_sub(&r->in_run, 1);
  return outcome;
}

static int run_record(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  return note_end(r, CT_WORKER_CONTINUE);
}

static int run_gated(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  wait_gate(r);
  return note_end(r, CT_WORKER_CONTINUE);
}

static void count_drop(ct_worker_t *w, void *item, void *data) {
  (void)w;
  (void)item;
  atomic_fetch_add(&((rec_t *)data)->dropped, 1);
}

static ct_worker_t *make(ct_supervisor_t *sup, ct_worker_kind_t kind, ct_worker_fn fn,
                         rec_t *r, ct_worker_opts_t *o) {
  ct_worker_opts_t defaults = CT_WORKER_OPTS_INIT;
  if (!o)
    o = &defaults;
  o->data = r;
  o->on_drop = count_drop;
  o->drop_data = r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, kind, fn, o, &w));
  r->self = w;
  return w;
}

/* The worker's counters now. */
static ct_worker_stats_t stats_of(ct_worker_t *w) {
  ct_worker_stats_t s = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &s));
  return s;
}

/* A FIFO queue runs items in the order they were put, whatever their
 * priority, and tells each run the priority its item was put with (it
 * told 0). */
static int fifo_priority_of(int i) {
  static const int priorities[] = {CT_PRIORITY_LOW, CT_PRIORITY_HIGH, CT_PRIORITY_NORMAL};
  return priorities[i % 3];
}

TEST(queue_fifo_order) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  rec_t r = {0};
  ct_worker_t *w = make(sup, CT_WORKER_QUEUE, run_record, &r, NULL);
  CHECK_OK(ct_worker_start(w, NULL));
  for (int i = 0; i < 20; i++)
    CHECK_OK(ct_queue_worker_put(w, (void *)(intptr_t)i, fifo_priority_of(i)));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_EQ_INT(atomic_load(&r.runs), 20);
  for (int i = 0; i < 20; i++) {
    CHECK_EQ_INT(r.order[i], i);
    CHECK_EQ_INT(r.priority[i], fifo_priority_of(i));
  }
  CHECK_EQ_INT(atomic_load(&r.max_in_run), 1);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static int run_gate_first(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  if (run->item == (void *)(intptr_t)100)
    wait_gate(r);
  return note_end(r, CT_WORKER_CONTINUE);
}

TEST(priority_queue_order_after_busy_run) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  rec_t r = {0};
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.priority_queue = true;
  ct_worker_t *w = make(sup, CT_WORKER_QUEUE, run_gate_first, &r, &o);
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_queue_worker_put(w, (void *)(intptr_t)100, 100));
  WAIT_FOR(atomic_load(&r.started) == 1);
  CHECK_OK(ct_queue_worker_put(w, (void *)(intptr_t)3, 200));
  CHECK_OK(ct_queue_worker_put(w, (void *)(intptr_t)1, 10));
  CHECK_OK(ct_queue_worker_put(w, (void *)(intptr_t)4, 200));
  CHECK_OK(ct_queue_worker_put(w, (void *)(intptr_t)2, 50));
  atomic_store(&r.gate, true);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(atomic_load(&r.runs), 5);
  int want[] = {100, 1, 2, 3, 4};
  for (int i = 0; i < 5; i++)
    CHECK_EQ_INT(r.order[i], want[i]);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

TEST(queue_bound_and_drop_hands_back) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  rec_t r = {0};
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.max_queue = 3;
  ct_worker_t *w = make(sup, CT_WORKER_QUEUE, run_gated, &r, &o);
  CHECK_EQ_INT(ct_queue_worker_put(w, NULL, 100), CT_ESHUTDOWN); /* not started */
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_queue_worker_put(w, (void *)1, 100));
  WAIT_FOR(atomic_load(&r.started) == 1);
  for (int i = 0; i < 3; i++)
    CHECK_OK(ct_queue_worker_put(w, (void *)2, 100));
  CHECK_EQ_INT(ct_queue_worker_put(w, (void *)3, 100), CT_ENOBUFS);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, 0));
  CHECK_EQ_INT(atomic_load(&r.dropped), 3);
  CHECK_EQ_INT(ct_queue_worker_put(w, NULL, 100), CT_ESHUTDOWN);
  atomic_store(&r.gate, true);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(atomic_load(&r.runs), 1);
  ct_worker_stats_t s = stats_of(w);
  CHECK_EQ_INT(s.dropped, 3);
  CHECK_EQ_INT(s.pending, 0);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static json_t *block_task(ct_task_t *self, void *arg) {
  (void)self;
  wait_gate(arg);
  return NULL;
}

TEST(event_triggers_before_start_merge) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0); /* one thread, taken by a blocker */
  rec_t r = {0}, blocker = {0};
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, block_task, &blocker, NULL, &t));
  WAIT_FOR(ct_task_status(t) == CT_TASK_STARTED);
  ct_worker_t *w = make(sup, CT_WORKER_EVENT, run_record, &r, NULL);
  CHECK_OK(ct_worker_start(w, NULL));
  for (int i = 0; i < 5; i++)
    CHECK_OK(ct_event_worker_trigger(w, false));
  atomic_store(&blocker.gate, true);
  CHECK_OK(ct_task_wait(t, -1));
  ct_task_unref(t);
  WAIT_FOR(atomic_load(&r.runs) == 1);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(atomic_load(&r.runs), 1);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

TEST(event_forced_trigger_reruns_once) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  rec_t r = {0};
  ct_worker_t *w = make(sup, CT_WORKER_EVENT, run_gated, &r, NULL);
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  WAIT_FOR(atomic_load(&r.started) == 1);
  CHECK_OK(ct_event_worker_trigger(w, false)); /* during the run: none */
  for (int i = 0; i < 3; i++)
    CHECK_OK(ct_event_worker_trigger(w, true)); /* forced: exactly one */
  CHECK_OK(ct_event_worker_trigger(w, false));
  atomic_store(&r.gate, true);
  WAIT_FOR(atomic_load(&r.runs) == 2);
  check_sleep(0.05); /* room for a wrong third run */
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(atomic_load(&r.runs), 2);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static int run_sleepy(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  check_sleep(0.02);
  return note_end(r, atomic_load(&r->started) >= 6 ? CT_WORKER_STOP : CT_WORKER_CONTINUE);
}

static rec_t *run_interval(double interval, double delay, double before) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  rec_t *r = calloc(1, sizeof *r);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.interval = interval;
  o.delay = delay;
  o.delay_before = before;
  ct_worker_t *w = make(sup, CT_WORKER_INTERVAL, run_sleepy, r, &o);
  double t0 = ct_now();
  CHECK_OK(ct_worker_start(w, NULL));
  WAIT_FOR(ct_worker_state(w) == CT_WORKER_STOPPED);
  CHECK_EQ_INT(atomic_load(&r->runs), 6);
  CHECK_EQ_INT(atomic_load(&r->max_in_run), 1);
  CHECK(r->begin[0] >= t0 + before);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  return r;
}

TEST(interval_runs_on_a_grid) {
  rec_t *r = run_interval(0.03, 0, 0);
  for (int i = 1; i < 6; i++) {
    double steps = (r->scheduled[i] - r->scheduled[0]) / 0.03;
    CHECK(fabs(steps - round(steps)) < 1e-6); /* on the grid: no drift */
    CHECK(r->scheduled[i] > r->scheduled[i - 1]);
    CHECK(r->begin[i] >= r->scheduled[i]);
    CHECK(r->begin[i] >= r->end[i - 1]);      /* never overlapping */
  }
  free(r);
}

TEST(interval_overrun_is_followed_at_once) {
  rec_t *r = run_interval(0.005, 0, 0); /* each run takes 0.02 */
  for (int i = 1; i < 6; i++) {
    CHECK(r->begin[i] >= r->end[i - 1]);
    double steps = (r->scheduled[i] - r->scheduled[0]) / 0.005;
    CHECK(fabs(steps - round(steps)) < 1e-6);
    CHECK(r->scheduled[i] <= r->begin[i]);
  }
  free(r);
}

TEST(delay_counts_from_the_end) {
  rec_t *r = run_interval(0, 0.03, 0);
  for (int i = 1; i < 6; i++)
    CHECK(r->begin[i] - r->end[i - 1] >= 0.03 - 1e-3);
  free(r);
}

TEST(delay_before_waits_before_every_run) {
  rec_t *r = run_interval(0, 0.01, 0.02);
  for (int i = 1; i < 6; i++)
    CHECK(r->begin[i] - r->end[i - 1] >= 0.03 - 1e-3);
  free(r);
}

TEST(interval_stop_mid_wait_is_at_once) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  rec_t r = {0};
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.interval = 3600;
  ct_worker_t *w = make(sup, CT_WORKER_INTERVAL, run_record, &r, &o);
  CHECK_OK(ct_worker_start(w, NULL));
  WAIT_FOR(atomic_load(&r.runs) == 1);
  CHECK_OK(ct_event_worker_trigger(w, false)); /* manual trigger */
  WAIT_FOR(atomic_load(&r.runs) == 2);
  CHECK(r.scheduled[1] == 0);
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, 30)); /* far less than an hour */
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static int run_stop_at_once(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  wait_gate(r);
  return note_end(r, CT_WORKER_STOP);
}

TEST(stop_value_runs_once_and_leaves_nothing) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_worker_kind_t kinds[] = {CT_WORKER_BACKGROUND, CT_WORKER_QUEUE, CT_WORKER_EVENT,
                              CT_WORKER_INTERVAL};
  for (int k = 0; k < 4; k++) {
    rec_t r = {0};
    ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
    o.interval = 0.001;
    ct_worker_t *w = make(sup, kinds[k], run_stop_at_once, &r, &o);
    atomic_store(&r.gate, kinds[k] != CT_WORKER_QUEUE);
    CHECK_OK(ct_worker_start(w, NULL));
    if (kinds[k] == CT_WORKER_QUEUE)
      for (int i = 0; i < 3; i++)
        CHECK_OK(ct_queue_worker_put(w, NULL, 100));
    atomic_store(&r.gate, true);
    if (kinds[k] == CT_WORKER_EVENT)
      CHECK_OK(ct_event_worker_trigger(w, false));
    WAIT_FOR(ct_worker_state(w) == CT_WORKER_STOPPED);
    CHECK_EQ_INT(atomic_load(&r.runs), 1);
    CHECK_EQ_INT(atomic_load(&r.dropped), kinds[k] == CT_WORKER_QUEUE ? 2 : 0);
    ct_stats_t s = CT_STATS_INIT;
    WAIT_FOR(ct_supervisor_stats(sup, &s) == 0 && s.running == 0 && s.queued == 0);
    CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
    CHECK(s.threads <= 2);
    CHECK_OK(ct_worker_free(w));
  }
  stop_and_free(sup);
}

static void on_error_count(ct_worker_t *w, const json_t *error, void *data) {
  rec_t *r = data;
  CHECK(w == r->self);
  CHECK_EQ_STR(ct_result_error_class(error), (intptr_t)r->seen_args ? "ValueError" : "WorkerError");
  atomic_fetch_add(&r->errors, 1);
}

static int run_failing_odd(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  note_end(r, 0);
  if ((intptr_t)run->item % 2 == 0)
    return CT_WORKER_CONTINUE;
  if ((intptr_t)run->args)
    return ct_worker_fail(run, ct_error_new("ValueError", "item %d", (int)(intptr_t)run->item));
  return CT_WORKER_FAILED;
}

TEST(on_error_once_per_failure) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  for (intptr_t with_error = 0; with_error < 2; with_error++) {
    rec_t r = {0};
    ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
    o.on_error = on_error_count;
    o.error_data = &r;
    ct_worker_t *w = make(sup, CT_WORKER_QUEUE, run_failing_odd, &r, &o);
    ct_worker_start_opts_t so = CT_WORKER_START_OPTS_INIT;
    so.args = (void *)with_error;
    CHECK_OK(ct_worker_start(w, &so));
    for (intptr_t i = 0; i < 10; i++)
      CHECK_OK(ct_queue_worker_put(w, (void *)i, 100));
    CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
    CHECK_EQ_INT(atomic_load(&r.errors), 5);
    ct_worker_stats_t s = stats_of(w);
    CHECK_EQ_INT(s.runs, 10);
    CHECK_EQ_INT(s.failures, 5);
    CHECK_OK(ct_worker_free(w));
  }
  stop_and_free(sup);
}

static atomic_int logged_errors;
static void count_log(int level, const char *msg, void *data) {
  (void)data;
  if (level == CT_LOG_ERROR && strstr(msg, "ValueError"))
    atomic_fetch_add(&logged_errors, 1);
}

TEST(failure_without_on_error_is_logged) {
  ct_supervisor_opts_t so = CT_SUPERVISOR_OPTS_INIT;
  so.log = count_log;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&so, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  rec_t r = {0};
  ct_worker_t *w = make(sup, CT_WORKER_QUEUE, run_failing_odd, &r, NULL);
  ct_worker_start_opts_t o = CT_WORKER_START_OPTS_INIT;
  o.args = (void *)1;
  CHECK_OK(ct_worker_start(w, &o));
  for (intptr_t i = 0; i < 4; i++)
    CHECK_OK(ct_queue_worker_put(w, (void *)i, 100));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(atomic_load(&logged_errors), 2);
  CHECK_EQ_INT(atomic_load(&r.runs), 4);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static int run_slow_then_mark(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  check_sleep(0.1);
  return note_end(r, CT_WORKER_CONTINUE);
}

TEST(stop_wait_returns_after_current_run) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r = {0};
  ct_worker_t *w = make(sup, CT_WORKER_BACKGROUND, run_slow_then_mark, &r, NULL);
  CHECK_OK(ct_worker_start(w, NULL));
  WAIT_FOR(atomic_load(&r.started) == 1);
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK_EQ_INT(s.running, 0); /* a background worker holds no pool thread */
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(atomic_load(&r.runs), atomic_load(&r.started));
  CHECK_EQ_INT(atomic_load(&r.in_run), 0);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

TEST(force_stop_after_grace_period) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r = {0};
  ct_worker_t *w = make(sup, CT_WORKER_QUEUE, run_gated, &r, NULL);
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_queue_worker_put(w, NULL, 100));
  CHECK_OK(ct_queue_worker_put(w, NULL, 100));
  WAIT_FOR(atomic_load(&r.started) == 1);
  CHECK_EQ_INT(ct_worker_stop(w, CT_WORKER_DRAIN, 0.05), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_FORCE_STOPPED);
  CHECK_EQ_INT(atomic_load(&r.dropped), 1); /* the pending item came back */
  CHECK_EQ_INT(ct_worker_start(w, NULL), CT_EBUSY); /* its run still executes */
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1)); /* already final */
  atomic_store(&r.gate, true);
  ct_stats_t s = CT_STATS_INIT;
  WAIT_FOR(ct_supervisor_stats(sup, &s) == 0 && s.running == 0);
  CHECK_EQ_INT(atomic_load(&r.runs), 1);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_FORCE_STOPPED);
  CHECK_OK(ct_worker_start(w, NULL)); /* a restart is fine now */
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static int run_stop_self(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  r->stop_rc = ct_worker_stop(run->worker, CT_WORKER_DRAIN, -1);
  return note_end(r, CT_WORKER_CONTINUE);
}

/* Start w, an event worker whose one run stops it (from the run, or from
 * its on_error), trigger that run and wait until w has stopped. */
static void run_once_until_stopped(ct_worker_t *w) {
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  WAIT_FOR(ct_worker_state(w) == CT_WORKER_STOPPED);
}

TEST(stop_from_own_run_would_deadlock) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r = {0};
  ct_worker_t *w = make(sup, CT_WORKER_EVENT, run_stop_self, &r, NULL);
  run_once_until_stopped(w);
  CHECK_EQ_INT(r.stop_rc, CT_EDEADLK);
  CHECK_EQ_INT(atomic_load(&r.runs), 1);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static int run_fail(ct_worker_run_t *run) {
  rec_t *r = run->data;
  note_start(r, run);
  return note_end(r, CT_WORKER_FAILED);
}

/* A "stop on the first failure" policy: on_error runs on the thread of the
 * failed run, so a stop that waits from there is the run waiting for itself. */
static void on_error_stop_and_wait(ct_worker_t *w, const json_t *error, void *data) {
  (void)error;
  rec_t *r = data;
  r->stop_rc = ct_worker_stop(w, CT_WORKER_DROP, -1);
  atomic_fetch_add(&r->errors, 1);
}

TEST(stop_from_on_error_would_deadlock) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r = {0};
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.on_error = on_error_stop_and_wait;
  o.error_data = &r;
  ct_worker_t *w = make(sup, CT_WORKER_EVENT, run_fail, &r, &o);
  run_once_until_stopped(w);
  WAIT_FOR(atomic_load(&r.errors) == 1);
  CHECK_EQ_INT(r.stop_rc, CT_EDEADLK);
  CHECK_EQ_INT(atomic_load(&r.runs), 1);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static int run_nothing(ct_worker_run_t *run) {
  (void)run;
  return CT_WORKER_CONTINUE;
}

TEST(bad_input) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_worker_t *w;
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_QUEUE, NULL, NULL, &w), CT_EINVAL);
  CHECK(w == NULL);
  CHECK_EQ_INT(ct_worker_new(sup, (ct_worker_kind_t)9, run_nothing, NULL, &w), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, run_nothing, NULL, &w), CT_EINVAL);
  o.interval = 1;
  o.delay = 1;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, run_nothing, &o, &w), CT_EINVAL);
  o.interval = -1;
  o.delay = 0;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, run_nothing, &o, &w), CT_EINVAL);
  o.interval = NAN;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, run_nothing, &o, &w), CT_EINVAL);
  o.interval = 1;
  o.delay_before = -1;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, run_nothing, &o, &w), CT_EINVAL);
  o.delay_before = 0;
  o.priority = 256;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, run_nothing, &o, &w), CT_EINVAL);
  o.priority = 100;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_INTERVAL, run_nothing, &o, &w));
  CHECK_EQ_INT(ct_event_worker_trigger(w, false), CT_ESHUTDOWN);
  CHECK_EQ_INT(ct_queue_worker_put(w, NULL, 100), CT_EINVAL);
  ct_worker_start_opts_t so = CT_WORKER_START_OPTS_INIT;
  so.interval = 0;
  CHECK_EQ_INT(ct_worker_start(w, &so), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_INIT);
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_EQ_INT(ct_worker_start(w, NULL), CT_EBUSY);
  CHECK_EQ_INT(ct_worker_free(w), CT_EBUSY);
  CHECK_EQ_INT(ct_supervisor_free(sup), CT_EBUSY);
  CHECK_EQ_INT(ct_worker_stop(w, 7, -1), CT_EINVAL);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1)); /* again: harmless */
  CHECK_EQ_INT(ct_event_worker_trigger(w, true), CT_ESHUTDOWN);
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_worker_free(NULL));

  /* A name that is not UTF-8 is refused: accepted, it made every JSON
   * snapshot of the worker, its group and its supervisor NULL. */
  ct_worker_opts_t named = CT_WORKER_OPTS_INIT;
  named.name = "caf\xe9";
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_QUEUE, run_nothing, &named, &w), CT_EINVAL);
  ct_worker_group_opts_t go = CT_WORKER_GROUP_OPTS_INIT;
  go.name = "caf\xe9";
  ct_worker_group_t *g = NULL;
  CHECK_EQ_INT(ct_worker_group_new(&go, &g), CT_EINVAL);
  CHECK(g == NULL);
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, run_nothing, NULL, &w));
  CHECK_EQ_INT(ct_event_worker_trigger(w, false), CT_EINVAL);
  so = (ct_worker_start_opts_t)CT_WORKER_START_OPTS_INIT;
  so.name = "caf\xe9";
  CHECK_EQ_INT(ct_worker_start(w, &so), CT_EINVAL);
  json_t *js = ct_supervisor_stats_json(sup);
  CHECK(js != NULL);
  json_decref(js);
  /* NaN seconds are refused by every kind, also where they are not used */
  static const size_t nan_fields[] = {offsetof(ct_worker_start_opts_t, interval),
                                      offsetof(ct_worker_start_opts_t, delay),
                                      offsetof(ct_worker_start_opts_t, delay_before)};
  for (size_t i = 0; i < sizeof nan_fields / sizeof *nan_fields; i++) {
    so = (ct_worker_start_opts_t)CT_WORKER_START_OPTS_INIT;
    *(double *)((char *)&so + nan_fields[i]) = NAN;
    CHECK_EQ_INT(ct_worker_start(w, &so), CT_EINVAL);
    CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_INIT);
  }
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_EQ_INT(ct_queue_worker_put(w, NULL, -1), CT_EINVAL);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED); /* stopped first */
  CHECK_EQ_INT(ct_worker_start(w, NULL), CT_ESHUTDOWN);
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(restart_with_overrides) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r = {0}, other = {0};
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = "indexer";
  ct_worker_t *w = make(sup, CT_WORKER_EVENT, run_record, &r, &o);
  CHECK_EQ_STR(ct_worker_name(w), "indexer");
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  WAIT_FOR(atomic_load(&r.runs) == 1);
  CHECK(r.seen_data == &r);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  ct_worker_start_opts_t so = CT_WORKER_START_OPTS_INIT;
  so.name = "indexer-2";
  so.priority = CT_PRIORITY_HIGH;
  so.set_data = true;
  so.data = &other;
  so.args = &r;
  CHECK_OK(ct_worker_start(w, &so));
  CHECK_EQ_STR(ct_worker_name(w), "indexer-2");
  CHECK_OK(ct_event_worker_trigger(w, false));
  WAIT_FOR(atomic_load(&other.runs) == 1);
  CHECK(other.seen_args == &r);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_OK(ct_worker_free(w));

  ct_worker_t *a, *b;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, run_nothing, NULL, &a));
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, run_nothing, NULL, &b));
  CHECK(strlen(ct_worker_name(a)) > 0);
  CHECK(strcmp(ct_worker_name(a), ct_worker_name(b)) != 0 ||
        strcmp(ct_worker_name(a), "run_nothing") == 0);
  CHECK_OK(ct_worker_free(a));
  CHECK_OK(ct_worker_free(b));
  stop_and_free(sup);
}

TEST(idle_workers_hold_no_thread_and_show_in_stats) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r = {0};
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.interval = 3600;
  o.delay_before = 3600;
  ct_worker_t *q = make(sup, CT_WORKER_QUEUE, run_record, &r, NULL);
  ct_worker_t *e = make(sup, CT_WORKER_EVENT, run_record, &r, NULL);
  ct_worker_t *i = make(sup, CT_WORKER_INTERVAL, run_record, &r, &o);
  CHECK_OK(ct_worker_start(q, NULL));
  CHECK_OK(ct_worker_start(e, NULL));
  CHECK_OK(ct_worker_start(i, NULL));
  CHECK_OK(ct_queue_worker_put(q, NULL, 100));
  WAIT_FOR(atomic_load(&r.runs) == 1);
  ct_stats_t s = CT_STATS_INIT;
  WAIT_FOR(ct_supervisor_stats(sup, &s) == 0 && s.running == 0);
  json_t *j = ct_supervisor_stats_json(sup);
  json_t *workers = json_object_get(j, "workers");
  CHECK_EQ_INT(json_array_size(workers), 3);
  json_t *wq = NULL;
  size_t idx;
  json_t *it;
  json_array_foreach(workers, idx, it) if (strcmp(json_string_value(json_object_get(it, "kind")), "queue") == 0) wq = it;
  CHECK(wq);
  CHECK_EQ_INT(json_integer_value(json_object_get(wq, "runs")), 1);
  CHECK_EQ_STR(json_string_value(json_object_get(wq, "state")), "running");
  json_decref(j);
  /* the supervisor stops its workers first */
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(ct_worker_state(q), CT_WORKER_STOPPED);
  CHECK_EQ_INT(ct_worker_state(e), CT_WORKER_STOPPED);
  CHECK_EQ_INT(ct_worker_state(i), CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_free(q));
  CHECK_OK(ct_worker_free(e));
  CHECK_OK(ct_worker_free(i));
  CHECK_OK(ct_supervisor_free(sup));
}

int main(void) {
  RUN(queue_fifo_order);
  RUN(priority_queue_order_after_busy_run);
  RUN(queue_bound_and_drop_hands_back);
  RUN(event_triggers_before_start_merge);
  RUN(event_forced_trigger_reruns_once);
  RUN(interval_runs_on_a_grid);
  RUN(interval_overrun_is_followed_at_once);
  RUN(delay_counts_from_the_end);
  RUN(delay_before_waits_before_every_run);
  RUN(interval_stop_mid_wait_is_at_once);
  RUN(stop_value_runs_once_and_leaves_nothing);
  RUN(on_error_once_per_failure);
  RUN(failure_without_on_error_is_logged);
  RUN(stop_wait_returns_after_current_run);
  RUN(force_stop_after_grace_period);
  RUN(stop_from_own_run_would_deadlock);
  RUN(stop_from_on_error_would_deadlock);
  RUN(bad_input);
  RUN(restart_with_overrides);
  RUN(idle_workers_hold_no_thread_and_show_in_stats);
  return check_done();
}
