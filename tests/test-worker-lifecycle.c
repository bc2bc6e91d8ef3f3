/* A worker's life cycle as its user sees it: on_start and on_stop around
 * every start with the reason it ended, waiting for that end without
 * stopping, a run that fails and stops, a sleep that a stop cuts short,
 * and a group that stops its members in reverse start order and frees
 * them. Order and counts only, never durations. */
#include <ctasker.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"
#include "gate.h"

enum { T_START = 1, T_STARTED, T_RUN, T_ERROR, T_STOP = 10 }; /* T_STOP + reason */

/* What one worker's hooks and runs record. */
typedef struct {
  order_t order;
  gate_t gate;            /* runs or on_stop that must hold, wait here */
  atomic_int runs, fail_at, deadlk, sleep_rc;
  atomic_int stop_code;
  bool hold_run, hold_stop, hold_start, put_in_start;
} rec_t;

static void rec_init(rec_t *r) {
  *r = (rec_t){0};
  order_init(&r->order);
  gate_init(&r->gate);
  atomic_init(&r->runs, 0);
  atomic_init(&r->fail_at, 0);
  atomic_init(&r->deadlk, 0);
  atomic_init(&r->sleep_rc, 1);
  atomic_init(&r->stop_code, -1);
}

static void rec_destroy(rec_t *r) {
  order_destroy(&r->order);
  gate_destroy(&r->gate);
}

static int tags(rec_t *r, int i) {
  pthread_mutex_lock(&r->order.m);
  int t = i < r->order.len ? r->order.tags[i] : 0;
  pthread_mutex_unlock(&r->order.m);
  return t;
}

static int count_of(rec_t *r) {
  pthread_mutex_lock(&r->order.m);
  int n = r->order.len;
  pthread_mutex_unlock(&r->order.m);
  return n;
}

static void on_start(ct_worker_t *w, void *data) {
  rec_t *r = data;
  order_add(&r->order, T_START);
  if (r->hold_start)
    gate_pass(&r->gate);
  if (r->put_in_start) /* runs asked for now must wait for on_start */
    CHECK_OK(ct_queue_worker_put(w, NULL, CT_PRIORITY_NORMAL));
  order_add(&r->order, T_STARTED);
}

static void on_stop(ct_worker_t *w, ct_worker_end_reason_t reason, int code, void *data) {
  rec_t *r = data;
  if (r->hold_stop)
    gate_pass(&r->gate);
  atomic_store(&r->stop_code, code);
  /* from its own on_stop, neither wait waits */
  CHECK_OK(ct_worker_wait(w, -1, NULL, NULL));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  order_add(&r->order, T_STOP + (int)reason);
}

static void on_error(ct_worker_t *w, const json_t *error, void *data) {
  (void)w;
  (void)error;
  order_add(&((rec_t *)data)->order, T_ERROR);
}

static int recording_run(ct_worker_run_t *run) {
  rec_t *r = run->data;
  order_add(&r->order, T_RUN);
  int n = atomic_fetch_add(&r->runs, 1) + 1;
  if (ct_worker_wait(run->worker, -1, NULL, NULL) == CT_EDEADLK)
    atomic_fetch_add(&r->deadlk, 1);
  if (r->hold_run)
    gate_pass(&r->gate);
  if (n == atomic_load(&r->fail_at))
    return ct_worker_fail_stop(run, ct_error_new("Boom", "run %d", n), 7);
  return CT_WORKER_CONTINUE;
}

static ct_worker_t *make(ct_supervisor_t *sup, ct_worker_kind_t kind, rec_t *r) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.data = r;
  o.on_start = on_start;
  o.on_stop = on_stop;
  o.hook_data = r;
  o.on_error = on_error;
  o.error_data = r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, kind, recording_run, &o, &w));
  return w;
}

static void check_json_end(ct_worker_t *w, const char *reason, int code) {
  json_t *j = ct_worker_stats_json(w);
  CHECK(j);
  CHECK_EQ_STR(json_string_value(json_object_get(j, "end_reason")), reason);
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "end_code")), code);
  json_decref(j);
}

