/* The supervisor: options, life cycle, stop modes and waits, the default
 * supervisor, and what a stopping supervisor refuses. */
#include <ev.h>
#include <math.h>

#include "gate.h"

static json_t *noop(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

static int new_with(ct_supervisor_opts_t *o) {
  ct_supervisor_t *sup = NULL;
  int rc = ct_supervisor_new(o, &sup);
  if (rc == 0)
    CHECK_OK(ct_supervisor_free(sup));
  else
    CHECK(sup == NULL);
  return rc;
}

TEST(options_validation) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  CHECK_OK(new_with(NULL));
  CHECK_OK(new_with(&o));
  CHECK_EQ_INT(ct_supervisor_new(&o, NULL), CT_EINVAL);

  int *sizes[] = {&o.pool_size, &o.reserve_normal, &o.reserve_high, &o.min_threads};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    ct_supervisor_opts_t d = CT_SUPERVISOR_OPTS_INIT;
    o = d;
    *sizes[i] = -1;
    CHECK_EQ_INT(new_with(&o), CT_EINVAL);
    if (i < 3) { /* the pool and its reservations: 65536 at the most */
      *sizes[i] = 65537;
      CHECK_EQ_INT(new_with(&o), CT_EINVAL);
      *sizes[i] = 65536;
      CHECK_OK(new_with(&o));
    }
  }
  double *times[] = {&o.keepalive, &o.timeout_warning, &o.timeout_critical, &o.idle_spin};
  double bad[] = {-1.0, NAN}; /* INFINITY is "no bound": test-seconds */
  for (size_t i = 0; i < sizeof times / sizeof *times; i++)
    for (size_t j = 0; j < sizeof bad / sizeof *bad; j++) {
      ct_supervisor_opts_t d = CT_SUPERVISOR_OPTS_INIT;
      o = d;
      *times[i] = bad[j];
      CHECK_EQ_INT(new_with(&o), CT_EINVAL);
    }

  /* A pool thread spins a millisecond at the most. */
  ct_supervisor_opts_t spin = CT_SUPERVISOR_OPTS_INIT;
  o = spin;
  o.idle_spin = 0.001;
  CHECK_OK(new_with(&o));
  o.idle_spin = 0.0011;
  CHECK_EQ_INT(new_with(&o), CT_EINVAL);

  /* min_threads may reach the HIGH cap, not pass it. */
  ct_supervisor_opts_t d = CT_SUPERVISOR_OPTS_INIT;
  o = d;
  o.pool_size = 2;
  o.reserve_normal = 1;
  o.reserve_high = 1;
  o.min_threads = 4;
  CHECK_OK(new_with(&o));
  o.min_threads = 5;
  CHECK_EQ_INT(new_with(&o), CT_EINVAL);

  o = d;
  o.size = 0;
  CHECK_EQ_INT(new_with(&o), CT_EINVAL);
  o.size = sizeof o + 8;
  CHECK_EQ_INT(new_with(&o), CT_EINVAL);
  o.size = 7;
  CHECK_EQ_INT(new_with(&o), CT_EINVAL);
}

TEST(life_cycle) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_EQ_INT(ct_background_task(sup, noop, NULL, NULL, NULL), CT_ESHUTDOWN);
  CHECK_OK(ct_supervisor_start(sup));
  CHECK_EQ_INT(ct_supervisor_start(sup), CT_EBUSY);
  CHECK_EQ_INT(ct_supervisor_free(sup), CT_EBUSY);
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, noop, NULL, NULL, &t));
  CHECK_OK(ct_task_wait(t, -1));
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1)); /* double stop */
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, 0));
  CHECK_EQ_INT(ct_supervisor_start(sup), CT_ESHUTDOWN);
  CHECK_EQ_INT(ct_background_task(sup, noop, NULL, NULL, NULL), CT_ESHUTDOWN);
  CHECK_OK(ct_supervisor_free(sup));

  /* Never started: stop is harmless, free works, and so does free alone. */
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_free(sup));
  CHECK_OK(ct_supervisor_free(NULL));

  CHECK_EQ_INT(ct_supervisor_start(NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_supervisor_stop(NULL, CT_STOP_DRAIN, 0), CT_EINVAL);
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_EQ_INT(ct_supervisor_stop(sup, 7, 0), CT_EINVAL);
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_DRAIN, NAN), CT_EINVAL);
  CHECK_OK(ct_supervisor_free(sup));
}

