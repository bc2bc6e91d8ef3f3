/* The process pool under faults from outside: a child that leaves a
 * process of its own behind when it crashes, a fork server that is killed
 * (and one that cannot be started again: fork() fails through the linker's
 * --wrap while fail_fork is set), and a parent out of descriptors while a
 * child is replaced. Each time: every task gets one clear result, nothing
 * hangs, no zombie is left, and the pool works again once it can. */
#include <ctasker.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "pool.h"

/* ---- fork(), failing on demand (the library's calls are routed here) ---- */

/* In this process while fail_fork is set; in the fork server (a copy of
 * this process, which the flag no longer reaches) and here while the file
 * named fail_fork_file exists. */
static atomic_bool fail_fork;
static char fail_fork_file[64];

pid_t __real_fork(void);
pid_t __wrap_fork(void);
pid_t __wrap_fork(void) {
  if (atomic_load(&fail_fork) || (fail_fork_file[0] && access(fail_fork_file, F_OK) == 0)) {
    errno = EAGAIN;
    return -1;
  }
  return __real_fork();
}

/* vasprintf(), which ct_error_new() formats with, failing on demand on
 * every thread but the test's own (the pool's loop thread, where tasks'
 * errors are made), while fail_errors is set. */
static atomic_bool fail_errors;
static pthread_t test_thread;

int __real_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap) {
  if (atomic_load(&fail_errors) && !pthread_equal(pthread_self(), test_thread)) {
    *out = NULL;
    return -1;
  }
  return __real_vasprintf(out, fmt, ap);
}

/* ---- functions the children run ---- */

/* Start a helper that keeps every inherited descriptor (or execs `sleep`,
 * which keeps what is not close-on-exec), write its pid to args.path, and
 * die. The helper ends by itself after a minute should a test not kill it. */
static json_t *fn_helper_then_crash(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  pid_t helper = fork();
  if (helper == 0) {
    alarm(60);
    if (json_is_true(json_object_get(args, "exec")))
      execlp("sleep", "sleep", "1000", (char *)NULL);
    for (;;)
      pause();
  }
  FILE *f = fopen(json_string_value(json_object_get(args, "path")), "w");
  fprintf(f, "%d\n", (int)helper);
  fclose(f);
  raise(SIGKILL);
  return NULL;
}

/* Replace the child by `sleep 30`: its socket, close-on-exec, closes. */
static json_t *fn_exec_sleep(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  execlp("sleep", "sleep", "30", (char *)NULL);
  return NULL;
}

/* ---- the log, as the user's callback sees it ---- */

static atomic_int log_errors, log_restarted, log_failed_start, log_tasks_failed, log_unanswered,
    log_no_fork;

static void count_log(int level, const char *msg, void *data) {
  (void)data;
  if (level >= CT_LOG_ERROR)
    atomic_fetch_add(&log_errors, 1);
  if (strstr(msg, "started a new fork server"))
    atomic_fetch_add(&log_restarted, 1);
  if (strstr(msg, "could not start the process pool's fork server"))
    atomic_fetch_add(&log_failed_start, 1);
  if (strstr(msg, "process task(s) failed"))
    atomic_fetch_add(&log_tasks_failed, 1);
  if (strstr(msg, "left a request unanswered"))
    atomic_fetch_add(&log_unanswered, 1);
  if (strstr(msg, "could not fork a pool child"))
    atomic_fetch_add(&log_no_fork, 1);
}

/* ---- helpers ---- */

static ct_supervisor_t *start_pool(int pool_size, double task_timeout) {
  atomic_store(&log_errors, 0);
  atomic_store(&log_restarted, 0);
  atomic_store(&log_failed_start, 0);
  atomic_store(&log_tasks_failed, 0);
  atomic_store(&log_unanswered, 0);
  atomic_store(&log_no_fork, 0);
  ct_supervisor_opts_t so = CT_SUPERVISOR_OPTS_INIT;
  so.log = count_log;
  return pool_sup_start_pool_last(&so, pool_size, task_timeout);
}

static ct_task_t *submit(ct_supervisor_t *sup, const char *fn, json_t *args) {
  ct_task_t *t;
  CHECK_OK(ct_process_task(sup, fn, args, NULL, &t));
  json_decref(args);
  return t;
}

static const char *error_class(ct_task_t *t) { return ct_result_error_class(ct_task_result(t)); }

static json_t *error_arg(ct_task_t *t, size_t i) {
  json_t *exception = json_object_get(ct_task_result(t), "exception");
  return json_array_get(json_object_get(exception, "args"), i);
}

