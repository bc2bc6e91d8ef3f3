/* Loop handlers (ct_broker_register_loop()) against a real redis-server:
 * a handler runs on its loop's thread (a named extra loop, or the default
 * one), completes at once or later from a watcher of its own, and its
 * outcomes are a thread handler's (result, error retried, Reject, Retry,
 * NotSerializable); a deferred run holds a worker slot until it completes,
 * sees its cancel when its timeout passes or its lease is lost (its late
 * completion dropped), is waited for by a stop, and fails with
 * LoopUnavailable when its loop ends (so that a supervisor's stop ends
 * too); bad registrations are refused.
 * Order and counts only; every wait has a generous bound. */
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"

/* The thread a handler is expected on: its loop's, learnt by a call. */
typedef struct {
  ct_loop_t *loop;
  pthread_t thread;
  atomic_bool known;
} where_t;

static atomic_int runs, started, saw_cancel, off_loop, in_flight, max_in_flight, completions;

static void note_thread(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  where_t *w = data;
  w->thread = pthread_self();
  atomic_store(&w->known, true);
}

static void where_init(where_t *w, ct_loop_t *loop) {
  w->loop = loop;
  atomic_store(&w->known, false);
  CHECK_OK(ct_loop_call(loop, note_thread, w));
  WAIT_FOR(atomic_load(&w->known));
}

static void check_thread(const where_t *w) {
  if (!pthread_equal(pthread_self(), w->thread))
    atomic_fetch_add(&off_loop, 1);
}

/* At once: {"a": kwargs a}. */
static void echo(ct_broker_run_t *run, struct ev_loop *ev, const json_t *kwargs, void *data) {
  (void)ev;
  check_thread(data);
  atomic_fetch_add(&runs, 1);
  ct_broker_run_complete(run, json_pack("{s:O}", "a", json_object_get(kwargs, "a")));
}

/* At once: fails (with kwargs "outcome" as the class) while runs <= "fail". */
static void flaky(ct_broker_run_t *run, struct ev_loop *ev, const json_t *kwargs, void *data) {
  (void)ev;
  check_thread(data);
  int n = atomic_fetch_add(&runs, 1) + 1;
  const char *cls = json_string_value(json_object_get(kwargs, "outcome"));
  if (n <= json_integer_value(json_object_get(kwargs, "fail")))
    ct_broker_run_complete(run, ct_error_new(cls ? cls : "ValueError", "run %d fails", n));
  else
    ct_broker_run_complete(run, json_string("ok"));
}

static void unwritable(ct_broker_run_t *run, struct ev_loop *ev, const json_t *kwargs,
                       void *data) {
  (void)ev;
  (void)kwargs;
  check_thread(data);
  ct_broker_run_complete(run, json_string_nocheck("\xff\xfe")); /* not UTF-8 */
}

/* A deferred run: a timer of its own on the loop completes it. */
typedef struct {
  ev_timer timer;
  ct_broker_run_t *run;
  const where_t *where;
  json_t *tag;
} later_t;

static void later_fire(struct ev_loop *ev, ev_timer *t, int revents) {
  (void)ev;
  (void)revents;
  later_t *l = t->data;
  check_thread(l->where);
  atomic_fetch_sub(&in_flight, 1);
  atomic_fetch_add(&completions, 1);
  ct_broker_run_complete(l->run, json_pack("{s:o,s:b}", "tag", l->tag, "canceled",
                                           ct_broker_run_canceled(l->run)));
  free(l);
}

/* Completes kwargs "after" seconds later with {"tag": kwargs tag}. */
static void later(ct_broker_run_t *run, struct ev_loop *ev, const json_t *kwargs, void *data) {
  check_thread(data);
  atomic_fetch_add(&started, 1);
  int n = atomic_fetch_add(&in_flight, 1) + 1;
  for (int m = atomic_load(&max_in_flight); n > m;)
    if (atomic_compare_exchange_weak(&max_in_flight, &m, n))
      break;
  later_t *l = calloc(1, sizeof *l);
  CHECK(l);
  l->run = run;
  l->where = data;
  l->tag = json_deep_copy(json_object_get(kwargs, "tag"));
  ev_timer_init(&l->timer, later_fire, json_number_value(json_object_get(kwargs, "after")), 0);
  l->timer.data = l;
  ev_timer_start(ev, &l->timer);
}

