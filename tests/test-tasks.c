/* Tasks: results and errors, callbacks, timestamps, names, the registry,
 * cancel in every status, and delays. */
#include <math.h>

#include "gate.h"

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return json_integer(42);
}

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

static json_t *fail(ct_task_t *self, void *arg) {
  (void)self;
  return ct_error_new("ValueError", "bad input %d", *(int *)arg);
}

TEST(results_and_errors) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  int seven = 7;
  ct_task_t *ok = submit(sup, answer, NULL, CT_PRIORITY_NORMAL);
  ct_task_t *null = submit(sup, nothing, NULL, CT_PRIORITY_LOW);
  ct_task_t *bad = submit(sup, fail, &seven, CT_PRIORITY_HIGH);
  ct_task_t *all[] = {ok, null, bad};
  CHECK_OK(ct_wait_completed(all, 3, -1));

  CHECK_EQ_INT(ct_task_status(ok), CT_TASK_COMPLETED);
  CHECK(ct_task_is_terminal(ok));
  CHECK(!ct_task_failed(ok));
  CHECK_EQ_INT(json_integer_value(ct_task_result(ok)), 42);

  CHECK(json_is_null(ct_task_result(null)));
  CHECK(!ct_task_failed(null));

  CHECK_EQ_INT(ct_task_status(bad), CT_TASK_COMPLETED);
  CHECK(ct_task_failed(bad));
  const json_t *r = ct_task_result(bad);
  CHECK(ct_result_is_error(r));
  CHECK_EQ_STR(ct_result_error_class(r), "ValueError");
  CHECK_EQ_STR(ct_result_error_str(r), "bad input 7");
  json_t *exc = json_object_get(r, "exception");
  CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(exc, "args"), 0)), "bad input 7");
  CHECK_EQ_INT(ct_task_priority(bad), CT_PRIORITY_HIGH);
  CHECK(ct_task_arg(bad) == &seven);
  for (int i = 0; i < 3; i++)
    ct_task_unref(all[i]);
  stop_and_free(sup);
}

TEST(result_helpers) {
  CHECK(ct_error_new(NULL, "x") == NULL);
  json_t *e = ct_error_new("TimeoutError", NULL);
  CHECK(ct_result_is_error(e));
  CHECK_EQ_STR(ct_result_error_str(e), "");
  json_decref(e);
  json_t *plain = json_pack("{s:i}", "exception", 1);
  CHECK(!ct_result_is_error(plain));
  CHECK(ct_result_error_class(plain) == NULL);
  json_decref(plain);
  CHECK(!ct_result_is_error(NULL));
  CHECK(ct_result_error_str(NULL) == NULL);
  CHECK_EQ_STR(ct_strerror(0), "success");
  CHECK_EQ_STR(ct_strerror(CT_EDEADLK), "the call would wait for itself");
  CHECK_EQ_STR(ct_strerror(12345), "unknown error");
  CHECK_EQ_STR(ct_err_name(CT_ESHUTDOWN), "CT_ESHUTDOWN");
  CHECK_EQ_STR(ct_err_name(1), "CT_UNKNOWN");
}

/* The message of an error made from input that is not UTF-8 (JSON text
 * must be): each bad byte becomes U+FFFD and the result is still an error,
 * never the NULL that a task function's caller takes for a null result. */
static void check_error_message(const char *input, const char *expected) {
  json_t *e = ct_error_new("ValueError", "[%s]", input);
  CHECK(ct_result_is_error(e));
  CHECK_EQ_STR(ct_result_error_str(e), expected);
  json_decref(e);
}

#define FFFD "\xef\xbf\xbd"