static int running(ct_supervisor_t *sup) {
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  return (int)st.running;
}

/* ---- a child that starts a helper, then crashes ---- */

/* Whether pid runs the program `sleep` (has exec'd it). */
static bool is_sleep(int pid) {
  char path[64], comm[32] = "";
  snprintf(path, sizeof path, "/proc/%d/comm", pid);
  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  bool ok = fgets(comm, sizeof comm, f) != NULL && strcmp(comm, "sleep\n") == 0;
  fclose(f);
  return ok;
}

static void helper_then_crash(ct_supervisor_t *sup, bool exec) {
  char path[64];
  snprintf(path, sizeof path, "/tmp/ct-helper-%d", (int)getpid());
  unlink(path);
  int before = pool_child_pid(sup, "id");
  ct_task_t *t =
      submit(sup, "helper_then_crash", json_pack("{s:s, s:b}", "path", path, "exec", exec));
  CHECK_OK(ct_task_wait(t, 10)); /* seen at once, not when the helper ends */
  CHECK_EQ_STR(error_class(t), "ProcessCrashed");
  CHECK_EQ_INT(json_integer_value(error_arg(t, 0)), before);
  CHECK_EQ_STR(json_string_value(error_arg(t, 1)), "signal");
  CHECK_EQ_INT(json_integer_value(error_arg(t, 2)), SIGKILL);
  ct_task_unref(t);
  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  int helper = 0;
  CHECK(fscanf(f, "%d", &helper) == 1 && helper > 0);
  fclose(f);
  unlink(path);
  if (exec) {
    /* The exec'd program holds no socket of the pool's. */
    WAIT_FOR(is_sleep(helper));
    CHECK_EQ_INT(sockets_of(helper), 0);
  }
  CHECK_OK(kill(helper, SIGKILL));
  WAIT_FOR(pool_ended(helper));
  CHECK(pool_child_pid(sup, "id") != before); /* replaced; the pool goes on */
}

TEST(a_child_that_leaves_a_helper_and_crashes_is_seen_crashed_at_once) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(1, 0);
  helper_then_crash(sup, false);
  helper_then_crash(sup, true);
  pool_stop_and_check_nothing_left(sup, fds_before);
}

/* ---- the fork server is killed ---- */

TEST(fork_server_killed_is_replaced_and_a_hung_task_still_times_out) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(1, 2);
  int old_child = pool_child_pid(sup, "id");
  int old_server = pool_fork_server();
  ct_task_t *hung = submit(sup, "hang", NULL);
  WAIT_FOR(running(sup) == 1);
  CHECK_OK(kill(old_server, SIGKILL));
  CHECK_OK(ct_task_wait(hung, 30));
  CHECK_EQ_STR(error_class(hung), "TimeoutError");
  ct_task_unref(hung);
  WAIT_FOR(pool_ended(old_child)); /* the orphan was killed */
  WAIT_FOR(atomic_load(&log_restarted) >= 1);
  int new_child = pool_child_pid(sup, "id");
  CHECK(new_child != old_child);
  int new_server = pool_fork_server();
  CHECK(new_server != old_server);
  int kids[4];
  CHECK_EQ_INT(children_of(new_server, kids, 4), 1);
  CHECK_EQ_INT(kids[0], new_child);
  pool_stop_and_check_nothing_left(sup, fds_before);
}

/* A fork server that stops answering (stopped here with SIGSTOP; a fork
 * server forked while another thread held a lock it needs hangs the same
 * way) is killed once a request has waited CT__SERVER_ANSWER_MAX (10 s)
 * for its answer, and replaced: a child that crashed meanwhile, whose reap
 * the stopped server was asked for, finishes its task, and the pool works
 * again. Before, the task waited for ever, and so did a stop. */
TEST(a_fork_server_that_stops_answering_is_killed_and_replaced) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(1, 0);
  int old_child = pool_child_pid(sup, "id");
  int old_server = pool_fork_server();
  CHECK_OK(kill(old_server, SIGSTOP));
  ct_task_t *t = submit(sup, "killed", NULL);
  CHECK_OK(ct_task_wait(t, 60));
  CHECK_EQ_STR(error_class(t), "ProcessCrashed");
  ct_task_unref(t);
  CHECK_EQ_INT(atomic_load(&log_unanswered), 1);
  WAIT_FOR(atomic_load(&log_restarted) >= 1);
  CHECK(pool_gone(old_server));
  int new_child = pool_child_pid(sup, "id");
  CHECK(new_child != old_child);
  CHECK(pool_fork_server() != old_server);
  pool_stop_and_check_nothing_left(sup, fds_before);
}

