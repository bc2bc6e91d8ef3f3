/* The Python producer of docs/python.md, as it stands on that page, run
 * against a ctasker worker: its call gets the result, and the task it
 * submits is completed, as ct_broker_get() reads it. Run as
 * `test-broker-python DOCS/python.md`; needs python3 with redis-py
 * (Debian's python3-redis, which .ci/deps installs): skipped without it,
 * except in CI, where that is a failure. */
#include <string.h>

#include "ctasker.h"
#include "env.h"

static json_t *add(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  return json_pack("{s:I}", "sum", json_integer_value(json_object_get(kwargs, "a")) +
                                       json_integer_value(json_object_get(kwargs, "b")));
}

/* The page's one ```python block, written to path. */
static void extract(const char *page, const char *path) {
  FILE *f = fopen(page, "r");
  CHECK(f != NULL);
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  char *start = strstr(text, "```python\n");
  CHECK(start != NULL);
  start += strlen("```python\n");
  char *end = strstr(start, "\n```");
  CHECK(end != NULL);
  f = fopen(path, "w");
  CHECK(f != NULL);
  CHECK(fwrite(start, 1, (size_t)(end - start + 1), f) == (size_t)(end - start + 1));
  fclose(f);
}

/* A python3 that has redis-py, or NULL. */
static const char *python(void) {
  static const char *const candidates[] = {"/usr/bin/python3", "python3"};
  for (size_t i = 0; i < 2; i++) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "%s -c 'import redis' 2>/dev/null", candidates[i]);
    if (system(cmd) == 0)
      return candidates[i];
  }
  return NULL;
}

static const char *page;

TEST(the_documented_python_producer_runs_against_a_worker) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  char script[128];
  snprintf(script, sizeof script, "%s/producer.py", e.r.dir);
  extract(page, script);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s %s %s", python(), script, e.r.sock);
  FILE *out = popen(cmd, "r");
  CHECK(out != NULL);
  char line[2][256] = {"", ""};
  for (int i = 0; i < 2; i++)
    CHECK(fgets(line[i], sizeof line[i], out) != NULL);
  CHECK_EQ_INT(pclose(out), 0);
  json_t *called = json_loads(line[0], 0, NULL);
  CHECK(called != NULL);
  CHECK_EQ_INT(json_integer_value(json_object_get(called, "sum")), 42);
  json_decref(called);
  line[1][strcspn(line[1], "\n")] = '\0';
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, line[1], &info)); /* an id as ctasker makes them */
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_INT(info.attempts, 1);
  CHECK_EQ_INT(json_integer_value(json_object_get(info.result, "sum")), 3);
  json_decref(info.result);
  redisReply *x = test_redis(&e.r, "HGET ctasker:{default}:task:%s ttl", line[1]);
  CHECK_EQ_STR(x->str, "86400");
  freeReplyObject(x);
  /* Both entries were acknowledged and deleted, as any producer's. */
  WAIT_FOR(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal") +
               test_redis_int(&e.r, "XLEN ctasker:{default}:stream:high") == 0);
  unlink(script);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

int main(int argc, char **argv) {
  CHECK(argc == 2);
  page = argv[1];
  if (!test_redis_installed())
    return 77;
  if (!python()) {
    fprintf(stderr, "python3 with redis-py (python3-redis) is missing (.ci/deps installs it)\n");
    return getenv("CI") ? 1 : 77;
  }
  RUN(the_documented_python_producer_runs_against_a_worker);
  return check_done();
}
