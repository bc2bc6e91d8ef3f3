/* The process pool: round trips, error results, crashes and replacement,
 * timeouts, bad input, loops, stop without zombies or leaked descriptors,
 * and a host that forks. */
#include <ctasker.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "proc.h"
#include "exec/loop.h"

/* ---- functions the children run ---- */

static json_t *fn_echo(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  return json_incref(args);
}
static json_t *fn_id(uint64_t id, json_t *args, void *data) {
  (void)args;
  (void)data;
  return json_pack("{s:I, s:i}", "id", (json_int_t)id, "pid", (int)getpid());
}
static json_t *fn_fail(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  return ct_error_new("ValueError", "bad value");
}
static json_t *fn_sleep(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  check_sleep(json_real_value(args));
  return json_integer((json_int_t)getpid());
}
static json_t *fn_crash(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  const char *how = json_string_value(args);
  if (strcmp(how, "abort") == 0)
    abort();
  if (strcmp(how, "sigkill") == 0)
    raise(SIGKILL);
  if (strcmp(how, "exit3") == 0)
    exit(3);
  if (strcmp(how, "hang") == 0 || strcmp(how, "close") == 0) {
    if (how[0] == 'c')
      close(3);
    for (;;)
      pause();
  }
  if (strcmp(how, "garbage") == 0) {
    (void)!write(3, "\0\0\0\5hello", 9);
    for (;;)
      pause();
  }
  if (strcmp(how, "truncated") == 0) {
    (void)!write(3, "\0\0\0\50{\"id\"", 9);
    _exit(0);
  }
  if (strcmp(how, "big") == 0) {
    char *s = calloc(1, 5000);
    memset(s, 'x', 4999);
    json_t *j = json_string(s);
    free(s);
    return j;
  }
  if (strcmp(how, "unencodable") == 0)
    return json_stringn_nocheck("\xff\xfe", 2);
  return NULL;
}

static json_t *fn_print(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  fputs(json_string_value(args), stdout);
  fflush(stdout);
  return NULL;
}

static void register_all(void) {
  CHECK_OK(ct_process_register("echo", fn_echo, NULL));
  CHECK_OK(ct_process_register("id", fn_id, NULL));
  CHECK_OK(ct_process_register("fail", fn_fail, NULL));
  CHECK_OK(ct_process_register("sleep", fn_sleep, NULL));
  CHECK_OK(ct_process_register("crash", fn_crash, NULL));
  CHECK_OK(ct_process_register("print", fn_print, NULL));
}

/* ---- helpers ---- */

static ct_supervisor_t *start_sup(void) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
}

static void stop_sup(ct_supervisor_t *sup) {
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

static ct_task_t *run(ct_supervisor_t *sup, const char *fn, json_t *args) {
  ct_task_t *t;
  CHECK_OK(ct_process_task(sup, fn, args, NULL, &t));
  json_decref(args);
  CHECK_OK(ct_task_wait(t, 120));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  return t;
}

static int child_pid(ct_supervisor_t *sup) {
  ct_task_t *t = run(sup, "id", NULL);
  int pid = (int)json_integer_value(json_object_get(ct_task_result(t), "pid"));
  ct_task_unref(t);
  return pid;
}


static const char *error_class(ct_task_t *t) { return ct_result_error_class(ct_task_result(t)); }

/* ---- tests ---- */

TEST(round_trip_created_before_start) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_process_pool_create(sup, NULL));
  CHECK_OK(ct_supervisor_start(sup));
  ct_task_t *t = run(sup, "echo", json_pack("{s:[i,i], s:s}", "a", 1, 2, "s", "h\xc3\xa9"));
  json_t *want = json_pack("{s:[i,i], s:s}", "a", 1, 2, "s", "h\xc3\xa9");
  CHECK(json_equal(ct_task_result(t), want));
  CHECK(!ct_task_failed(t));
  json_decref(want);
  ct_task_unref(t);
  t = run(sup, "id", NULL);
  CHECK_EQ_INT(json_integer_value(json_object_get(ct_task_result(t), "id")), ct_task_id(t));
  CHECK(json_integer_value(json_object_get(ct_task_result(t), "pid")) != getpid());
  ct_task_unref(t);
  t = run(sup, "echo", NULL);
  CHECK(json_is_null(ct_task_result(t)));
  ct_task_unref(t);
  want = json_pack("[o]", json_stringn("a\0b", 3)); /* U+0000 is valid JSON */
  t = run(sup, "echo", json_incref(want));
  CHECK(json_equal(ct_task_result(t), want));
  json_decref(want);
  ct_task_unref(t);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.completed, 4);
  json_t *js = ct_supervisor_stats_json(sup);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(js, "processes"), "completed")), 4);
  json_decref(js);
  stop_sup(sup);
}

