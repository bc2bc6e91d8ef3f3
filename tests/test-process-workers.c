/* Process workers: queue, event and interval workers whose runs execute in
 * the process pool, the process_result hook, crashes, bad input, and no
 * zombie or descriptor left behind. */
#include <ctasker.h>
#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "gate.h"
#include "pool.h"

static char release_path[64]; /* the "block" child waits until this exists */

/* ---- functions the children run ---- */

/* Echo the run's arguments with the id of the task the child runs as. */
static json_t *fn_echo(uint64_t id, json_t *args, void *data) {
  (void)data;
  json_t *out = json_deep_copy(args);
  json_object_set_new(out, "task_id", json_integer((json_int_t)id));
  return out;
}

/* A queue item "abort" kills the child; any other item is echoed. */
static json_t *fn_crashy(uint64_t id, json_t *args, void *data) {
  const char *item = json_string_value(json_object_get(args, "item"));
  if (item && strcmp(item, "abort") == 0)
    abort();
  return fn_echo(id, args, data);
}

/* Every run dies of SIGKILL. */
static json_t *fn_block(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  while (access(release_path, F_OK) != 0)
    check_sleep(0.001);
  return NULL;
}

/* Echo the run's arguments with the child's clock as the run starts. */
static json_t *fn_started_at(uint64_t id, json_t *args, void *data) {
  json_t *out = fn_echo(id, args, data);
  json_object_set_new(out, "started", json_real(ct_now()));
  return out;
}

static int thread_run(ct_worker_run_t *run) {
  (void)run;
  return CT_WORKER_CONTINUE;
}

/* ---- helpers ---- */



static ct_supervisor_t *start_sup(int children) {
  return pool_sup_start_pool_last(NULL, children, 0);
}

static void stop_sup(ct_supervisor_t *sup) {
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

/* What the hooks saw, guarded by m. */
typedef struct {
  pthread_mutex_t m;
  pthread_cond_t c;
  json_t *results;  /* array of the results, in order */
  json_t *dropped;  /* array of the dropped items, in order */
  json_t *errors;   /* array of on_error's errors */
  int stop_after;   /* the hook returns STOP at this many results; 0: never */
  bool task_ids_ok; /* each result's task_id is the parent task's id */
} seen_t;

static void seen_init(seen_t *s, int stop_after) {
  pthread_mutex_init(&s->m, NULL);
  pthread_cond_init(&s->c, NULL);
  s->results = json_array();
  s->dropped = json_array();
  s->errors = json_array();
  s->stop_after = stop_after;
  s->task_ids_ok = true;
}

static void seen_destroy(seen_t *s) {
  json_decref(s->results);
  json_decref(s->dropped);
  json_decref(s->errors);
  pthread_mutex_destroy(&s->m);
  pthread_cond_destroy(&s->c);
}

static void seen_wait(seen_t *s, size_t results, size_t dropped, size_t errors) {
  pthread_mutex_lock(&s->m);
  HELPER_WAIT_UNTIL(&s->c, &s->m,
                    json_array_size(s->results) >= results &&
                        json_array_size(s->dropped) >= dropped &&
                        json_array_size(s->errors) >= errors);
  pthread_mutex_unlock(&s->m);
}

static int on_result(ct_worker_t *w, ct_task_t *task, const json_t *result, void *data) {
  (void)w;
  seen_t *s = data;
  pthread_mutex_lock(&s->m);
  json_array_append(s->results, (json_t *)result);
  json_t *id = json_object_get(result, "task_id");
  if (id && json_integer_value(id) != (json_int_t)ct_task_id(task))
    s->task_ids_ok = false;
  bool stop = s->stop_after && (int)json_array_size(s->results) == s->stop_after;
  pthread_cond_broadcast(&s->c);
  pthread_mutex_unlock(&s->m);
  return stop ? CT_WORKER_STOP : CT_WORKER_CONTINUE;
}

static void on_drop(ct_worker_t *w, void *item, void *data) {
  (void)w;
  seen_t *s = data;
  pthread_mutex_lock(&s->m);
  json_array_append_new(s->dropped, item); /* the item's reference is ours */
  pthread_cond_broadcast(&s->c);
  pthread_mutex_unlock(&s->m);
}

static void on_error(ct_worker_t *w, const json_t *error, void *data) {
  (void)w;
  seen_t *s = data;
  pthread_mutex_lock(&s->m);
  json_array_append(s->errors, (json_t *)error);
  pthread_cond_broadcast(&s->c);
  pthread_mutex_unlock(&s->m);
}

static ct_worker_opts_t process_opts(const char *fn, seen_t *s) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.process = fn;
  o.process_result = on_result;
  o.result_data = s;
  o.on_drop = on_drop;
  o.drop_data = s;
  o.on_error = on_error;
  o.error_data = s;
  return o;
}