/* A fork server that stalls (here: stopped) when the pool tells it to end
 * is killed once it has had its children's grace and the answer bound: the
 * stop waited for it for ever. */
TEST(a_fork_server_that_never_ends_is_killed_and_the_stop_ends) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(1, 0);
  int child = pool_child_pid(sup, "id");
  int server = pool_fork_server();
  CHECK_OK(kill(server, SIGSTOP));
  pool_stop_and_check_nothing_left(sup, fds_before); /* within 60 s: it took ~12 */
  CHECK_EQ_INT(atomic_load(&log_unanswered), 1);
  CHECK(pool_gone(server));
  WAIT_FOR(pool_ended(child));
}

TEST(stop_completes_when_the_fork_server_died_under_a_hung_task) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(1, 2);
  int old_child = pool_child_pid(sup, "id");
  ct_task_t *tasks[4];
  tasks[0] = submit(sup, "hang", NULL);
  WAIT_FOR(running(sup) == 1);
  for (int i = 1; i < 4; i++)
    tasks[i] = submit(sup, "id", NULL);
  atomic_store(&fail_fork, true); /* no new fork server */
  CHECK_OK(kill(pool_fork_server(), SIGKILL));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 30));
  atomic_store(&fail_fork, false);
  CHECK_EQ_STR(error_class(tasks[0]), "TimeoutError");
  for (int i = 1; i < 4; i++)
    CHECK_EQ_STR(error_class(tasks[i]), "ProcessPoolUnavailable");
  for (int i = 0; i < 4; i++)
    ct_task_unref(tasks[i]);
  CHECK(atomic_load(&log_failed_start) >= 1);
  CHECK(atomic_load(&log_tasks_failed) >= 1);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.failed, 4);
  CHECK_EQ_INT(st.completed, 1);
  CHECK_EQ_INT(st.queued + st.running, 0);
  WAIT_FOR(pool_ended(old_child));
  CHECK_OK(ct_supervisor_free(sup));
  int kids[4];
  CHECK_EQ_INT(children_of(getpid(), kids, 4), 0);
  CHECK_EQ_INT(count_fds(), fds_before);
}

static long long children_forked(ct_supervisor_t *sup) {
  json_t *stats = ct_supervisor_stats_json(sup);
  CHECK(stats != NULL);
  json_t *n = json_object_get(json_object_get(stats, "processes"), "children_forked");
  CHECK(json_is_integer(n));
  long long forked = json_integer_value(n);
  json_decref(stats);
  return forked;
}

/* A DRAIN stop waits for a running task; meanwhile the idle child is
 * killed from outside, and the running one is killed at its timeout.
 * Neither is replaced: a stopping pool with nothing queued needs no child.
 * Before, every death was replaced, so that children killed now and then
 * during a stop could keep it from ending (the soak saw stops wait for more
 * than 10 s). */
TEST(a_stopping_pool_with_nothing_queued_replaces_no_child) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(2, 3);
  ct_task_t *hung = submit(sup, "hang", NULL);
  WAIT_FOR(running(sup) == 1);
  int idle = pool_child_pid(sup, "id");
  long long forked = children_forked(sup);
  CHECK_EQ_INT(forked, 2);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0));
  CHECK_OK(kill(idle, SIGKILL));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 60));
  CHECK_EQ_STR(error_class(hung), "TimeoutError");
  ct_task_unref(hung);
  CHECK_EQ_INT(children_forked(sup), forked);
  CHECK_OK(ct_supervisor_free(sup));
  int kids[4];
  CHECK_EQ_INT(children_of(getpid(), kids, 4), 0);
  CHECK_EQ_INT(count_fds(), fds_before);
}

/* A pool of one child whose fork server is killed while fork() fails, so
 * that none starts again, and whose last child (the orphan) is killed:
 * nothing is left to run a task. fail_fork stays set. */
static ct_supervisor_t *start_pool_left_with_nothing(void) {
  ct_supervisor_t *sup = start_pool(1, 0);
  int old_child = pool_child_pid(sup, "id");
  atomic_store(&fail_fork, true);
  CHECK_OK(kill(pool_fork_server(), SIGKILL));
  WAIT_FOR(atomic_load(&log_failed_start) >= 1);
  CHECK_OK(kill(old_child, SIGKILL));
  return sup;
}