TEST(hooks_bracket_every_start_and_tell_the_reason) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  rec_init(&r);
  r.put_in_start = true;
  ct_worker_t *w = make(sup, CT_WORKER_QUEUE, &r);
  CHECK_EQ_INT(ct_worker_last_end(w, NULL, NULL), CT_WORKER_END_NONE);
  check_json_end(w, "none", 0);

  CHECK_OK(ct_worker_start(w, NULL));
  WAIT_FOR(atomic_load(&r.runs) == 1);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1)); /* returns after on_stop */
  CHECK_EQ_INT(count_of(&r), 4);
  CHECK_EQ_INT(tags(&r, 0), T_START);
  CHECK_EQ_INT(tags(&r, 1), T_STARTED); /* the item put in on_start ran after it */
  CHECK_EQ_INT(tags(&r, 2), T_RUN);
  CHECK_EQ_INT(tags(&r, 3), T_STOP + CT_WORKER_END_NORMAL);
  CHECK_EQ_INT(atomic_load(&r.stop_code), 0);
  int code = -1;
  CHECK_EQ_INT(ct_worker_last_end(w, &code, NULL), CT_WORKER_END_NORMAL);
  CHECK_EQ_INT(code, 0);
  check_json_end(w, "normal", 0);

  /* A bounded stop that gives up: forced, told once, even when the run ends later. */
  r.put_in_start = false;
  r.hold_run = true;
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_EQ_INT(ct_worker_last_end(w, NULL, NULL), CT_WORKER_END_NONE); /* running */
  CHECK_OK(ct_queue_worker_put(w, NULL, CT_PRIORITY_NORMAL));
  gate_wait_arrived(&r.gate, 1);
  CHECK_EQ_INT(ct_worker_stop(w, CT_WORKER_DROP, 0.2), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_FORCE_STOPPED);
  CHECK_EQ_INT(ct_worker_last_end(w, &code, NULL), CT_WORKER_END_FORCED);
  CHECK_EQ_INT(code, CT_ETIMEDOUT);
  check_json_end(w, "forced", CT_ETIMEDOUT);
  CHECK_EQ_INT(count_of(&r), 8);
  CHECK_EQ_INT(tags(&r, 7), T_STOP + CT_WORKER_END_FORCED);
  gate_open(&r.gate);
  int rc;
  WAIT_FOR((rc = ct_worker_start(w, NULL)) != CT_EBUSY); /* the forced run has ended */
  CHECK_OK(rc);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(count_of(&r), 11); /* one on_stop per start, no more */
  CHECK_EQ_INT(tags(&r, 8), T_START);
  CHECK_EQ_INT(tags(&r, 10), T_STOP + CT_WORKER_END_NORMAL);
  CHECK_EQ_INT(atomic_load(&r.deadlk), 2); /* each run's wait for itself */
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  rec_destroy(&r);
}