TEST(error_results_and_unknown_function) {
  ct_supervisor_t *sup = start_sup();
  CHECK_OK(ct_process_pool_create(sup, NULL)); /* after start */
  ct_task_t *t = run(sup, "fail", NULL);
  CHECK(ct_task_failed(t));
  CHECK_EQ_STR(error_class(t), "ValueError");
  ct_task_unref(t);
  t = run(sup, "no-such-function", NULL);
  CHECK_EQ_STR(error_class(t), "UnknownTask");
  ct_task_unref(t);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.failed, 2);
  stop_sup(sup);
}

static void expect_crash(ct_supervisor_t *sup, const char *how, const char *cls, int sig,
                         int code) {
  int before = child_pid(sup);
  ct_task_t *t = run(sup, "crash", json_string(how));
  CHECK_EQ_STR(error_class(t), cls);
  if (sig || code) {
    json_t *args = json_object_get(json_object_get(ct_task_result(t), "exception"), "args");
    CHECK_EQ_INT(json_integer_value(json_array_get(args, 0)), before);
    CHECK_EQ_STR(json_string_value(json_array_get(args, 1)), sig ? "signal" : "exit");
    CHECK_EQ_INT(json_integer_value(json_array_get(args, 2)), sig ? sig : code);
  }
  ct_task_unref(t);
  int after = child_pid(sup);
  CHECK(after != before); /* replaced */
}

TEST(crashes_become_error_results_and_children_are_replaced) {
  ct_supervisor_t *sup = start_sup();
  ct_process_pool_opts_t o = CT_PROCESS_POOL_OPTS_INIT;
  o.pool_size = 1;
  o.max_frame = 1024;
  o.task_timeout = 3;
  CHECK_OK(ct_process_pool_create(sup, &o));
  expect_crash(sup, "abort", "ProcessCrashed", SIGABRT, 0);
  expect_crash(sup, "sigkill", "ProcessCrashed", SIGKILL, 0);
  expect_crash(sup, "exit3", "ProcessCrashed", 0, 3);
  expect_crash(sup, "hang", "TimeoutError", 0, 0);
  expect_crash(sup, "close", "ProcessCrashed", 0, 0);
  expect_crash(sup, "garbage", "ProtocolError", 0, 0);
  expect_crash(sup, "truncated", "ProtocolError", 0, 0);
  /* NotSerializable: the child answers with an error and stays. */
  ct_task_t *t = run(sup, "crash", json_string("big"));
  CHECK_EQ_STR(error_class(t), "NotSerializable");
  ct_task_unref(t);
  t = run(sup, "crash", json_string("unencodable"));
  CHECK_EQ_STR(error_class(t), "NotSerializable");
  ct_task_unref(t);
  json_t *js = ct_supervisor_stats_json(sup);
  json_t *p = json_object_get(js, "processes");
  CHECK_EQ_INT(json_integer_value(json_object_get(p, "timeouts")), 1);
  CHECK(json_integer_value(json_object_get(p, "crashed")) >= 4);
  json_decref(js);
  stop_sup(sup);
}