TEST(tasks_fail_clearly_while_no_fork_server_starts_then_it_comes_back) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool_left_with_nothing();
  /* A task may still meet the dying orphan; the next ones fail clearly. */
  int unavailable = 0, crashed = 0;
  for (int i = 0; i < 2000 && unavailable < 3; i++) {
    ct_task_t *t = submit(sup, "id", NULL);
    CHECK_OK(ct_task_wait(t, 30));
    CHECK(ct_task_failed(t));
    if (strcmp(error_class(t), "ProcessPoolUnavailable") == 0) {
      unavailable++;
      /* started to be failed: its start time is stamped (it read 0) */
      CHECK(ct_task_time_started(t) > 0);
      CHECK(ct_task_time_started(t) <= ct_task_time_completed(t));
    } else {
      CHECK_EQ_STR(error_class(t), "ProcessCrashed");
      crashed++;
    }
    ct_task_unref(t);
  }
  CHECK_EQ_INT(unavailable, 3);
  CHECK(crashed <= 1);
  WAIT_FOR(atomic_load(&log_tasks_failed) >= 1); /* logged just after */
  CHECK_EQ_INT(atomic_load(&log_restarted), 0);
  atomic_store(&fail_fork, false); /* the next retry starts one */
  WAIT_FOR(atomic_load(&log_restarted) == 1);
  ct_task_t *t = submit(sup, "id", NULL);
  CHECK_OK(ct_task_wait(t, 60));
  CHECK(!ct_task_failed(t));
  ct_task_unref(t);
  pool_stop_and_check_nothing_left(sup, fds_before);
}

/* A task whose error cannot be allocated (out of memory) still fails: it
 * ends with the MemoryError its call brought along. It completed as a
 * success, with a null result. */
TEST(a_task_whose_error_cannot_be_allocated_still_fails) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool_left_with_nothing(); /* tasks fail */
  atomic_store(&fail_errors, true);
  for (int i = 0; i < 3; i++) {
    ct_task_t *t = submit(sup, "id", NULL);
    CHECK_OK(ct_task_wait(t, 30));
    CHECK(ct_task_failed(t));
    CHECK_EQ_STR(error_class(t), "MemoryError");
    ct_task_unref(t);
  }
  atomic_store(&fail_errors, false);
  atomic_store(&fail_fork, false);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.failed, 3);
  pool_stop_and_check_nothing_left(sup, fds_before);
}

/* A child orphaned by its fork server's death that closes its socket but
 * lives on (it exec'd) is killed: nobody else would end it, and it ran on
 * past the pool's stop and the supervisor's free. */
TEST(an_orphan_that_closes_its_socket_is_killed) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(1, 0);
  int child = pool_child_pid(sup, "id");
  CHECK_OK(kill(pool_fork_server(), SIGKILL));
  WAIT_FOR(atomic_load(&log_restarted) >= 1); /* the child is an orphan now */
  ct_task_t *t = submit(sup, "exec_sleep", NULL);
  CHECK_OK(ct_task_wait(t, 30));
  CHECK_EQ_STR(error_class(t), "ProcessCrashed");
  ct_task_unref(t);
  WAIT_FOR(pool_ended(child));
  pool_stop_and_check_nothing_left(sup, fds_before);
}

/* The fork server lives but cannot fork a child: with no child left, the
 * queued tasks fail clearly, as with no fork server, instead of waiting
 * for ever (and a DRAIN stop with them); the log says so, not at every
 * retry; once it can fork again, tasks run. */
TEST(tasks_fail_clearly_while_the_fork_server_cannot_fork_then_it_can) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(1, 0);
  int child = pool_child_pid(sup, "id");
  FILE *f = fopen(fail_fork_file, "w");
  CHECK(f);
  fclose(f);
  CHECK_OK(kill(child, SIGKILL)); /* its replacement cannot be forked */
  int unavailable = 0, crashed = 0;
  for (int i = 0; i < 2000 && unavailable < 3; i++) {
    ct_task_t *t = submit(sup, "id", NULL);
    CHECK_OK(ct_task_wait(t, 30)); /* it waited for ever */
    CHECK(ct_task_failed(t));
    if (strcmp(error_class(t), "ProcessPoolUnavailable") == 0)
      unavailable++;
    else
      crashed++; /* it met the dying child */
    ct_task_unref(t);
  }
  CHECK_EQ_INT(unavailable, 3);
  CHECK(crashed <= 1);
  WAIT_FOR(atomic_load(&log_tasks_failed) >= 1);
  CHECK_EQ_INT(atomic_load(&log_restarted), 0); /* the fork server lived on */
  CHECK_OK(unlink(fail_fork_file));
  ct_task_t *t = NULL;
  for (int tries = 0; tries < 1000; tries++) { /* until a retry has forked one */
    t = submit(sup, "id", NULL);
    CHECK_OK(ct_task_wait(t, 30));
    if (!ct_task_failed(t))
      break;
    ct_task_unref(t);
    t = NULL;
    check_sleep(0.05);
  }
  CHECK(t != NULL);
  ct_task_unref(t);
  pool_stop_and_check_nothing_left(sup, fds_before);
  CHECK(atomic_load(&log_no_fork) <= 8); /* the 1st, 2nd, 4th... failure in a row */
}