TEST(failing_run_stops_its_worker_with_reason_failed) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  rec_init(&r);
  atomic_store(&r.fail_at, 3);
  ct_worker_t *w = make(sup, CT_WORKER_BACKGROUND, &r);
  CHECK_OK(ct_worker_start(w, NULL));
  ct_worker_end_reason_t reason = CT_WORKER_END_NONE;
  json_t *error = NULL;
  CHECK_OK(ct_worker_wait(w, INFINITY, &reason, &error));
  CHECK_EQ_INT(reason, CT_WORKER_END_FAILED);
  CHECK(error);
  CHECK_EQ_STR(ct_result_error_class(error), "Boom");
  CHECK_EQ_STR(ct_result_error_str(error), "run 3");
  json_decref(error); /* the caller's reference */
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_EQ_INT(atomic_load(&r.runs), 3);
  CHECK_EQ_INT(atomic_load(&r.stop_code), 7);
  /* start, started, three runs, on_error, then on_stop */
  CHECK_EQ_INT(count_of(&r), 7);
  CHECK_EQ_INT(tags(&r, 4), T_RUN);
  CHECK_EQ_INT(tags(&r, 5), T_ERROR);
  CHECK_EQ_INT(tags(&r, 6), T_STOP + CT_WORKER_END_FAILED);
  ct_worker_stats_t s = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &s));
  CHECK_EQ_INT(s.failures, 1);
  int code = 0;
  CHECK_EQ_INT(ct_worker_last_end(w, &code, &error), CT_WORKER_END_FAILED);
  CHECK_EQ_INT(code, 7);
  CHECK_EQ_STR(ct_result_error_class(error), "Boom");
  json_decref(error);
  check_json_end(w, "failed", 7);

  /* A restart forgets the failure; a normal end carries no error. */
  atomic_store(&r.fail_at, 0);
  r.hold_run = true; /* one more run, held until the stop is asked */
  CHECK_OK(ct_worker_start(w, NULL));
  gate_wait_arrived(&r.gate, 1);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, 0));
  gate_open(&r.gate);
  CHECK_OK(ct_worker_wait(w, -1, &reason, &error));
  CHECK_EQ_INT(reason, CT_WORKER_END_NORMAL);
  CHECK(error == NULL);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  rec_destroy(&r);
}

static void *start_thread(void *arg) {
  CHECK_OK(ct_worker_start(arg, NULL));
  return NULL;
}

TEST(stop_forced_during_on_start_is_told_after_it) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  rec_init(&r);
  r.hold_start = true;
  ct_worker_t *w = make(sup, CT_WORKER_EVENT, &r);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, start_thread, w) == 0);
  gate_wait_arrived(&r.gate, 1); /* on_start holds */
  CHECK_EQ_INT(ct_worker_stop(w, CT_WORKER_DROP, 0.2), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_FORCE_STOPPED);
  CHECK_EQ_INT(count_of(&r), 1); /* on_stop waits for on_start */
  gate_open(&r.gate);
  ct_worker_end_reason_t reason;
  CHECK_OK(ct_worker_wait(w, -1, &reason, NULL));
  CHECK_EQ_INT(reason, CT_WORKER_END_FORCED);
  CHECK(pthread_join(th, NULL) == 0);
  CHECK_EQ_INT(count_of(&r), 3);
  CHECK_EQ_INT(tags(&r, 1), T_STARTED);
  CHECK_EQ_INT(tags(&r, 2), T_STOP + CT_WORKER_END_FORCED);
  CHECK_EQ_INT(atomic_load(&r.runs), 0);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  rec_destroy(&r);
}

/* on_start that stops its own worker and waits: the stop could not end
 * while on_start ran, so the start never returned. Now the stop is under
 * way and the call says CT_EDEADLK, as from a run. */
static atomic_int stop_rc_in_on_start, wait_rc_in_on_start;
static atomic_bool start_returned;

static void stop_and_wait_in_on_start(ct_worker_t *w, void *data) {
  (void)data;
  atomic_store(&stop_rc_in_on_start, ct_worker_stop(w, CT_WORKER_DROP, -1));
  atomic_store(&wait_rc_in_on_start, ct_worker_wait(w, -1, NULL, NULL));
}

static void *start_and_say(void *arg) {
  CHECK_OK(ct_worker_start(arg, NULL));
  atomic_store(&start_returned, true);
  return NULL;
}

TEST(a_stop_that_waits_from_on_start_is_edeadlk_not_a_hang) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.on_start = stop_and_wait_in_on_start;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, recording_run, &o, &w));
  pthread_t th;
  CHECK(pthread_create(&th, NULL, start_and_say, w) == 0);
  WAIT_FOR(atomic_load(&start_returned)); /* bounded: it never returned */
  CHECK(pthread_join(th, NULL) == 0);
  CHECK_EQ_INT(atomic_load(&stop_rc_in_on_start), CT_EDEADLK);
  CHECK_EQ_INT(atomic_load(&wait_rc_in_on_start), CT_EDEADLK);
  ct_worker_end_reason_t reason;
  CHECK_OK(ct_worker_wait(w, -1, &reason, NULL));
  CHECK_EQ_INT(reason, CT_WORKER_END_NORMAL);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static int fail_stop_bare(ct_worker_run_t *run) {
  (void)run;
  return CT_WORKER_FAIL_STOP;
}