/* A run that waits until it is asked to cancel (its safety timer: 20 s);
 * then it completes with "late", which must be dropped. */
static void stop_waiting(ct_broker_run_t *run, struct ev_loop *ev, void *data) {
  later_t *l = data;
  check_thread(l->where);
  if (ct_broker_run_canceled(run))
    atomic_fetch_add(&saw_cancel, 1);
  ev_timer_stop(ev, &l->timer);
  ct_broker_run_complete(run, json_string("late"));
  free(l);
}

static void waited_too_long(struct ev_loop *ev, ev_timer *t, int revents) {
  (void)revents;
  later_t *l = t->data;
  ct_broker_run_on_cancel(l->run, NULL, NULL);
  stop_waiting(l->run, ev, l);
}

static void until_canceled(ct_broker_run_t *run, struct ev_loop *ev, const json_t *kwargs,
                           void *data) {
  (void)kwargs;
  check_thread(data);
  atomic_fetch_add(&started, 1);
  later_t *l = calloc(1, sizeof *l);
  CHECK(l);
  l->run = run;
  l->where = data;
  ev_timer_init(&l->timer, waited_too_long, 20, 0);
  l->timer.data = l;
  ev_timer_start(ev, &l->timer);
  ct_broker_run_on_cancel(run, stop_waiting, l);
}

/* A run completed only by open_gate(), a call on its loop. */
static ct_broker_run_t *gated_run;

static void gated(ct_broker_run_t *run, struct ev_loop *ev, const json_t *kwargs, void *data) {
  (void)ev;
  (void)kwargs;
  check_thread(data);
  gated_run = run; /* the loop thread's; open_gate() runs there too */
  atomic_fetch_add(&started, 1);
}

static void open_gate(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  (void)data;
  ct_broker_run_complete(gated_run, json_string("opened"));
  gated_run = NULL;
}

/* A run never completed: its loop ends under it. Its timer is static, as
 * nothing runs it again. */
static ev_timer stuck_timer;

static void stuck_fire(struct ev_loop *ev, ev_timer *t, int revents) {
  (void)ev;
  (void)t;
  (void)revents;
}

static void stuck(ct_broker_run_t *run, struct ev_loop *ev, const json_t *kwargs, void *data) {
  (void)run;
  (void)kwargs;
  check_thread(data);
  ev_timer_init(&stuck_timer, stuck_fire, 60, 0);
  ev_timer_start(ev, &stuck_timer);
  atomic_fetch_add(&started, 1);
}

static json_t *thread_handler(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  return json_null();
}

typedef struct {
  test_redis_t r;
  ct_supervisor_t *sup;
  ct_broker_t *b;
  ct_loop_t *io;
  where_t at_io, at_default;
} env_t;

static void env_start(env_t *e) {
  memset(e, 0, sizeof *e);
  atomic_store(&runs, 0);
  atomic_store(&started, 0);
  atomic_store(&saw_cancel, 0);
  atomic_store(&off_loop, 0);
  atomic_store(&in_flight, 0);
  atomic_store(&max_in_flight, 0);
  atomic_store(&completions, 0);
  test_redis_start(&e->r, NULL);
  e->sup = test_sup_start();
  CHECK_OK(ct_loop_create(e->sup, "io", &e->io));
  where_init(&e->at_io, e->io);
  where_init(&e->at_default, ct_supervisor_loop(e->sup));
  e->b = test_broker_open(e->sup, e->r.url, 10, NULL);
}

static void env_end(env_t *e) {
  ct_broker_free(e->b);
  test_sup_end(e->sup);
  test_redis_stop(&e->r);
  CHECK_EQ_INT(atomic_load(&off_loop), 0);
}