TEST(bad_input) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_EQ_INT(ct_process_register(NULL, fn_echo, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_process_register("", fn_echo, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_process_register("caf\xe9", fn_echo, NULL), CT_EINVAL); /* not UTF-8 */
  CHECK_EQ_INT(ct_process_register("x", NULL, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_process_register("echo", fn_echo, NULL), CT_EBUSY);
  ct_process_pool_opts_t o = CT_PROCESS_POOL_OPTS_INIT;
  o.pool_size = 0;
  CHECK_EQ_INT(ct_process_pool_create(sup, &o), CT_EINVAL);
  o.pool_size = -1;
  CHECK_EQ_INT(ct_process_pool_create(sup, &o), CT_EINVAL);
  o.pool_size = 1;
  o.task_timeout = -1;
  CHECK_EQ_INT(ct_process_pool_create(sup, &o), CT_EINVAL);
  CHECK_EQ_INT(ct_process_pool_stop(sup, 0), CT_ENOENT);
  CHECK_OK(ct_supervisor_start(sup));
  ct_task_t *t = (ct_task_t *)1;
  CHECK_EQ_INT(ct_process_task(sup, "echo", NULL, NULL, &t), CT_ENOENT);
  CHECK(t == NULL);
  CHECK_OK(ct_process_pool_create(sup, NULL));
  CHECK_EQ_INT(ct_process_pool_create(sup, NULL), CT_EBUSY);
  CHECK_EQ_INT(ct_process_task(sup, NULL, NULL, NULL, &t), CT_EINVAL);
  CHECK_EQ_INT(ct_process_task(sup, "caf\xe9", NULL, NULL, &t), CT_EINVAL); /* was CT_ENOMEM */
  json_t *bad = json_pack("{s:o}", "s", json_stringn_nocheck("\xff", 1));
  CHECK_EQ_INT(ct_process_task(sup, "echo", bad, NULL, &t), CT_EINVAL);
  json_decref(bad);
  ct_task_opts_t to = CT_TASK_OPTS_INIT;
  to.arg_free = free; /* a process task has no arg to free */
  CHECK_EQ_INT(ct_process_task(sup, "echo", NULL, &to, &t), CT_EINVAL);
  to.arg_free = NULL;
  to.timeout = -1;
  CHECK_EQ_INT(ct_process_task(sup, "echo", NULL, &to, &t), CT_EINVAL);
  to.timeout = 0;
  to.priority = 300;
  CHECK_EQ_INT(ct_process_task(sup, "echo", NULL, &to, &t), CT_EINVAL);
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  CHECK_OK(ct_process_pool_stop(sup, -1));
  CHECK_EQ_INT(ct_process_task(sup, "echo", NULL, NULL, &t), CT_ESHUTDOWN);
  CHECK(t == NULL);
  stop_sup(sup);
}

/* ---- under load, children killed from outside ---- */

#define LOAD_TASKS 300
static atomic_int done_calls[LOAD_TASKS];
static atomic_bool killing;

static void count_done(ct_task_t *t, void *data) {
  (void)t;
  atomic_fetch_add(&done_calls[(intptr_t)data], 1);
}

static void *killer(void *arg) {
  (void)arg;
  unsigned seed = 7;
  while (atomic_load(&killing)) {
    int servers[4], kids[16];
    int ns = children_of(getpid(), servers, 4);
    for (int i = 0; i < ns; i++) {
      int nk = children_of(servers[i], kids, 16);
      if (nk > 0)
        kill(kids[rand_r(&seed) % nk], SIGKILL);
    }
    check_sleep(0.02);
  }
  return NULL;
}

TEST(every_task_terminal_once_while_children_are_killed) {
  ct_supervisor_t *sup = start_sup();
  ct_process_pool_opts_t o = CT_PROCESS_POOL_OPTS_INIT;
  o.pool_size = 2;
  o.reserve_normal = 1;
  CHECK_OK(ct_process_pool_create(sup, &o));
  ct_task_t *tasks[LOAD_TASKS];
  atomic_store(&killing, true);
  pthread_t th;
  pthread_create(&th, NULL, killer, NULL);
  for (int i = 0; i < LOAD_TASKS; i++) {
    ct_task_opts_t to = CT_TASK_OPTS_INIT;
    to.priority = i % 3 == 0 ? CT_PRIORITY_LOW : CT_PRIORITY_NORMAL;
    to.on_done = count_done;
    to.done_data = (void *)(intptr_t)i;
    json_t *args = json_real(0.001);
    CHECK_OK(ct_process_task(sup, "sleep", args, &to, &tasks[i]));
    json_decref(args);
  }
  for (int i = 0; i < LOAD_TASKS; i += 50)
    ct_task_cancel(tasks[i]);
  CHECK_OK(ct_wait_completed(tasks, LOAD_TASKS, 300));
  atomic_store(&killing, false);
  pthread_join(th, NULL);
  int ok = 0, crashed = 0, canceled = 0;
  for (int i = 0; i < LOAD_TASKS; i++) {
    CHECK_EQ_INT(atomic_load(&done_calls[i]), 1);
    if (ct_task_status(tasks[i]) == CT_TASK_CANCELED ||
        (ct_task_failed(tasks[i]) && strcmp(error_class(tasks[i]), "CancelledError") == 0))
      canceled++; /* before it started, or its child was killed */
    else if (!ct_task_failed(tasks[i]))
      ok++;
    else if (strcmp(error_class(tasks[i]), "ProcessCrashed") == 0)
      crashed++;
    ct_task_unref(tasks[i]);
  }
  fprintf(stderr, "ok %d, crashed %d, canceled %d\n", ok, crashed, canceled);
  CHECK_EQ_INT(ok + crashed + canceled, LOAD_TASKS);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.completed + st.failed + st.canceled, LOAD_TASKS);
  CHECK_EQ_INT(st.queued + st.running, 0);
  child_pid(sup); /* the pool still works */
  stop_sup(sup);
}

/* ---- completion on the submitting loop ---- */

/* One process task submitted from a loop thread, and where it completed. */
typedef struct {
  ct_supervisor_t *sup;
  double seconds;
  _Atomic(ct_task_t *) task;
  _Atomic(ct__loop_t *) done_on;
  atomic_int done_calls;
} loop_submission_t;

static void record_loop(ct_task_t *t, void *data) {
  (void)t;
  loop_submission_t *ls = data;
  atomic_store(&ls->done_on, ct__loop_current());
  atomic_fetch_add(&ls->done_calls, 1);
}

static void submit_from_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  loop_submission_t *ls = data;
  ct_task_opts_t to = CT_TASK_OPTS_INIT;
  to.on_done = record_loop;
  to.done_data = ls;
  json_t *args = json_real(ls->seconds);
  ct_task_t *t;
  CHECK_OK(ct_process_task(ls->sup, "sleep", args, &to, &t));
  json_decref(args);
  atomic_store(&ls->task, t);
}

