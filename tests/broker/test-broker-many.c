/* ct_broker_submit_many(): n tasks in one script call, each checked and
 * written on its own as ct_broker_submit() would (all or nothing per
 * task), in the order given; refused calls write nothing. */
#include <stdatomic.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"

static atomic_int runs;

static json_t *echo(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self, (void)data;
  atomic_fetch_add(&runs, 1);
  return json_deep_copy(kwargs);
}

/* The supervisor has two threads; "echo" is registered, and known to
 * producers as a worker's start would make it. */
static void env_start(test_env_t *e) {
  test_env_start(e, 2, 0, NULL);
  CHECK_OK(ct_broker_register(e->b, "echo", echo, NULL));
  test_redis_register_name(&e->r, "echo");
  atomic_store(&runs, 0);
}

/* Every task is written, queued, in the order given, then run once with
 * its own kwargs. */
static void test_submit_many_writes_each_task_in_order_and_each_runs_once(void) {
  test_env_t e;
  env_start(&e);
  enum { N = 100 };
  const char *names[N];
  json_t *kw[N];
  char ids[N][CT_BROKER_ID_SIZE];
  int rcs[N];
  for (int i = 0; i < N; i++) {
    names[i] = "echo";
    kw[i] = json_pack("{s:i}", "i", i);
  }
  CHECK_OK(ct_broker_submit_many(e.b, N, names, (const json_t *const *)kw, NULL, ids, rcs));
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), N);
  redisReply *x = test_redis(&e.r, "XRANGE " PREFIX "stream:normal - +");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == N);
  for (int i = 0; i < N; i++) {
    CHECK_EQ_INT(rcs[i], 0);
    CHECK_EQ_INT(test_broker_status(e.b, ids[i]), CT_BROKER_QUEUED);
    const redisReply *f = x->element[i]->element[1];
    bool has_id = false;
    for (size_t j = 0; j + 1 < f->elements; j += 2)
      has_id = has_id || (strcmp(f->element[j]->str, "id") == 0 &&
                          strcmp(f->element[j + 1]->str, ids[i]) == 0);
    CHECK(has_id); /* entry i is task i */
  }
  freeReplyObject(x);
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  for (int i = 0; i < N; i++) {
    ct_broker_info_t info = {0};
    for (int t = 0; t < 3000 && info.status != CT_BROKER_COMPLETED; t++) {
      json_decref(info.result);
      CHECK_OK(ct_broker_get(e.b, ids[i], &info));
      if (info.status != CT_BROKER_COMPLETED)
        check_sleep(0.01);
    }
    CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
    CHECK_EQ_INT(json_integer_value(json_object_get(info.result, "i")), i);
    json_decref(info.result);
    json_decref(kw[i]);
  }
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  CHECK_EQ_INT(atomic_load(&runs), N);
  test_env_end(&e);
}

/* An unknown name, a bad name, kwargs that are not an object or too large
 * are refused each on its own: nothing of them is written, every other
 * task is. */
static void test_submit_many_refuses_bad_tasks_one_by_one_and_writes_the_others(void) {
  test_env_t e;
  env_start(&e);
  json_t *arr = json_array(), *big = json_pack("{s:s}", "s", "0123456789012345678901234567");
  const char *names[] = {"echo", "nobody", "echo", "bad\nname", "echo", "echo"};
  const json_t *kw[] = {NULL, NULL, arr, NULL, big, NULL};
  enum { N = 6 };
  char ids[N][CT_BROKER_ID_SIZE];
  int rcs[N];
  ct_broker_submit_opts_t o = CT_BROKER_SUBMIT_OPTS_INIT;
  o.max_payload = 20;
  CHECK_EQ_INT(ct_broker_submit_many(e.b, N, names, kw, &o, ids, rcs), CT_ENOENT);
  const int want[N] = {0, CT_ENOENT, CT_EINVAL, CT_EINVAL, CT_EINVAL, 0};
  for (int i = 0; i < N; i++)
    CHECK_EQ_INT(rcs[i], want[i]);
  CHECK_EQ_INT(test_broker_status(e.b, ids[0]), CT_BROKER_QUEUED);
  CHECK_EQ_INT(test_broker_status(e.b, ids[5]), CT_BROKER_QUEUED);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 2);
  redisReply *x = test_redis(&e.r, "KEYS " PREFIX "task:*");
  CHECK_EQ_INT(x->elements, 2); /* no record of a refused task */
  freeReplyObject(x);
  json_decref(arr);
  json_decref(big);
  test_env_end(&e);
}

/* A key, bad options or too many tasks refuse the whole call: nothing is
 * written, every rcs[i] says so. Delayed tasks wait in the delayed set. */