/* A task that counts its callback and records whether it ran. */
typedef struct {
  counter_t *callbacks;
  int ran;
  int status_in_callback;
  pthread_t callback_thread;
} tracked_t;

static json_t *tracked_fn(ct_task_t *self, void *arg) {
  (void)self;
  ((tracked_t *)arg)->ran++;
  return json_true();
}

static void tracked_done(ct_task_t *task, void *data) {
  tracked_t *tr = data;
  tr->status_in_callback = ct_task_status(task);
  tr->callback_thread = pthread_self();
  counter_add(tr->callbacks, 1);
}

static ct_task_t *submit_tracked(ct_supervisor_t *sup, tracked_t *tr, double delay) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.on_done = tracked_done;
  o.done_data = tr;
  o.delay = delay;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, tracked_fn, tr, &o, &t));
  return t;
}

enum { QUEUED_N = 5 };

static void stop_mode_case(int mode) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  counter_t callbacks;
  counter_init(&callbacks);
  ct_task_t *blocker = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  tracked_t tr[QUEUED_N + 1] = {{0}};
  ct_task_t *t[QUEUED_N + 1];
  for (int i = 0; i < QUEUED_N; i++) {
    tr[i].callbacks = &callbacks;
    t[i] = submit_tracked(sup, &tr[i], 0);
  }
  tr[QUEUED_N].callbacks = &callbacks;
  t[QUEUED_N] = submit_tracked(sup, &tr[QUEUED_N], 3600); /* delayed */
  CHECK_EQ_INT(ct_task_status(t[0]), CT_TASK_QUEUED);

  CHECK_OK(ct_supervisor_stop(sup, mode, 0));
  CHECK_EQ_INT(ct_background_task(sup, noop, NULL, NULL, NULL), CT_ESHUTDOWN);
  if (mode == CT_STOP_CANCEL) {
    /* Canceled before stop() returned, callbacks on this thread. */
    for (int i = 0; i < QUEUED_N; i++) {
      CHECK_EQ_INT(ct_task_status(t[i]), CT_TASK_CANCELED);
      CHECK(pthread_equal(tr[i].callback_thread, pthread_self()));
    }
    CHECK(counter_get(&callbacks) >= QUEUED_N);
  }
  CHECK_EQ_INT(ct_task_status(blocker), CT_TASK_STARTED);
  gate_open(&gate);
  CHECK_OK(ct_supervisor_stop(sup, mode, -1));
  CHECK_EQ_INT(ct_task_status(blocker), CT_TASK_COMPLETED);
  for (int i = 0; i < QUEUED_N; i++) {
    CHECK_EQ_INT(ct_task_status(t[i]), mode == CT_STOP_DRAIN ? CT_TASK_COMPLETED : CT_TASK_CANCELED);
    CHECK_EQ_INT(tr[i].status_in_callback, ct_task_status(t[i]));
    CHECK_EQ_INT(tr[i].ran, mode == CT_STOP_DRAIN);
  }
  /* A delayed task is canceled in both modes. */
  CHECK_EQ_INT(ct_task_status(t[QUEUED_N]), CT_TASK_CANCELED);
  CHECK_EQ_INT(tr[QUEUED_N].ran, 0);
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t[QUEUED_N])), "CancelledError");
  CHECK_EQ_INT(counter_get(&callbacks), QUEUED_N + 1);
  for (int i = 0; i <= QUEUED_N; i++)
    ct_task_unref(t[i]);
  ct_task_unref(blocker);
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  CHECK_OK(ct_supervisor_free(sup));
  counter_destroy(&callbacks);
  gate_destroy(&gate);
}

TEST(stop_drain) { stop_mode_case(CT_STOP_DRAIN); }
TEST(stop_cancel) { stop_mode_case(CT_STOP_CANCEL); }

