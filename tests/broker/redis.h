/* A redis-server of the test's own, on a Unix socket in a temporary folder.
 *
 * test_redis_start() starts it (with extra `--option value` arguments, e.g.
 * requirepass) and waits, at most 20 s, until it answers PING;
 * test_redis_stop() stops it and removes the folder. If the test dies
 * first (a failed CHECK aborts, meson's timeout sends SIGTERM), a signal
 * handler kills the server and removes the folder, and the server is also
 * told to die with the test (PR_SET_PDEATHSIG), so nothing is left behind.
 * One server at a time per test binary. test_redis() is a synchronous
 * hiredis client for the test's own checks.
 */
#ifndef CT_TESTS_BROKER_REDIS_H
#define CT_TESTS_BROKER_REDIS_H

#include <dirent.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check.h"
#include "ctasker.h"

typedef struct test_redis {
  pid_t pid;
  char dir[64];
  char sock[128];
  char url[160];
  redisContext *client;
} test_redis_t;

static test_redis_t *test_redis_running;

/* dir + "/" + name into path (no snprintf: also used by the fatal-signal
 * handler). */
static void test_redis_path(char *path, const char *dir, const char *name) {
  size_t n = strlen(dir), m = strlen(name);
  memcpy(path, dir, n);
  path[n] = '/';
  memcpy(path + n + 1, name, m + 1);
}

/* Remove what a server may leave in its folder (with AOF, the files of
 * appendonlydir/), and the folder. */
static void test_redis_clean_dir(const test_redis_t *r) {
  static const char *const names[] = {"redis.sock", "redis.log", "dump.rdb"};
  char path[192], aof[192], file[448];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    test_redis_path(path, r->dir, names[i]);
    unlink(path);
  }
  test_redis_path(aof, r->dir, "appendonlydir");
  DIR *d = opendir(aof);
  for (struct dirent *e; d && (e = readdir(d));) {
    if (e->d_name[0] == '.')
      continue;
    test_redis_path(file, aof, e->d_name);
    unlink(file);
  }
  if (d) {
    closedir(d);
    rmdir(aof);
  }
  rmdir(r->dir);
}

static void test_redis_on_fatal(int sig) {
  test_redis_t *r = test_redis_running;
  if (r && r->pid > 0) {
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    test_redis_clean_dir(r);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static pid_t test_redis_spawn(test_redis_t *r, const char *const *extra) {
  const char *argv[32] = {"redis-server", "--port", "0", "--unixsocket", r->sock,
                          "--unixsocketperm", "700", "--dir", r->dir, "--save", "",
                          "--appendonly", "no", "--logfile", "redis.log"};
  size_t argc = 15;
  for (size_t i = 0; extra && extra[i] && argc < 31; i++)
    argv[argc++] = extra[i];
  argv[argc] = NULL;
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execvp("redis-server", (char *const *)argv);
    _exit(127);
  }
  return pid;
}

/* A synchronous client connected to the server, or NULL. */
static redisContext *test_redis_connect(const test_redis_t *r) {
  redisContext *c = redisConnectUnix(r->sock);
  if (c && c->err) {
    redisFree(c);
    return NULL;
  }
  return c;
}

/* Wait until a fresh connection is answered PING (+PONG, or NOAUTH when a
 * password is set: the server is up either way). */
static void test_redis_wait_up(test_redis_t *r) {
  for (int i = 0;; i++) {
    CHECK(i < 2000); /* 20 s */
    int status;
    CHECK(waitpid(r->pid, &status, WNOHANG) == 0); /* it did not die */
    redisContext *c = test_redis_connect(r);
    redisReply *reply = c ? redisCommand(c, "PING") : NULL;
    bool up = reply != NULL;
    freeReplyObject(reply);
    if (up) {
      r->client = c;
      return;
    }
    if (c)
      redisFree(c);
    check_sleep(0.01);
  }
}

/* Whether redis-server is installed; says so on stderr when not (the test
 * then exits 77, which meson counts as skipped). */
static inline bool test_redis_installed(void) {
  if (system("command -v redis-server >/dev/null") == 0)
    return true;
  fprintf(stderr, "redis-server is not installed (.ci/deps installs it)\n");
  return false;
}

/* Start (again, with the same folder and socket when r->dir is set). */
static void test_redis_start(test_redis_t *r, const char *const *extra) {
  if (!r->dir[0]) {
    strcpy(r->dir, "/tmp/ct-redis-XXXXXX");
    CHECK(mkdtemp(r->dir) != NULL);
    snprintf(r->sock, sizeof r->sock, "%s/redis.sock", r->dir);
    snprintf(r->url, sizeof r->url, "unix://%s", r->sock);
  }
  test_redis_running = r;
  signal(SIGABRT, test_redis_on_fatal);
  signal(SIGTERM, test_redis_on_fatal);
  r->pid = test_redis_spawn(r, extra);
  test_redis_wait_up(r);
}

/* Stop the server (SIGTERM, then wait for it); the folder stays for a
 * restart unless `remove`. */
static void test_redis_halt(test_redis_t *r, bool remove) {
  if (r->client)
    redisFree(r->client);
  r->client = NULL;
  if (r->pid > 0) {
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0);
  }
  r->pid = 0;
  if (remove) {
    test_redis_clean_dir(r);
    test_redis_running = NULL;
    r->dir[0] = '\0';
  }
}