TEST(an_error_message_that_is_not_utf8_is_repaired_not_lost) {
  check_error_message("caf\xc3\xa9 \xf0\x9f\x98\x80", "[caf\xc3\xa9 \xf0\x9f\x98\x80]");
  check_error_message("\xff\xfe", "[" FFFD FFFD "]");
  check_error_message("\xc0\x80", "[" FFFD FFFD "]");        /* overlong NUL */
  check_error_message("\xe0\x80\xaf", "[" FFFD FFFD FFFD "]"); /* overlong '/' */
  check_error_message("\xed\xa0\x80", "[" FFFD FFFD FFFD "]"); /* a surrogate */
  check_error_message("\xf4\x90\x80\x80", "[" FFFD FFFD FFFD FFFD "]"); /* past U+10FFFF */
  check_error_message("\xe2\x82", "[" FFFD FFFD "]");         /* cut short */
  check_error_message("a\x80" "b", "[a" FFFD "b]"); /* a stray continuation */
  json_t *e = ct_error_new("Bad\xff" "Class", "x");
  CHECK_EQ_STR(ct_result_error_class(e), "Bad" FFFD "Class");
  json_decref(e);
}

TEST(bad_task_options) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  ct_task_t *t = (ct_task_t *)1;
  CHECK_EQ_INT(ct_background_task(sup, NULL, NULL, NULL, &t), CT_EINVAL);
  CHECK(t == NULL);
  int bad_prio[] = {-1, CT_PRIORITY_MAX + 1, 100000};
  for (size_t i = 0; i < sizeof bad_prio / sizeof *bad_prio; i++) {
    o.priority = bad_prio[i];
    CHECK_EQ_INT(ct_background_task(sup, answer, NULL, &o, &t), CT_EINVAL);
  }
  o.priority = CT_PRIORITY_NORMAL;
  double bad_delay[] = {-0.5, NAN, INFINITY};
  for (size_t i = 0; i < sizeof bad_delay / sizeof *bad_delay; i++) {
    o.delay = bad_delay[i];
    CHECK_EQ_INT(ct_background_task(sup, answer, NULL, &o, &t), CT_EINVAL);
  }
  o.delay = 0;
  o.size = 3;
  CHECK_EQ_INT(ct_background_task(sup, answer, NULL, &o, &t), CT_EINVAL);
  o.size = sizeof o + 16;
  CHECK_EQ_INT(ct_background_task(sup, answer, NULL, &o, &t), CT_EINVAL);
  o.size = sizeof o;
  o.priority = CT_PRIORITY_MAX;
  CHECK_OK(ct_background_task(sup, answer, NULL, &o, &t));
  CHECK_OK(ct_task_wait(t, -1));
  ct_task_unref(t);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.submitted, 1);
  stop_and_free(sup);

  ct_task_unref(NULL);
  CHECK(ct_task_ref(NULL) == NULL);
  CHECK_EQ_INT(ct_task_cancel(NULL), CT_EINVAL);
  CHECK(!ct_task_cancel_requested(NULL));
}

/* Which thread ran the function and which ran the callback, and how often. */
typedef struct {
  pthread_t fn_thread, cb_thread;
  counter_t calls;
  int runs;
  int status_in_callback;
  json_t *result_in_callback;
} where_t;

static json_t *where_fn(ct_task_t *self, void *arg) {
  (void)self;
  where_t *w = arg;
  w->fn_thread = pthread_self();
  w->runs++;
  return json_string("done");
}

static void where_done(ct_task_t *task, void *data) {
  where_t *w = data;
  w->cb_thread = pthread_self();
  w->status_in_callback = ct_task_status(task);
  w->result_in_callback = ct_task_result(task);
  counter_add(&w->calls, 1);
}

static ct_task_t *submit_where(ct_supervisor_t *sup, where_t *w, double delay, bool handle) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.on_done = where_done;
  o.done_data = w;
  o.delay = delay;
  ct_task_t *t = NULL;
  CHECK_OK(ct_background_task(sup, where_fn, w, &o, handle ? &t : NULL));
  return t;
}