TEST(stop_bounded_wait_times_out_while_a_task_runs) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_background_task(sup, gate_task, &gate, NULL, NULL);
  gate_wait_arrived(&gate, 1);
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0.05), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_supervisor_free(sup), CT_EBUSY);
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_CANCEL, 0.01), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_supervisor_start(sup), CT_ESHUTDOWN);
  gate_open(&gate);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 60));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0.01));
  CHECK_OK(ct_supervisor_free(sup));
  gate_destroy(&gate);
}

/* Stop with wait from the supervisor's own threads. */
typedef struct {
  ct_supervisor_t *sup;
  int wait_rc, nowait_rc;
} self_stop_t;

static json_t *stop_from_task(ct_task_t *self, void *arg) {
  (void)self;
  self_stop_t *s = arg;
  s->wait_rc = ct_supervisor_stop(s->sup, CT_STOP_DRAIN, -1);
  s->nowait_rc = ct_supervisor_stop(s->sup, CT_STOP_DRAIN, 0);
  return NULL;
}

static void stop_from_callback(ct_task_t *task, void *data) {
  (void)task;
  self_stop_t *s = data;
  s->wait_rc = ct_supervisor_stop(s->sup, CT_STOP_DRAIN, 1);
  s->nowait_rc = ct_supervisor_stop(s->sup, CT_STOP_DRAIN, 0);
}

TEST(stop_with_wait_from_a_task_is_edeadlk) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  self_stop_t s = {sup, 1, 1};
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, stop_from_task, &s, NULL, &t));
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(s.wait_rc, CT_EDEADLK);
  CHECK_EQ_INT(s.nowait_rc, 0);
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

static void stop_from_callback_case(double delay) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  self_stop_t s = {sup, 1, 1};
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.on_done = stop_from_callback;
  o.done_data = &s;
  o.delay = delay;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, noop, NULL, &o, &t));
  if (delay > 0) /* the stop cancels it on the loop thread */
    CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(s.wait_rc, CT_EDEADLK);
  CHECK_EQ_INT(s.nowait_rc, 0);
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(stop_with_wait_from_a_pool_callback_is_edeadlk) { stop_from_callback_case(0); }
TEST(stop_with_wait_from_a_loop_callback_is_edeadlk) { stop_from_callback_case(3600); }

/* A queued task canceled by stop(CANCEL) runs its callback on the stopping
 * thread; waiting for the stop there would wait for itself. */
TEST(stop_with_wait_from_a_callback_run_by_stop_is_edeadlk) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_background_task(sup, gate_task, &gate, NULL, NULL);
  gate_wait_arrived(&gate, 1);
  self_stop_t s = {sup, 1, 1};
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.on_done = stop_from_callback;
  o.done_data = &s;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, noop, NULL, &o, &t));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, 0));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  CHECK_EQ_INT(s.wait_rc, CT_EDEADLK);
  CHECK_EQ_INT(s.nowait_rc, 0);
  gate_open(&gate);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, -1));
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_free(sup));
  gate_destroy(&gate);
}

/* Callbacks that submit while the supervisor stops. */
typedef struct {
  ct_supervisor_t *sup;
  counter_t callbacks;
  int refused, accepted;
  pthread_mutex_t m;
} resubmit_t;

static void resubmit_done(ct_task_t *task, void *data) {
  (void)task;
  resubmit_t *r = data;
  int rc = ct_background_task(r->sup, noop, NULL, NULL, NULL);
  pthread_mutex_lock(&r->m);
  if (rc == CT_ESHUTDOWN)
    r->refused++;
  else if (rc == 0)
    r->accepted++;
  pthread_mutex_unlock(&r->m);
  counter_add(&r->callbacks, 1);
}

