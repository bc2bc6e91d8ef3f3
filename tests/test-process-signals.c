/* The process pool and the terminal's signals: Ctrl-C sends SIGINT to the
 * terminal's whole foreground process group. The host program decides
 * what an interrupt means (`ctasker worker` drains: running tasks, process
 * tasks too, get their grace), so the pool's fork server and children,
 * which live in a process group of their own, must not be killed by it
 * behind the host's back. The test runs in a forked helper that leads a
 * process group of its own, as a shell's foreground job does, and sends
 * SIGINT to that group while a process task runs. */
#include <ctasker.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "pool.h"

static bool exists(const char *dir, const char *name) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return access(path, F_OK) == 0;
}

static void touch(const char *dir, const char *name) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_CREAT | O_WRONLY, 0600);
  CHECK(fd >= 0);
  close(fd);
}

/* Say it started, then wait (at most a minute) until released; 42. */
static json_t *fn_hold(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  const char *dir = json_string_value(json_object_get(args, "dir"));
  touch(dir, "started");
  for (int i = 0; i < 6000 && !exists(dir, "release"); i++)
    check_sleep(0.01);
  return json_integer(42);
}

static atomic_int interrupted;

static void on_sigint(int sig) {
  (void)sig;
  atomic_fetch_add(&interrupted, 1);
}

static json_int_t pool_stat(ct_supervisor_t *sup, const char *key) {
  json_t *j = ct_supervisor_stats_json(sup);
  json_int_t v = json_integer_value(json_object_get(json_object_get(j, "processes"), key));
  json_decref(j);
  return v;
}

/* In a process group of its own: returns (exits) 0, or aborts. */
static int interrupted_helper(void) {
  alarm(60); /* a hang ends the helper, and the test fails */
  CHECK(setpgid(0, 0) == 0);
  struct sigaction sa = {.sa_handler = on_sigint};
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(SIGINT, &sa, NULL) == 0);
  char dir[] = "/tmp/ct-signals-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  CHECK_OK(ct_process_register("hold", fn_hold, NULL));
  ct_supervisor_t *sup = pool_sup_start_pool_last(NULL, 1, 0);
  json_t *args = json_pack("{s:s}", "dir", dir);
  ct_task_t *t;
  CHECK_OK(ct_process_task(sup, "hold", args, NULL, &t));
  json_decref(args);
  WAIT_FOR(exists(dir, "started"));
  CHECK(kill(0, SIGINT) == 0); /* what Ctrl-C does: the whole group */
  WAIT_FOR(atomic_load(&interrupted) == 1);
  touch(dir, "release");
  CHECK_OK(ct_task_wait(t, 60));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  if (ct_result_is_error(ct_task_result(t))) {
    char *e = json_dumps(ct_task_result(t), JSON_ENCODE_ANY);
    fprintf(stderr, "the process task failed: %s\n", e ? e : "?");
    free(e);
  }
  CHECK(!ct_result_is_error(ct_task_result(t)));
  CHECK_EQ_INT(json_integer_value(ct_task_result(t)), 42);
  ct_task_unref(t);
  CHECK_EQ_INT(pool_stat(sup, "crashed"), 0);
  CHECK_EQ_INT(pool_stat(sup, "children_forked"), 1);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
  char path[256];
  snprintf(path, sizeof path, "%s/started", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/release", dir);
  unlink(path);
  rmdir(dir);
  return 0;
}

TEST(an_interrupt_to_the_hosts_process_group_spares_the_pool) {
  pid_t h = fork();
  CHECK(h >= 0);
  if (h == 0)
    _exit(interrupted_helper());
  int st;
  while (waitpid(h, &st, 0) < 0)
    CHECK(errno == EINTR);
  if (WIFSIGNALED(st))
    fprintf(stderr, "the helper died of signal %d\n", WTERMSIG(st));
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void) {
  RUN(an_interrupt_to_the_hosts_process_group_spares_the_pool);
  return check_done();
}
