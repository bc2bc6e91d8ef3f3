/* A worker process told to stop by SIGTERM drains: its host program (this
 * binary run as `--worker URL FD GRACE`) waits for the signal and calls
 * ct_broker_worker_stop() with a grace. The task it runs finishes and its
 * result is stored; what it has not fetched stays in the stream, neither
 * taken nor lost; and a task that outlasts the grace stays pending, to be
 * taken over by another worker after its lease — never lost, never run
 * twice at once. Counts and order only; bounds are generous. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"
#define STREAM PREFIX "stream:normal"

static int notify_fd = -1;

/* The child's handler: tell the parent it runs, then work "secs" seconds. */
static json_t *work(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  (void)!write(notify_fd, "r", 1);
  check_sleep(json_number_value(json_object_get(kwargs, "secs")));
  return json_string("worked");
}

/* The worker process: serves "job" until SIGTERM, then stops within the
 * grace. Exits 0 once drained; if tasks still ran when the grace ended
 * (their entries stay pending), it says "t" and kills itself; 3 if it
 * could not start. */
static int worker_process(const char *url, const char *fd, const char *grace) {
  notify_fd = atoi(fd);
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, NULL); /* for sigwait, before any thread */
  ct_supervisor_t *sup;
  ct_broker_t *b;
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = url;
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 1.0;
  wo.concurrency = 1;
  wo.consumer = "drained";
  if (ct_supervisor_new(NULL, &sup) != 0 || ct_supervisor_start(sup) != 0 ||
      ct_broker_new(sup, &o, &b) != 0 || ct_broker_register(b, "job", work, NULL) != 0 ||
      ct_broker_worker_start(b, &wo) != 0)
    return 3;
  int sig;
  sigwait(&term, &sig);
  int rc = ct_broker_worker_stop(b, atof(grace));
  if (rc != 0) { /* as a host whose grace is over: no waiting for the rest */
    (void)!write(notify_fd, "t", 1);
    kill(getpid(), SIGKILL);
  }
  ct_broker_free(b);
  ct_supervisor_stop(sup, CT_STOP_DRAIN, -1);
  ct_supervisor_free(sup);
  return 0;
}

static pid_t spawn_worker(const char *url, int fd, const char *grace) {
  char fds[16];
  snprintf(fds, sizeof fds, "%d", fd);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
    execl("/proc/self/exe", "test-broker-drain", "--worker", url, fds, grace, (char *)NULL);
    _exit(127);
  }
  return pid;
}

/* The test's side (its own handle, 10 s commands) and the worker process. */
typedef struct {
  test_env_t env;
  int fds[2];
  pid_t child;
} env_t;

static void env_start(env_t *e, const char *grace) {
  memset(e, 0, sizeof *e);
  test_env_start(&e->env, 0, 10, NULL);
  CHECK(pipe(e->fds) == 0);
  e->child = spawn_worker(e->env.r.url, e->fds[1], grace);
  close(e->fds[1]);
  WAIT_FOR(test_redis_int(&e->env.r, "EXISTS " PREFIX "worker:drained") == 1);
}

static void env_end(env_t *e) {
  close(e->fds[0]);
  test_env_end(&e->env);
}

static void submit_job(env_t *e, double secs, char id[CT_BROKER_ID_SIZE]) {
  json_t *kw = json_pack("{s:f}", "secs", secs);
  CHECK_OK(ct_broker_submit(e->env.b, "job", kw, NULL, id));
  json_decref(kw);
}

/* Wait until the child's handler says it runs. */
static void wait_running(env_t *e) {
  struct pollfd p = {e->fds[0], POLLIN, 0};
  CHECK(poll(&p, 1, 20000) == 1);
  char c;
  CHECK(read(e->fds[0], &c, 1) == 1);
}

/* The child's exit status, or 100 + the signal that ended it. */
static int child_exit(env_t *e) {
  int status;
  CHECK(waitpid(e->child, &status, 0) == e->child);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

static ct_broker_info_t wait_done(env_t *e, const char *id) {
  ct_broker_info_t info = {0};
  for (int i = 0; i < 3000; i++) {
    CHECK_OK(ct_broker_get(e->env.b, id, &info));
    if (info.status == CT_BROKER_COMPLETED || info.status == CT_BROKER_FAILED)
      return info;
    check_sleep(0.01);
  }
  CHECK(false);
  return info;
}

TEST(sigterm_drains_the_running_task_and_leaves_the_rest_queued) {
  env_t e;
  env_start(&e, "20");
  char running[CT_BROKER_ID_SIZE], queued[2][CT_BROKER_ID_SIZE];
  submit_job(&e, 3.0, running); /* still running when SIGTERM comes */
  wait_running(&e);
  submit_job(&e, 0, queued[0]);
  submit_job(&e, 0, queued[1]);
  CHECK(kill(e.child, SIGTERM) == 0);
  CHECK_EQ_INT(child_exit(&e), 0); /* drained within its grace */
  ct_broker_info_t info = wait_done(&e, running);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "worked");
  json_decref(info.result);
  /* The rest were never taken: in the stream, pending for nobody. */
  CHECK_EQ_INT(test_redis_int(&e.env.r, "XLEN " STREAM), 2);
  redisReply *x = test_redis(&e.env.r, "XPENDING " STREAM " workers");
  CHECK_EQ_INT(x->element[0]->integer, 0);
  freeReplyObject(x);
  for (int i = 0; i < 2; i++) {
    CHECK_OK(ct_broker_get(e.env.b, queued[i], &info));
    CHECK_EQ_INT(info.status, CT_BROKER_QUEUED);
  }
  CHECK_EQ_INT(test_redis_int(&e.env.r, "EXISTS " PREFIX "worker:drained"), 0);
  env_end(&e);
}

static json_t *quick(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  return json_string("taken over");
}

TEST(a_task_past_the_grace_stays_pending_and_is_taken_over) {
  env_t e;
  env_start(&e, "0.5");
  char id[CT_BROKER_ID_SIZE];
  submit_job(&e, 60, id);
  wait_running(&e);
  CHECK(kill(e.child, SIGTERM) == 0);
  CHECK_EQ_INT(child_exit(&e), 100 + SIGKILL);
  char c = 0;
  CHECK(read(e.fds[0], &c, 1) == 1);
  CHECK_EQ_INT(c, 't'); /* the grace ended first */
  /* Not lost: pending under the stopped worker, its record RUNNING. */
  redisReply *x = test_redis(&e.env.r, "XPENDING " STREAM " workers - + 10");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  CHECK_EQ_STR(x->element[0]->element[1]->str, "drained");
  freeReplyObject(x);
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.env.b, id, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_RUNNING);
  /* Another worker takes it over after the lease and runs it. */
  CHECK_OK(ct_broker_register(e.env.b, "job", quick, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 1.0;
  CHECK_OK(ct_broker_worker_start(e.env.b, &wo));
  info = wait_done(&e, id);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "taken over");
  CHECK_EQ_INT(info.attempts, 2);
  json_decref(info.result);
  CHECK_OK(ct_broker_worker_stop(e.env.b, -1));
  WAIT_FOR(test_redis_int(&e.env.r, "XLEN " STREAM) == 0);
  env_end(&e);
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "--worker") == 0)
    return worker_process(argv[2], argv[3], argv[4]);
  if (!test_redis_installed())
    return 77;
  RUN(sigterm_drains_the_running_task_and_leaves_the_rest_queued);
  RUN(a_task_past_the_grace_stays_pending_and_is_taken_over);
  return check_done();
}