static void submit_from_callback_case(int mode) {
  enum { N = 20 };
  resubmit_t r = {.sup = start_supervisor(1, 0, 0)};
  counter_init(&r.callbacks);
  pthread_mutex_init(&r.m, NULL);
  gate_t gate;
  gate_init(&gate);
  ct_background_task(r.sup, gate_task, &gate, NULL, NULL);
  gate_wait_arrived(&gate, 1);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.on_done = resubmit_done;
  o.done_data = &r;
  ct_task_t *t[N];
  for (int i = 0; i < N; i++)
    CHECK_OK(ct_background_task(r.sup, noop, NULL, &o, &t[i]));
  CHECK_OK(ct_supervisor_stop(r.sup, mode, 0));
  gate_open(&gate);
  CHECK_OK(ct_supervisor_stop(r.sup, mode, -1));
  CHECK_EQ_INT(counter_get(&r.callbacks), N);
  CHECK_EQ_INT(r.refused, N);
  CHECK_EQ_INT(r.accepted, 0);
  for (int i = 0; i < N; i++) {
    CHECK_EQ_INT(ct_task_status(t[i]), mode == CT_STOP_DRAIN ? CT_TASK_COMPLETED : CT_TASK_CANCELED);
    ct_task_unref(t[i]);
  }
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(r.sup, &st));
  CHECK_EQ_INT(st.submitted, N + 1);
  CHECK_EQ_INT(st.completed + st.failed + st.canceled, N + 1);
  CHECK_OK(ct_supervisor_free(r.sup));
  gate_destroy(&gate);
  pthread_mutex_destroy(&r.m);
  counter_destroy(&r.callbacks);
}

TEST(submit_from_callback_during_drain_stop) { submit_from_callback_case(CT_STOP_DRAIN); }
TEST(submit_from_callback_during_cancel_stop) { submit_from_callback_case(CT_STOP_CANCEL); }

/* Queued work submitted before any pool thread exists still drains. */
TEST(drain_without_min_threads) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  counter_t callbacks;
  counter_init(&callbacks);
  tracked_t tr[QUEUED_N] = {{0}};
  for (int i = 0; i < QUEUED_N; i++) {
    tr[i].callbacks = &callbacks;
    ct_task_unref(submit_tracked(sup, &tr[i], 0));
  }
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(counter_get(&callbacks), QUEUED_N);
  for (int i = 0; i < QUEUED_N; i++)
    CHECK_EQ_INT(tr[i].ran, 1);
  CHECK_OK(ct_supervisor_free(sup));
  counter_destroy(&callbacks);
}

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return json_integer(42);
}

TEST(default_supervisor) {
  CHECK(ct_supervisor_default() == NULL);
  CHECK_EQ_INT(ct_background_task(NULL, answer, NULL, NULL, NULL), CT_EINVAL);
  ct_task_t *t = (ct_task_t *)1;
  CHECK_EQ_INT(ct_supervisor_get_task(NULL, 1, &t), CT_EINVAL);
  CHECK(t == NULL);
  CHECK_EQ_INT(ct_supervisor_registry_size(NULL), 0);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_EQ_INT(ct_supervisor_stats(NULL, &st), CT_EINVAL);
  CHECK(ct_supervisor_stats_json(NULL) == NULL);
  CHECK_EQ_INT(ct_default_stop(CT_STOP_DRAIN, -1), CT_ENOENT);

  ct_supervisor_opts_t bad = CT_SUPERVISOR_OPTS_INIT;
  bad.pool_size = -3;
  CHECK_EQ_INT(ct_default_start(&bad), CT_EINVAL);
  CHECK(ct_supervisor_default() == NULL);

  CHECK_OK(ct_default_start(NULL));
  CHECK(ct_supervisor_default() != NULL);
  CHECK_EQ_INT(ct_default_start(NULL), CT_EBUSY);
  CHECK_OK(ct_background_task(NULL, answer, NULL, NULL, &t));
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(json_integer_value(ct_task_result(t)), 42);
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_stats(NULL, &st));
  CHECK_EQ_INT(st.submitted, 1);
  json_t *js = ct_supervisor_stats_json(NULL);
  CHECK(js != NULL);
  json_decref(js);
  CHECK_OK(ct_default_stop(CT_STOP_DRAIN, -1));
  CHECK(ct_supervisor_default() == NULL);
  CHECK_EQ_INT(ct_background_task(NULL, answer, NULL, NULL, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_default_stop(CT_STOP_DRAIN, -1), CT_ENOENT);

  /* Start again after a stop: a fresh default. */
  CHECK_OK(ct_default_start(NULL));
  CHECK_OK(ct_default_stop(CT_STOP_CANCEL, -1));
}