static void test_redis_stop(test_redis_t *r) { test_redis_halt(r, true); }

/* A command on the test's own client; the reply is owned by the caller. */
static redisReply *test_redis(test_redis_t *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *reply = redisvCommand(r->client, fmt, ap);
  va_end(ap);
  CHECK(reply != NULL);
  return reply;
}

/* An integer reply's value. */
static long long test_redis_int(test_redis_t *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *reply = redisvCommand(r->client, fmt, ap);
  va_end(ap);
  CHECK(reply != NULL && reply->type == REDIS_REPLY_INTEGER);
  long long v = reply->integer;
  freeReplyObject(reply);
  return v;
}

/* How many times the server ran `cmd` (lower case) since it started or
 * since CONFIG RESETSTAT, from INFO commandstats. */
static inline long long test_redis_calls(test_redis_t *r, const char *cmd) {
  redisReply *x = test_redis(r, "INFO commandstats");
  CHECK(x->type == REDIS_REPLY_STRING);
  char key[64];
  snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
  const char *p = strstr(x->str, key);
  long long n = p ? atoll(p + strlen(key)) : 0;
  freeReplyObject(x);
  return n;
}

/* Give the one entry pending in `stream` (a whole key) to the consumer
 * "other" of the group "workers", as a worker that took it over would:
 * its owner learns at its next renewal that it lost the lease. */
static inline void test_redis_take_over_only_entry(test_redis_t *r, const char *stream) {
  redisReply *x = test_redis(r, "XRANGE %s - +", stream);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  char entry[48];
  snprintf(entry, sizeof entry, "%s", x->element[0]->element[0]->str);
  freeReplyObject(x);
  freeReplyObject(test_redis(r, "XCLAIM %s workers other 0 %s JUSTID", stream, entry));
}

/* What a worker does when it registers a handler (wire format: the queue's
 * names set), so that submissions of that name are accepted. */
static inline void test_redis_register_name(test_redis_t *r, const char *name) {
  freeReplyObject(test_redis(r, "SADD ctasker:{default}:names %s", name));
}

/* A task of `name` written as another producer would (wire format), in the
 * default queue: its record, QUEUED, then its entry in the normal stream,
 * with kwargs (JSON text), max_attempts, a 10 ms backoff and the attempt
 * field given (the run it is for). */
static inline void test_redis_add_task(test_redis_t *r, const char *id, const char *name,
                                       const char *kwargs, int max_attempts,
                                       const char *attempt) {
  freeReplyObject(test_redis(r, "HSET ctasker:{default}:task:%s status queued name %s created 1",
                             id, name));
  freeReplyObject(test_redis(r, "XADD ctasker:{default}:stream:normal * id %s name %s kwargs %s "
                                "enqueued 1 max_attempts %d backoff 10 attempt %s",
                             id, name, kwargs, max_attempts, attempt));
}

/* A started supervisor with the default options, for a broker test. */
static inline ct_supervisor_t *test_sup_start(void) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
}

static inline void test_sup_end(ct_supervisor_t *sup) {
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

/* A broker handle on `url` (10 s to connect), its lines to log (may be NULL). */
static inline ct_broker_t *test_broker_open(ct_supervisor_t *sup, const char *url,
                                            double command_timeout, ct_log_fn log) {
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = url;
  o.command_timeout = command_timeout;
  o.connect_timeout = 10;
  o.log = log;
  ct_broker_t *b;
  CHECK_OK(ct_broker_new(sup, &o, &b));
  return b;
}

#endif