TEST(callback_once_on_the_running_thread) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  where_t w = {0};
  counter_init(&w.calls);
  ct_task_t *t = submit_where(sup, &w, 0, true);
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(counter_get(&w.calls), 1); /* wait returns after the callback */
  CHECK(pthread_equal(w.fn_thread, w.cb_thread));
  CHECK(!pthread_equal(w.cb_thread, pthread_self()));
  CHECK_EQ_INT(w.status_in_callback, CT_TASK_COMPLETED);
  CHECK(w.result_in_callback == ct_task_result(t));
  ct_task_unref(t);

  /* Fire-and-forget with a callback. */
  where_t f = {0};
  counter_init(&f.calls);
  submit_where(sup, &f, 0, false);
  counter_wait_at_least(&f.calls, 1);
  stop_and_free(sup);
  CHECK_EQ_INT(counter_get(&w.calls), 1);
  CHECK_EQ_INT(counter_get(&f.calls), 1);
  CHECK_EQ_INT(f.runs, 1);
  counter_destroy(&w.calls);
  counter_destroy(&f.calls);
}

static json_t *read_own_times(ct_task_t *self, void *arg) {
  double *times = arg;
  times[0] = ct_task_time_queued(self);
  times[1] = ct_task_time_started(self);
  times[2] = ct_task_time_completed(self);
  times[3] = ct_task_status(self);
  return NULL;
}

TEST(timestamps) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  double inside[4];
  double before = ct_now();
  ct_task_t *t = submit(sup, read_own_times, inside, CT_PRIORITY_NORMAL);
  CHECK_OK(ct_task_wait(t, -1));
  double after = ct_now();
  double q = ct_task_time_queued(t), s = ct_task_time_started(t), c = ct_task_time_completed(t);
  CHECK(before <= q && q <= s && s <= c && c <= after);
  CHECK(inside[0] == q && inside[1] == s);
  CHECK(inside[2] == 0); /* not completed while it runs */
  CHECK_EQ_INT(inside[3], CT_TASK_STARTED);
  ct_task_unref(t);

  /* The cheap path (no handle, no callback, no watchdog) reads no clock. */
  double ff[4] = {-1, -1, -1, -1};
  ct_background_task(sup, read_own_times, ff, NULL, NULL);
  t = submit(sup, nothing, NULL, CT_PRIORITY_LOW); /* runs after it */
  CHECK_OK(ct_task_wait(t, -1));
  CHECK(ff[0] == 0 && ff[1] == 0 && ff[2] == 0);
  ct_task_unref(t);

  /* A queued task has no start or completion time yet. */
  gate_t gate;
  gate_init(&gate);
  ct_task_t *blocker = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  t = submit(sup, nothing, NULL, CT_PRIORITY_NORMAL);
  CHECK(ct_task_time_queued(t) > 0);
  CHECK(ct_task_time_started(t) == 0);
  CHECK(ct_task_time_completed(t) == 0);
  CHECK(ct_task_result(t) == NULL);
  CHECK(!ct_task_failed(t));
  CHECK(!ct_task_is_terminal(t));
  gate_open(&gate);
  CHECK_OK(ct_task_wait(t, -1));
  CHECK(ct_task_time_started(t) >= ct_task_time_queued(t));
  ct_task_unref(t);
  ct_task_unref(blocker);
  gate_destroy(&gate);
  stop_and_free(sup);
}

TEST(names_and_ids) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  char name[16] = "worker-1";
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.name = name;
  ct_task_t *a, *b;
  CHECK_OK(ct_background_task(sup, nothing, NULL, &o, &a));
  strcpy(name, "changed");
  CHECK_EQ_STR(ct_task_name(a), "worker-1"); /* copied */
  CHECK_OK(ct_background_task(sup, nothing, NULL, NULL, &b));
  CHECK_EQ_STR(ct_task_name(b), "");
  CHECK(ct_task_id(a) > 0 && ct_task_id(b) > 0 && ct_task_id(a) != ct_task_id(b));
  ct_task_t *both[] = {a, b};
  CHECK_OK(ct_wait_completed(both, 2, -1));
  CHECK_EQ_STR(ct_task_name(a), "worker-1");
  ct_task_unref(a);
  ct_task_unref(b);
  stop_and_free(sup);
}