TEST(registration_checks_its_input_and_closes_at_start) {
  env_t e;
  env_start(&e);
  CHECK_EQ_INT(ct_broker_register_loop(NULL, "echo", "io", echo, &e.at_io), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register_loop(e.b, "echo", "io", NULL, &e.at_io), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register_loop(e.b, NULL, "io", echo, &e.at_io), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register_loop(e.b, "a\tb", "io", echo, &e.at_io), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register_loop(e.b, "echo", "no-such-loop", echo, &e.at_io),
               CT_ENOENT);
  CHECK_OK(ct_broker_register(e.b, "thread", thread_handler, NULL));
  CHECK_EQ_INT(ct_broker_register_loop(e.b, "thread", "io", echo, &e.at_io), CT_EBUSY);
  CHECK_OK(ct_broker_register_loop(e.b, "echo", "io", echo, &e.at_io));
  CHECK_EQ_INT(ct_broker_register_loop(e.b, "echo", NULL, echo, &e.at_default), CT_EBUSY);
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  CHECK_EQ_INT(ct_broker_register_loop(e.b, "late", "io", echo, &e.at_io), CT_EBUSY);
  json_t *kw = json_pack("{s:i}", "a", 7), *res = NULL;
  CHECK_OK(ct_broker_call(e.b, "echo", kw, NULL, 60, &res));
  json_decref(kw);
  CHECK_EQ_INT(json_integer_value(json_object_get(res, "a")), 7);
  json_decref(res);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  env_end(&e);
  ct_broker_run_complete(NULL, json_string("dropped")); /* no run: nothing leaks */
  CHECK(!ct_broker_run_canceled(NULL));
}

TEST(loop_handlers_run_on_their_loop_and_store_a_thread_handlers_outcomes) {
  env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register_loop(e.b, "echo", "io", echo, &e.at_io));
  CHECK_OK(ct_broker_register_loop(e.b, "echo-default", NULL, echo, &e.at_default));
  CHECK_OK(ct_broker_register_loop(e.b, "flaky", "io", flaky, &e.at_io));
  CHECK_OK(ct_broker_register_loop(e.b, "unwritable", "io", unwritable, &e.at_io));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  json_t *kw = json_pack("{s:i}", "a", 41), *res = NULL;
  CHECK_OK(ct_broker_call(e.b, "echo", kw, NULL, 60, &res));
  CHECK_EQ_INT(json_integer_value(json_object_get(res, "a")), 41);
  json_decref(res);
  CHECK_OK(ct_broker_call(e.b, "echo-default", kw, NULL, 60, &res));
  CHECK_EQ_INT(json_integer_value(json_object_get(res, "a")), 41);
  json_decref(res);
  json_decref(kw);
  CHECK_EQ_INT(atomic_load(&runs), 2);

  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "unwritable", NULL, NULL, id);
  test_broker_wait_failed(e.b, id, 30, "NotSerializable");

  /* An error is retried per max_attempts; a Reject fails at once; a Retry
   * comes back without the backoff. */
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_attempts = 3;
  so.backoff = 0.05;
  atomic_store(&runs, 0);
  test_broker_submit(e.b, "flaky", json_pack("{s:i}", "fail", 1), &so, id);
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_INT(info.attempts, 2);
  CHECK_EQ_STR(json_string_value(info.result), "ok");
  json_decref(info.result);
  atomic_store(&runs, 0);
  test_broker_submit(e.b, "flaky", json_pack("{s:i,s:s}", "fail", 9, "outcome", CT_BROKER_REJECT),
                     &so, id);
  info = test_broker_wait_done(e.b, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK_EQ_INT(info.attempts, 1);
  CHECK_EQ_STR(ct_result_error_class(info.result), "Reject");
  json_decref(info.result);
  CHECK_EQ_INT(atomic_load(&runs), 1);
  atomic_store(&runs, 0);
  so.backoff = 3600; /* a Retry does not wait for it */
  test_broker_submit(e.b, "flaky", json_pack("{s:i,s:s}", "fail", 1, "outcome", CT_BROKER_RETRY),
                     &so, id);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, id, 30), 2);
  CHECK_EQ_INT(atomic_load(&runs), 2);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  env_end(&e);
}

TEST(deferred_runs_complete_from_their_watchers_and_hold_their_slots) {
  env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register_loop(e.b, "later", "io", later, &e.at_io));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 2;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  enum { N = 6 };
  char ids[N][CT_BROKER_ID_SIZE];
  for (int i = 0; i < N; i++)
    test_broker_submit(e.b, "later", json_pack("{s:i,s:f}", "tag", i, "after", 0.2), NULL, ids[i]);
  for (int i = 0; i < N; i++) {
    ct_broker_info_t info = test_broker_wait_done(e.b, ids[i], 30);
    CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
    CHECK_EQ_INT(json_integer_value(json_object_get(info.result, "tag")), i);
    CHECK(json_is_false(json_object_get(info.result, "canceled")));
    json_decref(info.result);
  }
  CHECK_EQ_INT(atomic_load(&completions), N);
  /* Never more runs waiting on the loop than the worker has slots. */
  CHECK(atomic_load(&max_in_flight) >= 1 && atomic_load(&max_in_flight) <= 2);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  env_end(&e);
}