/* ---- out of descriptors while a child is replaced ---- */

TEST(no_zombie_when_out_of_descriptors_while_a_child_is_replaced) {
  int fds_before = count_fds();
  ct_supervisor_t *sup = start_pool(1, 0);
  int old_child = pool_child_pid(sup, "id");
  int server = pool_fork_server();
  /* At the limit, even once the old child's socket is closed: the soft
   * limit is below every descriptor number the pool could free. */
  struct rlimit old_limit, low;
  CHECK_OK(getrlimit(RLIMIT_NOFILE, &old_limit));
  low = old_limit;
  low.rlim_cur = 3;
  CHECK_OK(setrlimit(RLIMIT_NOFILE, &low));
  CHECK(dup(0) < 0 && errno == EMFILE);
  int errors_before = atomic_load(&log_errors);
  CHECK_OK(kill(old_child, SIGKILL));
  WAIT_FOR(atomic_load(&log_errors) >= errors_before + 1); /* no socket for the new one */
  ct_task_t *t = submit(sup, "id", NULL); /* waits for a child */
  WAIT_FOR(atomic_load(&log_errors) >= errors_before + 3); /* two more tries */
  CHECK_OK(setrlimit(RLIMIT_NOFILE, &old_limit));
  CHECK_OK(ct_task_wait(t, 60)); /* runs once descriptors are back */
  if (ct_task_failed(t))
    fprintf(stderr, "%s\n", json_dumps(ct_task_result(t), 0));
  CHECK(!ct_task_failed(t));
  int new_child = (int)json_integer_value(ct_task_result(t));
  ct_task_unref(t);
  WAIT_FOR(zombies_of(server) == 0);
  int kids[16];
  CHECK_EQ_INT(children_of(server, kids, 16), 1);
  CHECK_EQ_INT(kids[0], new_child);
  CHECK(new_child != old_child);
  pool_stop_and_check_nothing_left(sup, fds_before);
}

/* With an argument, runs only the test of that name. */
#define RUN_SELECTED(name)                                                     \
  do {                                                                         \
    if (argc < 2 || strcmp(argv[1], #name) == 0)                               \
      RUN(name);                                                               \
  } while (0)

int main(int argc, char **argv) {
  test_thread = pthread_self();
  snprintf(fail_fork_file, sizeof fail_fork_file, "/tmp/ct-fail-fork-%d", (int)getpid());
  CHECK_OK(ct_process_register("id", pool_fn_pid, NULL));
  CHECK_OK(ct_process_register("hang", pool_fn_hang, NULL));
  CHECK_OK(ct_process_register("killed", pool_fn_killed, NULL));
  CHECK_OK(ct_process_register("helper_then_crash", fn_helper_then_crash, NULL));
  CHECK_OK(ct_process_register("exec_sleep", fn_exec_sleep, NULL));
  RUN_SELECTED(a_child_that_leaves_a_helper_and_crashes_is_seen_crashed_at_once);
  RUN_SELECTED(fork_server_killed_is_replaced_and_a_hung_task_still_times_out);
  RUN_SELECTED(a_fork_server_that_stops_answering_is_killed_and_replaced);
  RUN_SELECTED(stop_completes_when_the_fork_server_died_under_a_hung_task);
  RUN_SELECTED(a_fork_server_that_never_ends_is_killed_and_the_stop_ends);
  RUN_SELECTED(a_stopping_pool_with_nothing_queued_replaces_no_child);
  RUN_SELECTED(tasks_fail_clearly_while_no_fork_server_starts_then_it_comes_back);
  RUN_SELECTED(no_zombie_when_out_of_descriptors_while_a_child_is_replaced);
  RUN_SELECTED(tasks_fail_clearly_while_the_fork_server_cannot_fork_then_it_can);
  RUN_SELECTED(an_orphan_that_closes_its_socket_is_killed);
  RUN_SELECTED(a_task_whose_error_cannot_be_allocated_still_fails);
  return check_done();
}