TEST(bare_fail_stop_ends_with_a_worker_error_and_code_1) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.on_error = on_error;
  rec_t r;
  rec_init(&r);
  o.error_data = &r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, fail_stop_bare, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  ct_worker_end_reason_t reason;
  json_t *error;
  CHECK_OK(ct_worker_wait(w, -1, &reason, &error));
  CHECK_EQ_INT(reason, CT_WORKER_END_FAILED);
  CHECK_EQ_STR(ct_result_error_class(error), "WorkerError");
  json_decref(error);
  int code;
  ct_worker_last_end(w, &code, NULL);
  CHECK_EQ_INT(code, 1);
  CHECK_EQ_INT(count_of(&r), 1); /* on_error once */
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  rec_destroy(&r);
}

typedef struct {
  ct_worker_t *w;
  atomic_int done;
  int rc;
  ct_worker_end_reason_t reason;
} waiter_t;

static void *wait_thread(void *arg) {
  waiter_t *wt = arg;
  wt->rc = ct_worker_wait(wt->w, -1, &wt->reason, NULL);
  atomic_store(&wt->done, 1);
  return NULL;
}

static int stop_on_second(ct_worker_run_t *run) {
  rec_t *r = run->data;
  return atomic_fetch_add(&r->runs, 1) + 1 == 2 ? CT_WORKER_STOP : CT_WORKER_CONTINUE;
}

TEST(wait_returns_at_the_end_without_stopping) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  rec_init(&r);
  r.hold_stop = true;
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.data = &r;
  o.on_stop = on_stop;
  o.hook_data = &r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, stop_on_second, &o, &w));
  ct_worker_end_reason_t reason = CT_WORKER_END_FAILED;
  CHECK_OK(ct_worker_wait(w, -1, &reason, NULL)); /* never started */
  CHECK_EQ_INT(reason, CT_WORKER_END_NONE);
  CHECK_EQ_INT(ct_worker_wait(w, NAN, NULL, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_wait(NULL, -1, NULL, NULL), CT_EINVAL);

  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_EQ_INT(ct_worker_wait(w, 0, NULL, NULL), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_worker_wait(w, 0.05, NULL, NULL), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_RUNNING); /* waiting does not stop */
  CHECK_OK(ct_event_worker_trigger(w, false));
  WAIT_FOR(atomic_load(&r.runs) == 1);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_RUNNING);

  waiter_t wt = {.w = w};
  atomic_init(&wt.done, 0);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, wait_thread, &wt) == 0);
  CHECK_OK(ct_event_worker_trigger(w, false)); /* run 2 stops the worker */
  gate_wait_arrived(&r.gate, 1);               /* on_stop holds */
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_EQ_INT(atomic_load(&wt.done), 0); /* on_stop has not returned */
  CHECK_EQ_INT(ct_worker_wait(w, 0, NULL, NULL), CT_ETIMEDOUT);
  gate_open(&r.gate);
  CHECK(pthread_join(th, NULL) == 0);
  CHECK_OK(wt.rc);
  CHECK_EQ_INT(wt.reason, CT_WORKER_END_NORMAL);
  CHECK_EQ_INT(count_of(&r), 1); /* on_stop returned before the wait did */
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  rec_destroy(&r);
}

static void drop_and_wait(ct_worker_t *w, void *item, void *data) {
  (void)item;
  rec_t *r = data;
  ct_worker_end_reason_t reason = CT_WORKER_END_NONE;
  CHECK_OK(ct_worker_wait(w, -1, &reason, NULL)); /* its end is being told */
  order_add(&r->order, T_STOP + (int)reason);
}