static void test_submit_many_refused_as_a_whole_writes_nothing_and_delays_wait(void) {
  test_env_t e;
  env_start(&e);
  const char *names[] = {"echo", "echo"};
  char ids[2][CT_BROKER_ID_SIZE];
  int rcs[2] = {1, 1};
  ct_broker_submit_opts_t o = CT_BROKER_SUBMIT_OPTS_INIT;
  o.key = "k";
  CHECK_EQ_INT(ct_broker_submit_many(e.b, 2, names, NULL, &o, ids, rcs), CT_EINVAL);
  CHECK_EQ_INT(rcs[0], CT_EINVAL);
  CHECK_EQ_INT(rcs[1], CT_EINVAL);
  o = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  o.priority = -5;
  CHECK_EQ_INT(ct_broker_submit_many(e.b, 2, names, NULL, &o, ids, rcs), CT_EINVAL);
  /* A count over the limit may not be the array's: rcs is left alone. */
  rcs[0] = rcs[1] = 1;
  CHECK_EQ_INT(ct_broker_submit_many(e.b, 2000, names, NULL, NULL, ids, rcs), CT_EINVAL);
  CHECK(rcs[0] == 1 && rcs[1] == 1);
  /* A NULL broker, names or ids: rcs says so, as for the refusals above
   * (it kept what it held). */
  CHECK_EQ_INT(ct_broker_submit_many(NULL, 2, names, NULL, NULL, ids, rcs), CT_EINVAL);
  CHECK(rcs[0] == CT_EINVAL && rcs[1] == CT_EINVAL);
  rcs[0] = rcs[1] = 1;
  CHECK_EQ_INT(ct_broker_submit_many(e.b, 2, NULL, NULL, NULL, ids, rcs), CT_EINVAL);
  CHECK(rcs[0] == CT_EINVAL && rcs[1] == CT_EINVAL);
  CHECK_OK(ct_broker_submit_many(e.b, 0, NULL, NULL, NULL, NULL, NULL));
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS " PREFIX "stream:normal"), 0);
  o = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  o.delay = 3600;
  o.priority = CT_PRIORITY_HIGH;
  CHECK_OK(ct_broker_submit_many(e.b, 2, names, NULL, &o, ids, rcs));
  CHECK_EQ_INT(test_broker_status(e.b, ids[0]), CT_BROKER_DELAYED);
  CHECK_EQ_INT(test_broker_status(e.b, ids[1]), CT_BROKER_DELAYED);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 2);
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS " PREFIX "stream:high"), 0);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "wake"), 1);
  test_env_end(&e);
}

/* Entry i of the normal stream as "name=value;" (ids and times as "*"). */
static void entry_text(test_env_t *e, size_t i, char *out, size_t size) {
  redisReply *x = test_redis(&e->r, "XRANGE " PREFIX "stream:normal - +");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements > i);
  const redisReply *f = x->element[i]->element[1];
  size_t len = 0;
  out[0] = '\0';
  for (size_t j = 0; j + 1 < f->elements; j += 2) {
    const char *name = f->element[j]->str;
    bool varies = strcmp(name, "id") == 0 || strcmp(name, "enqueued") == 0;
    len += (size_t)snprintf(out + len, size - len, "%s=%s;", name,
                            varies ? "*" : f->element[j + 1]->str);
    CHECK(len < size);
  }
  freeReplyObject(x);
}

/* A record's fields as "name=value;", sorted by name (created as "*"). */
static void record_text(test_env_t *e, const char *id, char *out, size_t size) {
  redisReply *x = test_redis(&e->r, "HGETALL " PREFIX "task:%s", id);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements > 0);
  size_t len = 0;
  out[0] = '\0';
  for (const char *prev = ""; ;) { /* each name after prev, in order */
    const char *next = NULL, *value = NULL;
    for (size_t j = 0; j + 1 < x->elements; j += 2)
      if (strcmp(x->element[j]->str, prev) > 0 && (!next || strcmp(x->element[j]->str, next) < 0)) {
        next = x->element[j]->str;
        value = x->element[j + 1]->str;
      }
    if (!next)
      break;
    len += (size_t)snprintf(out + len, size - len, "%s=%s;", next,
                            strcmp(next, "created") == 0 ? "*" : value);
    CHECK(len < size);
    prev = next;
  }
  freeReplyObject(x);
}

/* The options of a batch go into each of its tasks' entries, which, with
 * their records, hold what one submission with those options writes:
 * the same fields, in the same order, with the same values. */
static void test_a_batch_writes_what_single_submissions_with_its_options_write(void) {
  test_env_t e;
  env_start(&e);
  ct_broker_submit_opts_t o = CT_BROKER_SUBMIT_OPTS_INIT;
  o.max_attempts = 3;
  o.backoff = 0.5;
  o.backoff_max = 7;
  o.timeout = 5;
  o.result_ttl = 100;
  json_t *kw = json_pack("{s:i}", "n", 1);
  char single[CT_BROKER_ID_SIZE], ids[2][CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "echo", kw, &o, single));
  const char *names[] = {"echo", "echo"};
  const json_t *kws[] = {kw, kw};
  int rcs[2];
  CHECK_OK(ct_broker_submit_many(e.b, 2, names, kws, &o, ids, rcs));
  char want[512], got[512];
  entry_text(&e, 0, want, sizeof want);
  CHECK_EQ_STR(want, "id=*;name=echo;kwargs={\"n\":1};enqueued=*;max_attempts=3;backoff=500;"
                     "backoff_max=7000;timeout=5000;");
  for (size_t i = 1; i <= 2; i++) {
    entry_text(&e, i, got, sizeof got);
    CHECK_EQ_STR(got, want);
  }
  record_text(&e, single, want, sizeof want);
  CHECK_EQ_STR(want, "attempts=0;created=*;name=echo;status=queued;ttl=100;");
  for (size_t i = 0; i < 2; i++) {
    record_text(&e, ids[i], got, sizeof got);
    CHECK_EQ_STR(got, want);
    CHECK(test_redis_int(&e.r, "TTL " PREFIX "task:%s", ids[i]) > 90);
  }
  json_decref(kw);
  test_env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(submit_many_writes_each_task_in_order_and_each_runs_once);
  RUN(submit_many_refuses_bad_tasks_one_by_one_and_writes_the_others);
  RUN(submit_many_refused_as_a_whole_writes_nothing_and_delays_wait);
  RUN(a_batch_writes_what_single_submissions_with_its_options_write);
  return check_done();
}