/* A default stop that times out keeps the default reachable. */
TEST(default_stop_timeout_keeps_it_installed) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 1;
  CHECK_OK(ct_default_start(&o));
  gate_t gate;
  gate_init(&gate);
  CHECK_OK(ct_background_task(NULL, gate_task, &gate, NULL, NULL));
  gate_wait_arrived(&gate, 1);
  CHECK_EQ_INT(ct_default_stop(CT_STOP_DRAIN, 0.02), CT_ETIMEDOUT);
  CHECK(ct_supervisor_default() != NULL);
  CHECK_EQ_INT(ct_background_task(NULL, noop, NULL, NULL, NULL), CT_ESHUTDOWN);
  gate_open(&gate);
  CHECK_OK(ct_default_stop(CT_STOP_DRAIN, -1));
  CHECK(ct_supervisor_default() == NULL);
  gate_destroy(&gate);
}

/* A default stop whose free is refused (a worker still exists) keeps the
 * default reachable: it was lost, and leaked. */
static int no_run(ct_worker_run_t *run) {
  (void)run;
  return CT_WORKER_CONTINUE;
}

TEST(default_stop_refused_by_a_worker_keeps_it_installed) {
  CHECK_OK(ct_default_start(NULL));
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(NULL, CT_WORKER_QUEUE, no_run, NULL, &w));
  CHECK_EQ_INT(ct_default_stop(CT_STOP_DRAIN, -1), CT_EBUSY);
  CHECK(ct_supervisor_default() != NULL);
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_default_stop(CT_STOP_DRAIN, -1));
  CHECK(ct_supervisor_default() == NULL);
}

/* A supervisor stopped before it started never runs its loop: a call to it
 * is refused, not accepted to be dropped unrun. */
static void count_call(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  ++*(int *)data;
}

TEST(a_loop_call_to_a_supervisor_stopped_before_it_started_is_refused) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  int calls = 0;
  CHECK_EQ_INT(ct_loop_call(ct_supervisor_loop(sup), count_call, &calls), CT_ESHUTDOWN);
  CHECK_OK(ct_supervisor_free(sup));
  CHECK_EQ_INT(calls, 0);
}

/* A cancel on another thread that has claimed a task and is still finishing
 * it (its callback, its arg_free, the handle table) is waited for by a stop:
 * the stop returned with the task still registered and its arg not freed,
 * and a free then left the canceling thread a freed supervisor. */
typedef struct {
  gate_t in_callback; /* the canceling thread waits here, in on_done */
  atomic_int freed;
  ct_task_t *task;
} held_cancel_t;

static void hold_in_callback(ct_task_t *t, void *data) {
  (void)t;
  gate_pass(&((held_cancel_t *)data)->in_callback);
}

static void count_free(void *arg) { atomic_fetch_add(&((held_cancel_t *)arg)->freed, 1); }

static void *cancel_task(void *arg) {
  CHECK_OK(ct_task_cancel(((held_cancel_t *)arg)->task));
  return NULL;
}

static void stop_waits_for_a_cancel_case(double delay) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t busy;
  gate_init(&busy);
  CHECK_OK(ct_background_task(sup, gate_task, &busy, NULL, NULL));
  gate_wait_arrived(&busy, 1);
  held_cancel_t h = {.freed = 0};
  gate_init(&h.in_callback);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.on_done = hold_in_callback;
  o.done_data = &h;
  o.arg_free = count_free;
  o.delay = delay;
  CHECK_OK(ct_background_task(sup, noop, &h, &o, &h.task)); /* queued, or delayed */
  pthread_t canceler;
  CHECK_OK(pthread_create(&canceler, NULL, cancel_task, &h));
  gate_wait_arrived(&h.in_callback, 1);
  gate_open(&busy);
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0.2), CT_ETIMEDOUT);
  gate_open(&h.in_callback);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  CHECK_EQ_INT(atomic_load(&h.freed), 1);
  CHECK_OK(pthread_join(canceler, NULL));
  CHECK_EQ_INT(ct_task_status(h.task), CT_TASK_CANCELED);
  ct_task_unref(h.task);
  CHECK_OK(ct_supervisor_free(sup));
  gate_destroy(&h.in_callback);
  gate_destroy(&busy);
}