TEST(wait_from_on_drop_after_a_forced_end_does_not_wait_for_itself) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  rec_init(&r);
  r.hold_run = true;
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.data = &r;
  o.on_drop = drop_and_wait;
  o.drop_data = &r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, recording_run, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  for (int i = 0; i < 3; i++)
    CHECK_OK(ct_queue_worker_put(w, NULL, CT_PRIORITY_NORMAL));
  gate_wait_arrived(&r.gate, 1);
  /* the bound gives up on the held run; the two items left go back here */
  CHECK_EQ_INT(ct_worker_stop(w, CT_WORKER_DRAIN, 0.2), CT_ETIMEDOUT);
  CHECK_EQ_INT(count_of(&r), 3);
  CHECK_EQ_INT(tags(&r, 1), T_STOP + CT_WORKER_END_FORCED);
  CHECK_EQ_INT(tags(&r, 2), T_STOP + CT_WORKER_END_FORCED);
  gate_open(&r.gate);
  CHECK_OK(ct_worker_free(w)); /* released when the held run ends */
  stop_and_free(sup);
  rec_destroy(&r);
}

static int sleeping_run(ct_worker_run_t *run) {
  rec_t *r = run->data;
  CHECK_OK(ct_worker_sleep(run->worker, 0));
  atomic_fetch_add(&r->runs, 1);
  atomic_store(&r->sleep_rc, ct_worker_sleep(run->worker, 3600));
  return CT_WORKER_CONTINUE;
}

TEST(sleep_wakes_when_its_worker_is_asked_to_stop) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  rec_init(&r);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.data = &r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_BACKGROUND, sleeping_run, &o, &w));
  CHECK_EQ_INT(ct_worker_sleep(w, NAN), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_sleep(w, -1), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_sleep(NULL, 1), CT_EINVAL);
  CHECK_OK(ct_worker_start(w, NULL));
  WAIT_FOR(atomic_load(&r.runs) == 1);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1)); /* does not wait out the hour */
  CHECK_EQ_INT(atomic_load(&r.runs), 1);
  CHECK_EQ_INT(atomic_load(&r.sleep_rc), CT_ESHUTDOWN);
  CHECK_EQ_INT(ct_worker_sleep(w, INFINITY), CT_ESHUTDOWN); /* stopped: at once */
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  rec_destroy(&r);
}

/* In a pool child: every call fails. */
static json_t *fn_refuse(uint64_t id, json_t *args, void *data) {
  (void)args;
  (void)data;
  return ct_error_new("Refused", "call %llu", (unsigned long long)id);
}

static int fail_stop_on_error(ct_worker_t *w, ct_task_t *task, const json_t *result,
                              void *data) {
  (void)w;
  (void)task;
  (void)data;
  return ct_result_is_error(result) ? CT_WORKER_FAIL_STOP : CT_WORKER_CONTINUE;
}

TEST(process_result_can_fail_and_stop_its_worker) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  CHECK_OK(ct_process_pool_create(sup, NULL));
  rec_t r;
  rec_init(&r);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.process = "refuse";
  o.process_result = fail_stop_on_error;
  o.on_error = on_error;
  o.error_data = &r;
  o.on_stop = on_stop;
  o.hook_data = &r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, NULL, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  ct_worker_end_reason_t reason;
  json_t *error;
  CHECK_OK(ct_worker_wait(w, -1, &reason, &error));
  CHECK_EQ_INT(reason, CT_WORKER_END_FAILED);
  CHECK_EQ_STR(ct_result_error_class(error), "Refused"); /* the child's error */
  json_decref(error);
  CHECK_EQ_INT(count_of(&r), 2);
  CHECK_EQ_INT(tags(&r, 0), T_ERROR);
  CHECK_EQ_INT(tags(&r, 1), T_STOP + CT_WORKER_END_FAILED);
  CHECK_EQ_INT(atomic_load(&r.stop_code), 1);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  rec_destroy(&r);
}

/* Group members that record, in one shared order, their tag when they stop
 * and how many members were still running then. */
