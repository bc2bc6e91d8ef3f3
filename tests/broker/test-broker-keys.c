/* Every key a broker script touches is one of its KEYS, so that a cluster
 * client can route each script (all keys of a queue share one hash tag,
 * and Redis checks declared keys only). A MONITOR connection records what
 * a producer and a worker do — submissions (one and many), delays, a
 * retry, an RPC, a malformed entry and one delivered too often going to
 * the dead letters, a run that lasts long enough for its record to be
 * marked RUNNING, renewals and liveness — and each command a script
 * ran is checked, with COMMAND GETKEYS, against the KEYS of the EVAL or
 * EVALSHA that ran it. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"

typedef struct {
  redisContext *c;
  atomic_bool stop;
  char **lines;
  size_t n, cap;
} monitor_t;

static void *monitor_main(void *p) {
  monitor_t *m = p;
  redisReply *r = redisCommand(m->c, "MONITOR");
  CHECK(r && r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  while (!atomic_load(&m->stop)) {
    void *reply = NULL;
    CHECK(redisGetReply(m->c, &reply) == REDIS_OK);
    r = reply;
    if (r->type == REDIS_REPLY_STATUS) {
      if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 1024;
        m->lines = realloc(m->lines, m->cap * sizeof *m->lines);
        CHECK(m->lines != NULL);
      }
      m->lines[m->n++] = strdup(r->str);
    }
    freeReplyObject(r);
  }
  return NULL;
}

/* The arguments of a MONITOR line (after "[db source] "), unquoted as
 * Redis quotes them (sdscatrepr); *lua set if a script ran it. */
static size_t monitor_args(const char *line, char **argv, size_t max, bool *lua) {
  const char *p = strchr(line, '[');
  CHECK(p != NULL);
  const char *end = strchr(p, ']');
  CHECK(end != NULL);
  *lua = end - p >= 4 && memcmp(end - 3, "lua", 3) == 0;
  p = end + 1;
  size_t n = 0;
  while (*p && n < max) {
    while (*p == ' ')
      p++;
    if (*p != '"')
      break;
    p++;
    char *a = malloc(strlen(p) + 1), *o = a;
    CHECK(a != NULL);
    for (; *p && *p != '"'; p++) {
      if (*p != '\\') {
        *o++ = *p;
        continue;
      }
      p++;
      switch (*p) {
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'a': *o++ = '\a'; break;
      case 'b': *o++ = '\b'; break;
      case 'x': {
        char hex[3] = {p[1], p[2], 0};
        *o++ = (char)strtol(hex, NULL, 16);
        p += 2;
        break;
      }
      default: *o++ = *p; break;
      }
    }
    *o = '\0';
    argv[n++] = a;
    if (*p == '"')
      p++;
  }
  return n;
}

/* Check every command a script ran against its EVAL's KEYS. Returns how
 * many script commands touched keys (the check saw something); *marks:
 * how many calls of the script that marks records RUNNING were seen. */
static int check_declared(test_redis_t *r, monitor_t *m, int *marks) {
  enum { MAX = 64 };
  char *keys[MAX];
  size_t nkeys = 0;
  int checked = 0;
  *marks = 0;
  for (size_t i = 0; i < m->n; i++) {
    char *argv[MAX];
    bool lua;
    size_t argc = monitor_args(m->lines[i], argv, MAX, &lua);
    if (!lua && argc >= 3 &&
        (strcasecmp(argv[0], "EVAL") == 0 || strcasecmp(argv[0], "EVALSHA") == 0)) {
      for (size_t k = 0; k < nkeys; k++)
        free(keys[k]);
      nkeys = (size_t)atoi(argv[2]);
      *marks += strcasecmp(argv[0], "EVAL") == 0 && strstr(argv[1], "'running'") != NULL;
      CHECK(nkeys + 3 <= argc && nkeys < MAX);
      for (size_t k = 0; k < nkeys; k++)
        keys[k] = strdup(argv[3 + k]);
    } else if (lua && argc > 0) {
      const char *cargv[MAX + 2] = {"COMMAND", "GETKEYS"};
      for (size_t a = 0; a < argc; a++)
        cargv[2 + a] = argv[a];
      redisReply *g = redisCommandArgv(r->client, (int)argc + 2, cargv, NULL);
      CHECK(g != NULL);
      for (size_t k = 0; g->type == REDIS_REPLY_ARRAY && k < g->elements; k++) {
        bool declared = false;
        for (size_t d = 0; d < nkeys; d++)
          declared = declared || strcmp(keys[d], g->element[k]->str) == 0;
        if (!declared)
          fprintf(stderr, "undeclared key %s in: %s\n", g->element[k]->str, m->lines[i]);
        CHECK(declared);
        checked++;
      }
      freeReplyObject(g);
    }
    for (size_t a = 0; a < argc; a++)
      free(argv[a]);
  }
  for (size_t k = 0; k < nkeys; k++)
    free(keys[k]);
  return checked;
}