static const char *error_class_at(json_t *array, size_t i) {
  return ct_result_error_class(json_array_get(array, i));
}

/* ---- tests ---- */

TEST(queue_worker_stopped_by_its_third_result) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_sup(1);
  /* Hold the only child so that every item is queued before the first run. */
  unlink(release_path);
  ct_task_t *blocker;
  CHECK_OK(ct_process_task(sup, "block", NULL, NULL, &blocker));

  seen_t s;
  seen_init(&s, 3);
  ct_worker_opts_t o = process_opts("echo", &s);
  o.name = "squares";
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, NULL, &o, &w));
  CHECK_EQ_STR(ct_worker_name(w), "squares");
  json_t *start_args = json_pack("{s:s}", "mode", "test");
  ct_worker_start_opts_t so = CT_WORKER_START_OPTS_INIT;
  so.args = start_args;
  CHECK_OK(ct_worker_start(w, &so));
  for (int i = 1; i <= 10; i++) {
    json_t *item = json_integer(i);
    CHECK_OK(ct_queue_worker_put_json(w, item, CT_PRIORITY_NORMAL));
  }
  FILE *f = fopen(release_path, "w");
  CHECK(f != NULL);
  fclose(f);
  seen_wait(&s, 3, 7, 0);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);

  CHECK_EQ_INT(json_array_size(s.results), 3);
  CHECK(s.task_ids_ok);
  for (size_t i = 0; i < 3; i++) {
    json_t *r = json_array_get(s.results, i);
    CHECK_EQ_INT(json_integer_value(json_object_get(r, "item")), (json_int_t)i + 1);
    CHECK_EQ_STR(json_string_value(json_object_get(r, "worker")), "squares");
    CHECK(json_equal(json_object_get(r, "args"), start_args));
    CHECK(json_object_get(r, "task_id") != NULL);
  }
  CHECK_EQ_INT(json_array_size(s.dropped), 7);
  for (size_t i = 0; i < 7; i++)
    CHECK_EQ_INT(json_integer_value(json_array_get(s.dropped, i)), (json_int_t)i + 4);
  CHECK_EQ_INT(json_array_size(s.errors), 0);
  ct_worker_stats_t st = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &st));
  CHECK_EQ_INT(st.runs, 3);
  CHECK_EQ_INT(st.dropped, 7);
  CHECK_EQ_INT(st.failures, 0);
  CHECK_EQ_INT(st.pending, 0);

  CHECK_OK(ct_worker_free(w));
  ct_task_unref(blocker);
  stop_sup(sup);
  unlink(release_path);
  json_decref(start_args);
  seen_destroy(&s);
  int kids[1];
  CHECK_EQ_INT(children_of(getpid(), kids, 1), 0);
  CHECK_EQ_INT(waitpid(-1, NULL, WNOHANG), -1); /* no zombie either */
  CHECK_EQ_INT(count_fds(), fds_before);
}

TEST(event_worker_in_a_process) {
  ct_supervisor_t *sup = start_sup(2);
  seen_t s;
  seen_init(&s, 0);
  ct_worker_opts_t o = process_opts("echo", &s);
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, NULL, &o, &w));
  CHECK_EQ_STR(ct_worker_name(w), "echo"); /* named after its function */
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  seen_wait(&s, 1, 0, 0);
  /* The hook runs before the run ends: a plain trigger now could merge. */
  CHECK_OK(ct_event_worker_trigger(w, true));
  seen_wait(&s, 2, 0, 0);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(json_array_size(s.results), 2);
  json_t *r = json_array_get(s.results, 1);
  CHECK(json_is_null(json_object_get(r, "args")));
  CHECK(json_object_get(r, "item") == NULL);
  CHECK(s.task_ids_ok);
  ct_worker_stats_t st = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &st));
  CHECK_EQ_INT(st.runs, 2);
  CHECK_OK(ct_worker_free(w));
  stop_sup(sup);
  seen_destroy(&s);
}

/* An interval worker running `fn` in the process pool, started, stopped
 * after `runs` results (s is set up here). */
static ct_worker_t *interval_in_a_process(ct_supervisor_t *sup, seen_t *s, const char *fn,
                                          double interval, int runs) {
  seen_init(s, runs);
  ct_worker_opts_t o = process_opts(fn, s);
  o.interval = interval;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_INTERVAL, NULL, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  seen_wait(s, (size_t)runs, 0, 0);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  return w;
}