TEST(a_stop_waits_for_a_cancel_finishing_a_queued_task) { stop_waits_for_a_cancel_case(0); }
TEST(a_stop_waits_for_a_cancel_finishing_a_delayed_task) { stop_waits_for_a_cancel_case(3600); }

/* A delayed task whose delay passes while the supervisor's loop is busy
 * (in a timer's callback), after a DRAIN stop has begun, is canceled (its
 * start lies past the stop): it ran, as libev called its timer before the
 * stop's check. */
static ev_timer busy_timer;

static void wait_at_gate(struct ev_loop *ev, ev_timer *timer, int revents) {
  (void)ev;
  (void)revents;
  gate_pass(timer->data);
}

static void start_busy_timer(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ev_timer_init(&busy_timer, wait_at_gate, 0, 0);
  busy_timer.data = data;
  ev_timer_start(ev, &busy_timer);
}

static atomic_int late_ran;

static json_t *mark_ran(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  atomic_store(&late_ran, 1);
  return NULL;
}

typedef struct {
  ct_supervisor_t *sup;
  int rc;
} stopper_t;

static void *stop_draining(void *arg) {
  stopper_t *s = arg;
  s->rc = ct_supervisor_stop(s->sup, CT_STOP_DRAIN, -1);
  return NULL;
}

TEST(a_delay_that_passes_while_a_drain_stop_waits_for_the_loop_is_canceled) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.delay = 0.02;
  ct_task_t *t;
  double submitted = ct_now();
  CHECK_OK(ct_background_task(sup, mark_ran, NULL, &o, &t)); /* its timer is set first */
  gate_t busy;
  gate_init(&busy);
  CHECK_OK(ct_loop_call(ct_supervisor_loop(sup), start_busy_timer, &busy));
  gate_wait_arrived(&busy, 1);
  stopper_t s = {sup, -1};
  pthread_t stopper;
  CHECK_OK(pthread_create(&stopper, NULL, stop_draining, &s));
  WAIT_FOR(ct_background_task(sup, noop, NULL, NULL, NULL) == CT_ESHUTDOWN); /* it has begun */
  while (ct_now() < submitted + 0.1)
    check_sleep(0.01); /* the delay is well past */
  gate_open(&busy);
  CHECK_OK(pthread_join(stopper, NULL));
  CHECK_OK(s.rc);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  CHECK_EQ_INT(atomic_load(&late_ran), 0);
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_free(sup));
  gate_destroy(&busy);
}

int main(void) {
  RUN(default_stop_refused_by_a_worker_keeps_it_installed);
  RUN(a_loop_call_to_a_supervisor_stopped_before_it_started_is_refused);
  RUN(a_stop_waits_for_a_cancel_finishing_a_queued_task);
  RUN(a_stop_waits_for_a_cancel_finishing_a_delayed_task);
  RUN(a_delay_that_passes_while_a_drain_stop_waits_for_the_loop_is_canceled);
  RUN(options_validation);
  RUN(life_cycle);
  RUN(stop_drain);
  RUN(stop_cancel);
  RUN(stop_bounded_wait_times_out_while_a_task_runs);
  RUN(stop_with_wait_from_a_task_is_edeadlk);
  RUN(stop_with_wait_from_a_pool_callback_is_edeadlk);
  RUN(stop_with_wait_from_a_loop_callback_is_edeadlk);
  RUN(stop_with_wait_from_a_callback_run_by_stop_is_edeadlk);
  RUN(submit_from_callback_during_drain_stop);
  RUN(submit_from_callback_during_cancel_stop);
  RUN(drain_without_min_threads);
  RUN(default_supervisor);
  RUN(default_stop_timeout_keeps_it_installed);
  return check_done();
}