/* Submit a process task to sup from `loop`'s thread; return once the
 * submission returned. */
static void submit_on(ct_loop_t *loop, ct_supervisor_t *sup, double seconds,
                      loop_submission_t *ls) {
  memset(ls, 0, sizeof *ls);
  ls->sup = sup;
  ls->seconds = seconds;
  CHECK_OK(ct_loop_call(loop, submit_from_loop, ls));
  WAIT_FOR(atomic_load(&ls->task) != NULL);
}

TEST(callback_runs_on_the_submitting_loop) {
  ct_supervisor_t *sup = start_sup();
  CHECK_OK(ct_process_pool_create(sup, NULL));
  ct_loop_t *extra;
  CHECK_OK(ct_loop_create(sup, "extra", &extra));
  loop_submission_t ls;
  submit_on(extra, sup, 0, &ls);
  CHECK_OK(ct_task_wait(ls.task, 60));
  CHECK(atomic_load(&ls.done_on) == extra);
  CHECK_EQ_INT(atomic_load(&ls.done_calls), 1);
  ct_task_unref(ls.task);
  stop_sup(sup);
}

/* Another supervisor's loops may be freed before a task submitted from
 * them ends: such a task completes on the pool's own loop, once. */
TEST(task_from_another_supervisors_loop_outlives_it) {
  ct_supervisor_t *sup = start_sup();
  CHECK_OK(ct_process_pool_create(sup, NULL));
  ct_supervisor_t *other = start_sup();
  ct_loop_t *extra;
  CHECK_OK(ct_loop_create(other, "other-extra", &extra));
  loop_submission_t ls[3];
  submit_on(ct_supervisor_loop(other), sup, 0, &ls[0]);
  CHECK_OK(ct_task_wait(ls[0].task, 60));
  submit_on(ct_supervisor_loop(other), sup, 0.5, &ls[1]);
  submit_on(extra, sup, 0.5, &ls[2]);
  stop_sup(other); /* freed while two tasks still run */
  ct_task_t *all[3] = {ls[0].task, ls[1].task, ls[2].task};
  CHECK_OK(ct_wait_completed(all, 3, 60));
  for (int i = 0; i < 3; i++) {
    CHECK(!ct_task_failed(all[i]));
    CHECK_EQ_INT(atomic_load(&ls[i].done_calls), 1);
    CHECK(atomic_load(&ls[i].done_on) == ct_supervisor_loop(sup));
    ct_task_unref(all[i]);
  }
  stop_sup(sup);
}