typedef struct {
  order_t order;
  ct_worker_t *ws[3];
} crowd_t;

typedef struct {
  crowd_t *crowd;
  int tag;
} member_t;

static void member_stopped(ct_worker_t *w, ct_worker_end_reason_t reason, int code, void *data) {
  (void)w;
  (void)reason;
  (void)code;
  member_t *m = data;
  int running = 0;
  for (int i = 0; i < 3; i++)
    running += ct_worker_state(m->crowd->ws[i]) == CT_WORKER_RUNNING;
  order_add(&m->crowd->order, m->tag * 10 + running);
}

static int idle_run(ct_worker_run_t *run) {
  (void)run;
  return CT_WORKER_CONTINUE;
}

static ct_worker_group_t *owning_group(ct_supervisor_t *sup, crowd_t *c, member_t *ms) {
  ct_worker_group_opts_t go = CT_WORKER_GROUP_OPTS_INIT;
  go.owns_members = true;
  ct_worker_group_t *g;
  CHECK_OK(ct_worker_group_new(&go, &g));
  for (int i = 0; i < 3; i++) {
    ms[i].crowd = c;
    ms[i].tag = i + 1;
    ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
    o.on_stop = member_stopped;
    o.hook_data = &ms[i];
    CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, idle_run, &o, &c->ws[i]));
    CHECK_OK(ct_worker_group_add(g, c->ws[i]));
  }
  return g;
}

TEST(owning_group_stops_members_in_reverse_start_order_and_frees_them) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  crowd_t c;
  member_t ms[3];
  order_init(&c.order);
  ct_worker_group_t *g = owning_group(sup, &c, ms);
  CHECK_OK(ct_worker_start(c.ws[1], NULL)); /* started 2, 3, 1 */
  CHECK_OK(ct_worker_start(c.ws[2], NULL));
  CHECK_OK(ct_worker_start(c.ws[0], NULL));
  CHECK_EQ_INT(ct_worker_group_shutdown(g, 7, -1), CT_EINVAL);
  CHECK_OK(ct_worker_group_shutdown(g, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(c.order.len, 3);
  CHECK_EQ_INT(c.order.tags[0], 12); /* 1 first, 3 and 2 still running */
  CHECK_EQ_INT(c.order.tags[1], 31);
  CHECK_EQ_INT(c.order.tags[2], 20);
  stop_and_free(sup); /* CT_EBUSY if a member were left */

  /* Freeing an owning group frees its stopped members. */
  sup = start_supervisor(2, 0, 0);
  order_destroy(&c.order);
  order_init(&c.order);
  g = owning_group(sup, &c, ms);
  CHECK_OK(ct_worker_group_start(g, NULL));
  CHECK_EQ_INT(ct_worker_group_free(g), CT_EBUSY);
  CHECK_OK(ct_worker_group_stop(g, CT_WORKER_DROP, -1));
  CHECK_OK(ct_worker_group_free(g));
  stop_and_free(sup);
  CHECK_OK(ct_worker_group_shutdown(NULL, CT_WORKER_DROP, -1));
  order_destroy(&c.order);
}

int main(void) {
  CHECK_OK(ct_process_register("refuse", fn_refuse, NULL)); /* before any pool */
  RUN(hooks_bracket_every_start_and_tell_the_reason);
  RUN(stop_forced_during_on_start_is_told_after_it);
  RUN(a_stop_that_waits_from_on_start_is_edeadlk_not_a_hang);
  RUN(failing_run_stops_its_worker_with_reason_failed);
  RUN(bare_fail_stop_ends_with_a_worker_error_and_code_1);
  RUN(wait_returns_at_the_end_without_stopping);
  RUN(wait_from_on_drop_after_a_forced_end_does_not_wait_for_itself);
  RUN(sleep_wakes_when_its_worker_is_asked_to_stop);
  RUN(process_result_can_fail_and_stop_its_worker);
  RUN(owning_group_stops_members_in_reverse_start_order_and_frees_them);
  return check_done();
}