TEST(registry_while_known) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *t = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  ct_task_t *found;
  CHECK_OK(ct_supervisor_get_task(sup, ct_task_id(t), &found));
  CHECK(found == t);
  ct_task_unref(found);
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 1);
  CHECK_EQ_INT(ct_supervisor_get_task(sup, ct_task_id(t) + 1000, &found), CT_ENOENT);
  CHECK(found == NULL);
  CHECK_EQ_INT(ct_supervisor_get_task(sup, ct_task_id(t), NULL), CT_EINVAL);
  /* Fire-and-forget tasks are not registered. */
  ct_background_task(sup, nothing, NULL, NULL, NULL);
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 1);
  gate_open(&gate);
  CHECK_OK(ct_task_wait(t, -1));
  /* Terminal: no longer known, though the handle still works. */
  CHECK_EQ_INT(ct_supervisor_get_task(sup, ct_task_id(t), &found), CT_ENOENT);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  ct_task_unref(t);
  gate_destroy(&gate);
  stop_and_free(sup);
}

TEST(cancel_queued) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *blocker = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  where_t w = {0};
  counter_init(&w.calls);
  ct_task_t *t = submit_where(sup, &w, 0, true);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_QUEUED);
  CHECK_OK(ct_task_cancel(t));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  CHECK_EQ_INT(counter_get(&w.calls), 1);
  CHECK(pthread_equal(w.cb_thread, pthread_self()));
  CHECK_EQ_INT(w.status_in_callback, CT_TASK_CANCELED);
  CHECK(ct_task_failed(t));
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t)), "CancelledError");
  CHECK(ct_task_cancel_requested(t));
  CHECK(ct_task_time_completed(t) > 0);
  CHECK_EQ_INT(ct_supervisor_get_task(sup, ct_task_id(t), &(ct_task_t *){NULL}), CT_ENOENT);
  CHECK_OK(ct_task_wait(t, 0));
  CHECK_EQ_INT(ct_task_cancel(t), CT_EALREADY);
  gate_open(&gate);
  CHECK_OK(ct_task_wait(blocker, -1));
  stop_and_free(sup);
  CHECK_EQ_INT(w.runs, 0);
  CHECK_EQ_INT(counter_get(&w.calls), 1);
  ct_task_unref(t);
  ct_task_unref(blocker);
  counter_destroy(&w.calls);
  gate_destroy(&gate);
}

TEST(cancel_delayed) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  where_t w = {0};
  counter_init(&w.calls);
  ct_task_t *t = submit_where(sup, &w, 3600, true);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_DELAYED);
  CHECK(!ct_task_is_terminal(t));
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.delayed, 1);
  CHECK_OK(ct_task_cancel(t));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  CHECK_EQ_INT(counter_get(&w.calls), 1);
  CHECK(pthread_equal(w.cb_thread, pthread_self()));
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t)), "CancelledError");
  CHECK_EQ_INT(ct_task_cancel(t), CT_EALREADY);
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.delayed, 0);
  CHECK_EQ_INT(st.canceled, 1);
  /* The hour-long timer is gone: the stop does not wait for it. */
  stop_and_free(sup);
  CHECK_EQ_INT(w.runs, 0);
  ct_task_unref(t);
  counter_destroy(&w.calls);
}

/* Runs until its cancel flag is set, then says so. */
static json_t *until_canceled(ct_task_t *self, void *arg) {
  gate_t *started = arg;
  gate_pass(started); /* the gate is already open: just counts */
  while (!ct_task_cancel_requested(self))
    check_sleep(0.001);
  return ct_error_new("CancelledError", "stopped early");
}