/* ---- stop ---- */

TEST(graceful_stop_leaves_no_zombie_and_no_descriptor) {
  int fds_before = count_fds();
  int kids[64];
  CHECK_EQ_INT(children_of(getpid(), kids, 64), 0);
  ct_supervisor_t *sup = start_sup();
  ct_process_pool_opts_t o = CT_PROCESS_POOL_OPTS_INIT;
  o.pool_size = 2;
  CHECK_OK(ct_process_pool_create(sup, &o));
  ct_task_t *tasks[6];
  for (int i = 0; i < 6; i++) {
    json_t *args = json_real(0.05);
    CHECK_OK(ct_process_task(sup, "sleep", args, NULL, &tasks[i]));
    json_decref(args);
  }
  int servers[4], grandkids[64];
  CHECK_EQ_INT(children_of(getpid(), servers, 4), 1);
  int n = children_of(servers[0], grandkids, 64);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  for (int i = 0; i < 6; i++) {
    CHECK_EQ_INT(ct_task_status(tasks[i]), CT_TASK_COMPLETED);
    CHECK(!ct_task_failed(tasks[i]));
    ct_task_unref(tasks[i]);
  }
  CHECK_OK(ct_supervisor_free(sup));
  CHECK_EQ_INT(children_of(getpid(), kids, 64), 0); /* fork server reaped */
  CHECK_EQ_INT(waitpid(-1, NULL, WNOHANG), -1);     /* not even a zombie */
  for (int i = 0; i < n; i++) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", grandkids[i]);
    CHECK(access(path, F_OK) != 0); /* children gone and reaped */
  }
  CHECK_EQ_INT(count_fds(), fds_before);
}

TEST(cancel_mode_and_never_started) {
  ct_supervisor_t *sup = start_sup();
  ct_process_pool_opts_t o = CT_PROCESS_POOL_OPTS_INIT;
  o.pool_size = 1;
  CHECK_OK(ct_process_pool_create(sup, &o));
  ct_task_t *tasks[5];
  for (int i = 0; i < 5; i++) {
    json_t *args = json_real(0.1);
    CHECK_OK(ct_process_task(sup, "sleep", args, NULL, &tasks[i]));
    json_decref(args);
  }
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, -1));
  for (int i = 0; i < 5; i++) {
    CHECK(ct_task_is_terminal(tasks[i]));
    ct_task_unref(tasks[i]);
  }
  CHECK_OK(ct_supervisor_free(sup));
  /* A pool whose supervisor never started. */
  int fds_before = count_fds();
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_process_pool_create(sup, NULL));
  CHECK_OK(ct_process_pool_stop(sup, -1)); /* returns: no loop to wait on */
  CHECK_EQ_INT(ct_process_task(sup, "echo", NULL, NULL, NULL), CT_ESHUTDOWN);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
  int kids[4];
  CHECK_EQ_INT(children_of(getpid(), kids, 4), 0);
  CHECK_EQ_INT(count_fds(), fds_before);
}