TEST(interval_worker_in_a_process) {
  ct_supervisor_t *sup = start_sup(2);
  seen_t s;
  ct_worker_t *w = interval_in_a_process(sup, &s, "echo", 0.01, 3);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_EQ_INT(json_array_size(s.results), 3);
  for (size_t i = 0; i < 3; i++)
    CHECK(json_real_value(json_object_get(json_array_get(s.results, i), "scheduled")) > 0);
  ct_worker_stats_t st = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &st));
  CHECK_EQ_INT(st.runs, 3);
  CHECK_OK(ct_worker_free(w));
  stop_sup(sup);
  seen_destroy(&s);
}

/* A run in the process pool starts at its time, never before: the timer
 * fired 2 ms early for every interval worker (a thread run waits for its
 * time on its pool thread; a process run has no thread to wait in), and
 * most runs started up to that much early. */
TEST(interval_runs_in_a_process_start_no_earlier_than_scheduled) {
  ct_supervisor_t *sup = start_sup(1);
  seen_t s;
  ct_worker_t *w = interval_in_a_process(sup, &s, "started_at", 0.02, 5);
  for (size_t i = 0; i < 5; i++) {
    json_t *r = json_array_get(s.results, i);
    double scheduled = json_real_value(json_object_get(r, "scheduled"));
    double started = json_real_value(json_object_get(r, "started"));
    CHECK(scheduled > 0);
    CHECK(started >= scheduled);
  }
  CHECK_OK(ct_worker_free(w));
  stop_sup(sup);
  seen_destroy(&s);
}

TEST(crashing_child_is_an_error_result_and_the_worker_goes_on) {
  ct_supervisor_t *sup = start_sup(1);
  /* With the hook: it sees the crash, the worker runs the next item. */
  seen_t s;
  seen_init(&s, 0);
  ct_worker_opts_t o = process_opts("crashy", &s);
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, NULL, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  const char *items[] = {"a", "abort", "b"};
  for (int i = 0; i < 3; i++)
    CHECK_OK(ct_queue_worker_put_json(w, json_string(items[i]), CT_PRIORITY_NORMAL));
  seen_wait(&s, 3, 0, 0);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK(error_class_at(s.results, 0) == NULL);
  CHECK_EQ_STR(error_class_at(s.results, 1), "ProcessCrashed");
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(s.results, 2), "item")), "b");
  CHECK_EQ_INT(json_array_size(s.errors), 0); /* the hook took them */
  ct_worker_stats_t st = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &st));
  CHECK_EQ_INT(st.runs, 3);
  CHECK_EQ_INT(st.failures, 1);
  CHECK_OK(ct_worker_free(w));

  /* Without the hook: on_error sees each crash once, the worker goes on. */
  seen_t e;
  seen_init(&e, 0);
  o = process_opts("crash", &e);
  o.process_result = NULL;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, NULL, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  seen_wait(&e, 0, 0, 1);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_RUNNING);
  CHECK_OK(ct_event_worker_trigger(w, true));
  seen_wait(&e, 0, 0, 2);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(json_array_size(e.errors), 2);
  CHECK_EQ_STR(error_class_at(e.errors, 0), "ProcessCrashed");
  CHECK_EQ_STR(error_class_at(e.errors, 1), "ProcessCrashed");
  CHECK_OK(ct_worker_stats(w, &st));
  CHECK_EQ_INT(st.failures, 2);
  CHECK_OK(ct_worker_free(w));
  stop_sup(sup);
  seen_destroy(&s);
  seen_destroy(&e);
}

static int stop_and_wait(ct_worker_t *w, ct_task_t *task, const json_t *result, void *data) {
  (void)task;
  (void)result;
  atomic_store((atomic_int *)data, ct_worker_stop(w, CT_WORKER_DROP, -1));
  return CT_WORKER_CONTINUE;
}

TEST(hook_that_waits_for_its_own_stop_gets_edeadlk) {
  ct_supervisor_t *sup = start_sup(1);
  atomic_int rc = 1;
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.process = "echo";
  o.process_result = stop_and_wait;
  o.result_data = &rc;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, NULL, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  for (int i = 0; i < 60000 && atomic_load(&rc) == 1; i++)
    check_sleep(0.001);
  CHECK_EQ_INT(atomic_load(&rc), CT_EDEADLK); /* the stop is under way all the same */
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_free(w));
  stop_sup(sup);
}