static json_t *flaky(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  static atomic_int runs;
  double pause = json_number_value(json_object_get(kwargs, "sleep"));
  if (pause > 0)
    check_sleep(pause);
  if (json_is_true(json_object_get(kwargs, "fail_once")) && atomic_fetch_add(&runs, 1) == 0)
    return ct_error_new("ValueError", "the first run fails");
  return json_true();
}

static void wait_status(ct_broker_t *b, const char *id, ct_broker_status_t want) {
  ct_broker_info_t info = {0};
  for (int i = 0; i < 3000; i++) {
    CHECK_OK(ct_broker_get(b, id, &info));
    json_decref(info.result);
    if (info.status == want)
      return;
    check_sleep(0.01);
  }
  CHECK_EQ_INT(info.status, want);
}

TEST(every_key_a_script_touches_is_declared) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  monitor_t m = {.c = test_redis_connect(&e.r)};
  CHECK(m.c != NULL);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, monitor_main, &m) == 0);
  CHECK_OK(ct_broker_register(e.b, "flaky", flaky, NULL));
  freeReplyObject(test_redis(&e.r, "SADD " PREFIX "names flaky"));
  /* A task a worker that died had taken: delivered twice by the reclaim. */
  char ghost[CT_BROKER_ID_SIZE], delayed[CT_BROKER_ID_SIZE], retried[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "flaky", NULL, NULL, ghost));
  freeReplyObject(test_redis(&e.r, "XGROUP CREATE " PREFIX "stream:normal workers 0 MKSTREAM"));
  freeReplyObject(test_redis(&e.r, "XREADGROUP GROUP workers ghost COUNT 1 STREAMS "
                             PREFIX "stream:normal >"));
  /* A malformed entry that names a task. */
  freeReplyObject(test_redis(&e.r, "XADD " PREFIX "stream:high * id "
                             "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b name flaky kwargs [1] "
                             "enqueued 1"));
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.delay = 0.3;
  so.key = "once";
  CHECK_OK(ct_broker_submit(e.b, "flaky", NULL, &so, delayed));
  so = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_attempts = 2;
  so.backoff = 0.1;
  json_t *kw = json_pack("{s:b}", "fail_once", 1);
  CHECK_OK(ct_broker_submit(e.b, "flaky", kw, &so, retried));
  json_decref(kw);
  /* Batches, one now and one delayed (ct_broker_submit_many). */
  const char *many_names[] = {"flaky", "flaky"};
  char many[4][CT_BROKER_ID_SIZE];
  int many_rcs[2];
  CHECK_OK(ct_broker_submit_many(e.b, 2, many_names, NULL, NULL, many, many_rcs));
  so = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  so.delay = 0.3;
  CHECK_OK(ct_broker_submit_many(e.b, 2, many_names, NULL, &so, many + 2, many_rcs));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 0.2;
  wo.max_deliveries = 1;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  /* A run that lasts: its record is marked RUNNING before it ends. */
  char lasting[CT_BROKER_ID_SIZE];
  kw = json_pack("{s:f}", "sleep", 1.0);
  CHECK_OK(ct_broker_submit(e.b, "flaky", kw, NULL, lasting));
  json_decref(kw);
  json_t *result = NULL;
  CHECK_OK(ct_broker_call(e.b, "flaky", NULL, NULL, 20, &result));
  CHECK(json_is_true(result));
  json_decref(result);
  wait_status(e.b, ghost, CT_BROKER_DEAD);
  wait_status(e.b, delayed, CT_BROKER_COMPLETED);
  wait_status(e.b, retried, CT_BROKER_COMPLETED);
  wait_status(e.b, lasting, CT_BROKER_COMPLETED);
  for (int i = 0; i < 4; i++)
    wait_status(e.b, many[i], CT_BROKER_COMPLETED);
  WAIT_FOR(test_redis_int(&e.r, "XLEN " PREFIX "dead") == 2); /* the malformed one too */
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  atomic_store(&m.stop, true);
  freeReplyObject(test_redis(&e.r, "PING")); /* a last line ends the monitor's wait */
  pthread_join(th, NULL);
  int marks;
  CHECK(check_declared(&e.r, &m, &marks) > 20);
  CHECK(marks > 0);
  for (size_t i = 0; i < m.n; i++)
    free(m.lines[i]);
  free(m.lines);
  redisFree(m.c);
  test_env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(every_key_a_script_touches_is_declared);
  return check_done();
}