TEST(cancel_started_sets_the_flag) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t started;
  gate_init(&started);
  gate_open(&started);
  ct_task_t *t = submit(sup, until_canceled, &started, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&started, 1);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_STARTED);
  CHECK(!ct_task_cancel_requested(t));
  CHECK_EQ_INT(ct_task_cancel(t), CT_EBUSY);
  CHECK(ct_task_cancel_requested(t));
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  CHECK(ct_task_failed(t));
  CHECK_EQ_STR(ct_result_error_str(ct_task_result(t)), "stopped early");
  CHECK_EQ_INT(ct_task_cancel(t), CT_EALREADY);
  ct_task_unref(t);
  gate_destroy(&started);
  stop_and_free(sup);
}

/* A task that cancels itself sees CT_EBUSY and its own flag. */
static json_t *cancel_self(ct_task_t *self, void *arg) {
  (void)arg;
  int rc = ct_task_cancel(self);
  return json_pack("{s:i, s:b}", "rc", rc, "flag", ct_task_cancel_requested(self));
}

TEST(cancel_from_own_function) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_task_t *t = submit(sup, cancel_self, NULL, CT_PRIORITY_NORMAL);
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(json_integer_value(json_object_get(ct_task_result(t), "rc")), CT_EBUSY);
  CHECK(json_is_true(json_object_get(ct_task_result(t), "flag")));
  ct_task_unref(t);
  stop_and_free(sup);
}

TEST(delayed_then_runs) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  where_t w = {0};
  counter_init(&w.calls);
  double delay = 0.05;
  double before = ct_now();
  ct_task_t *t = submit_where(sup, &w, delay, true);
  int status = ct_task_status(t);
  double seen = ct_now();
  CHECK(status == CT_TASK_DELAYED || seen - before >= delay * 0.9);
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  CHECK(ct_task_time_started(t) - before >= delay * 0.9); /* never early */
  CHECK(ct_task_time_queued(t) >= before);
  CHECK_EQ_INT(w.runs, 1);
  CHECK_EQ_INT(counter_get(&w.calls), 1);
  CHECK(pthread_equal(w.cb_thread, w.fn_thread));
  ct_task_unref(t);
  stop_and_free(sup);
  counter_destroy(&w.calls);
}

/* Every public getter answers NULL without touching it. */
TEST(getters_accept_null) {
  CHECK_EQ_INT(ct_task_id(NULL), 0);
  CHECK_EQ_STR(ct_task_name(NULL), "");
  CHECK_EQ_INT(ct_task_priority(NULL), -1);
  CHECK(ct_task_arg(NULL) == NULL);
  CHECK_EQ_INT(ct_task_status(NULL), CT_TASK_CANCELED);
  CHECK(ct_task_is_terminal(NULL));
  CHECK(ct_task_time_queued(NULL) == 0);
  CHECK(ct_task_time_started(NULL) == 0);
  CHECK(ct_task_time_completed(NULL) == 0);
  CHECK(ct_task_result(NULL) == NULL);
  CHECK(!ct_task_failed(NULL));
  CHECK(!ct_task_cancel_requested(NULL));
  CHECK(ct_result_error_class(NULL) == NULL);
  CHECK_EQ_STR(ct_loop_name(NULL), "");
  CHECK_EQ_STR(ct_worker_name(NULL), "");
  CHECK_EQ_INT(ct_worker_state(NULL), CT_WORKER_STOPPED);
  CHECK(ct_worker_stop_requested(NULL));
  CHECK_EQ_INT(ct_worker_stats(NULL, NULL), CT_EINVAL);
  CHECK(ct_worker_stats_json(NULL) == NULL);
}

int main(void) {
  RUN(results_and_errors);
  RUN(result_helpers);
  RUN(an_error_message_that_is_not_utf8_is_repaired_not_lost);
  RUN(bad_task_options);
  RUN(getters_accept_null);
  RUN(callback_once_on_the_running_thread);
  RUN(timestamps);
  RUN(names_and_ids);
  RUN(registry_while_known);
  RUN(cancel_queued);
  RUN(cancel_delayed);
  RUN(cancel_started_sets_the_flag);
  RUN(cancel_from_own_function);
  RUN(delayed_then_runs);
  return check_done();
}