TEST(bad_input) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  seen_t s;
  seen_init(&s, 0);
  ct_worker_opts_t o = process_opts("nope", &s);
  ct_worker_t *w = NULL;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_QUEUE, NULL, &o, &w), CT_ENOENT);
  CHECK(w == NULL);
  o.process = "echo";
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_BACKGROUND, NULL, &o, &w), CT_ENOTSUP);
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_QUEUE, thread_run, &o, &w), CT_EINVAL);
  o.process = NULL;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_QUEUE, NULL, &o, &w), CT_EINVAL);

  /* No process pool yet: start says so, the worker stays startable. */
  o.process = "echo";
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, NULL, &o, &w));
  json_t *item = json_integer(1);
  CHECK_EQ_INT(ct_queue_worker_put_json(w, item, CT_PRIORITY_NORMAL), CT_ESHUTDOWN);
  CHECK_EQ_INT(ct_worker_start(w, NULL), CT_ENOENT);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_INIT);
  CHECK_OK(ct_process_pool_create(sup, NULL));
  CHECK_OK(ct_worker_start(w, NULL));

  /* Items of a process worker are JSON, and must encode. */
  int plain = 1;
  CHECK_EQ_INT(ct_queue_worker_put(w, &plain, CT_PRIORITY_NORMAL), CT_EINVAL);
  CHECK_EQ_INT(ct_queue_worker_put_json(w, NULL, CT_PRIORITY_NORMAL), CT_EINVAL);
  json_t *bad = json_stringn_nocheck("\xff\xfe", 2);
  CHECK_EQ_INT(ct_queue_worker_put_json(w, bad, CT_PRIORITY_NORMAL), CT_EINVAL);
  json_decref(bad); /* still ours */
  CHECK_EQ_INT(ct_queue_worker_put_json(w, item, CT_PRIORITY_MAX + 1), CT_EINVAL);

  /* The pool stops under a running worker: the item is handed back, the
   * worker stops, nothing is lost. */
  CHECK_OK(ct_process_pool_stop(sup, -1));
  CHECK_OK(ct_queue_worker_put_json(w, item, CT_PRIORITY_NORMAL));
  seen_wait(&s, 0, 1, 0);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_EQ_INT(json_integer_value(json_array_get(s.dropped, 0)), 1);
  CHECK_OK(ct_worker_free(w));

  /* put_json is for process queue workers only. */
  ct_worker_opts_t plain_opts = CT_WORKER_OPTS_INIT;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, thread_run, &plain_opts, &w));
  json_t *j = json_integer(2);
  CHECK_EQ_INT(ct_queue_worker_put_json(w, j, CT_PRIORITY_NORMAL), CT_EINVAL);
  json_decref(j);
  CHECK_OK(ct_worker_free(w));
  stop_sup(sup);
  seen_destroy(&s);
}

TEST(pending_json_items_without_on_drop_are_released) {
  ct_supervisor_t *sup = start_sup(1);
  unlink(release_path);
  ct_task_t *blocker;
  CHECK_OK(ct_process_task(sup, "block", NULL, NULL, &blocker));
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.process = "echo";
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, NULL, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  for (int i = 0; i < 5; i++)
    CHECK_OK(ct_queue_worker_put_json(w, json_pack("{s:i}", "n", i), CT_PRIORITY_NORMAL));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, 0));
  FILE *f = fopen(release_path, "w");
  CHECK(f != NULL);
  fclose(f);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  ct_worker_stats_t st = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &st));
  CHECK_EQ_INT(st.runs + st.dropped, 5); /* ASan: the dropped ones are released */
  CHECK_OK(ct_worker_free(w));
  ct_task_unref(blocker);
  stop_sup(sup);
  unlink(release_path);
}

int main(void) {
  /* Set before any pool exists: children are copies of this process. */
  snprintf(release_path, sizeof release_path, "/tmp/ct-procworker-%d", (int)getpid());
  CHECK_OK(ct_process_register("echo", fn_echo, NULL));
  CHECK_OK(ct_process_register("started_at", fn_started_at, NULL));
  CHECK_OK(ct_process_register("crashy", fn_crashy, NULL));
  CHECK_OK(ct_process_register("crash", pool_fn_killed, NULL));
  CHECK_OK(ct_process_register("block", fn_block, NULL));
  RUN(queue_worker_stopped_by_its_third_result);
  RUN(event_worker_in_a_process);
  RUN(interval_worker_in_a_process);
  RUN(interval_runs_in_a_process_start_no_earlier_than_scheduled);
  RUN(crashing_child_is_an_error_result_and_the_worker_goes_on);
  RUN(hook_that_waits_for_its_own_stop_gets_edeadlk);
  RUN(bad_input);
  RUN(pending_json_items_without_on_drop_are_released);
  return check_done();
}