/* A CANCEL stop after a DRAIN stop still under way cancels what is still
 * queued for the process pool too, as a first CANCEL stop would. */
TEST(cancel_stop_after_drain_stop_cancels_queued_process_tasks) {
  ct_supervisor_t *sup = start_sup();
  ct_process_pool_opts_t o = CT_PROCESS_POOL_OPTS_INIT;
  o.pool_size = 1;
  CHECK_OK(ct_process_pool_create(sup, &o));
  ct_task_t *running, *queued;
  json_t *args = json_real(2.0);
  CHECK_OK(ct_process_task(sup, "sleep", args, NULL, &running));
  json_decref(args);
  for (int i = 0; i < 60000 && ct_task_status(running) != CT_TASK_STARTED; i++)
    check_sleep(0.001);
  CHECK_EQ_INT(ct_task_status(running), CT_TASK_STARTED);
  CHECK_OK(ct_process_task(sup, "echo", NULL, NULL, &queued));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0));
  CHECK_EQ_INT(ct_task_status(queued), CT_TASK_QUEUED); /* its one child is busy */
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, 0));
  CHECK_EQ_INT(ct_task_status(queued), CT_TASK_CANCELED);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_CANCEL, -1));
  CHECK_EQ_INT(ct_task_status(running), CT_TASK_COMPLETED);
  CHECK_EQ_INT(ct_task_status(queued), CT_TASK_CANCELED);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT((int)st.queued, 0);
  CHECK_EQ_INT((int)st.canceled, 1);
  CHECK_EQ_INT((int)(st.submitted - st.completed - st.failed - st.canceled), 0);
  ct_task_unref(running);
  ct_task_unref(queued);
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(host_forks_after_start) {
  ct_supervisor_t *sup = start_sup();
  CHECK_OK(ct_process_pool_create(sup, NULL));
  int before = child_pid(sup);
  pid_t host_child = fork();
  if (host_child == 0)
    _exit(0); /* a host's child that neither uses ctasker nor lingers */
  CHECK(host_child > 0);
  CHECK_EQ_INT(waitpid(host_child, NULL, 0), host_child);
  CHECK(child_pid(sup) > 0);
  CHECK(before > 0);
  stop_sup(sup);
  int kids[4];
  CHECK_EQ_INT(children_of(getpid(), kids, 4), 0);
}

/* What the parent had buffered for stdout when the pool was created is the
 * parent's to write, once; a child that flushes writes only its own. */
TEST(children_do_not_write_the_parents_buffered_output) {
  FILE *capture = tmpfile();
  CHECK(capture != NULL);
  fflush(stdout);
  int saved = dup(1);
  CHECK(dup2(fileno(capture), 1) == 1);
  fputs("parent;", stdout); /* buffered: no newline, no flush */
  ct_supervisor_t *sup = start_sup();
  CHECK_OK(ct_process_pool_create(sup, NULL));
  ct_task_unref(run(sup, "print", json_string("child;")));
  stop_sup(sup);
  fflush(stdout);
  CHECK(dup2(saved, 1) == 1);
  close(saved);
  char text[128] = "";
  CHECK(pread(fileno(capture), text, sizeof text - 1, 0) >= 0);
  fclose(capture);
  CHECK_EQ_STR(text, "child;parent;");
}

int main(void) {
  register_all();
  RUN(round_trip_created_before_start);
  RUN(error_results_and_unknown_function);
  RUN(crashes_become_error_results_and_children_are_replaced);
  RUN(bad_input);
  RUN(every_task_terminal_once_while_children_are_killed);
  RUN(callback_runs_on_the_submitting_loop);
  RUN(task_from_another_supervisors_loop_outlives_it);
  RUN(graceful_stop_leaves_no_zombie_and_no_descriptor);
  RUN(cancel_mode_and_never_started);
  RUN(cancel_stop_after_drain_stop_cancels_queued_process_tasks);
  RUN(host_forks_after_start);
  RUN(children_do_not_write_the_parents_buffered_output);
  return check_done();
}