TEST(a_deferred_run_past_its_timeout_sees_its_cancel_and_fails_with_timeout_error) {
  env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register_loop(e.b, "slow", "io", until_canceled, &e.at_io));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.timeout = 0.3;
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "slow", NULL, &so, id);
  test_broker_wait_failed(e.b, id, 30, "TimeoutError");
  WAIT_FOR(atomic_load(&saw_cancel) == 1); /* not its 20 s timer */
  /* Retried as any failure, each run canceled in turn. */
  so.max_attempts = 2;
  so.backoff = 0.05;
  test_broker_submit(e.b, "slow", NULL, &so, id);
  CHECK_EQ_INT(test_broker_wait_failed(e.b, id, 30, NULL), 2);
  WAIT_FOR(atomic_load(&saw_cancel) == 3);
  CHECK_EQ_INT(atomic_load(&started), 3);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  env_end(&e);
}

/* Another worker takes the entry over and completes it first: this
 * worker's run is asked to cancel, and its late completion is dropped. */
TEST(a_deferred_run_whose_lease_is_lost_is_canceled_and_its_completion_dropped) {
  env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register_loop(e.b, "slow", "io", until_canceled, &e.at_io));
  test_broker_lose_lease(&e.r, e.b, &started, &saw_cancel);
  env_end(&e);
}

TEST(stop_waits_for_a_deferred_run_and_stores_its_result) {
  env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register_loop(e.b, "gated", "io", gated, &e.at_io));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "gated", NULL, NULL, id);
  WAIT_FOR(atomic_load(&started) == 1);
  CHECK_EQ_INT(ct_broker_worker_stop(e.b, 0.2), CT_ETIMEDOUT); /* the gate is shut */
  CHECK_OK(ct_loop_call(e.io, open_gate, NULL));
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, id, &info)); /* stored before the stop returned */
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "opened");
  json_decref(info.result);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 0);
  env_end(&e);
}

TEST(a_run_whose_loop_ends_fails_with_loop_unavailable) {
  env_t e;
  env_start(&e);
  ct_loop_t *brief;
  where_t at_brief;
  CHECK_OK(ct_loop_create(e.sup, "brief", &brief));
  where_init(&at_brief, brief);
  CHECK_OK(ct_broker_register_loop(e.b, "stuck", "brief", stuck, &at_brief));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "stuck", NULL, NULL, id);
  WAIT_FOR(atomic_load(&started) == 1);
  CHECK_OK(ct_loop_stop(brief, -1));
  test_broker_wait_failed(e.b, id, 30, "LoopUnavailable");
  /* A run that its loop, ended, refuses fails the same way. */
  test_broker_submit(e.b, "stuck", NULL, NULL, id);
  test_broker_wait_failed(e.b, id, 30, "LoopUnavailable");
  CHECK_EQ_INT(atomic_load(&started), 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  env_end(&e);
}

/* The supervisor stops with a run still open on an extra loop: the loop
 * ends with it, and the run is given up rather than waited for. */
TEST(a_supervisor_stop_completes_while_a_deferred_run_is_open) {
  env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register_loop(e.b, "stuck", "io", stuck, &e.at_io));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "stuck", NULL, NULL, id);
  WAIT_FOR(atomic_load(&started) == 1);
  CHECK_OK(ct_supervisor_stop(e.sup, CT_STOP_DRAIN, 60));
  CHECK_OK(ct_broker_worker_stop(e.b, 60));
  env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(registration_checks_its_input_and_closes_at_start);
  RUN(loop_handlers_run_on_their_loop_and_store_a_thread_handlers_outcomes);
  RUN(deferred_runs_complete_from_their_watchers_and_hold_their_slots);
  RUN(a_deferred_run_past_its_timeout_sees_its_cancel_and_fails_with_timeout_error);
  RUN(a_deferred_run_whose_lease_is_lost_is_canceled_and_its_completion_dropped);
  RUN(stop_waits_for_a_deferred_run_and_stores_its_result);
  RUN(a_run_whose_loop_ends_fails_with_loop_unavailable);
  RUN(a_supervisor_stop_completes_while_a_deferred_run_is_open);
  return check_done();
}
