/* The broker's operator API (broker-admin.h) against a real redis-server:
 * queue counts per level (ready, pending, oldest pending age, completed
 * and failed counters), dead letters listed, shown, retried and purged,
 * live workers, and the worker's task events. Counts and order only; time
 * bounds are generous. */
#include <pthread.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"
#include "handlers.h"

#define PREFIX "ctasker:{default}:"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static int gate_waiting;

static json_t *add(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  return json_integer(json_integer_value(json_object_get(kwargs, "a")) +
                      json_integer_value(json_object_get(kwargs, "b")));
}

/* Waits until the gate opens. */
static json_t *gated(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  pthread_mutex_lock(&lock);
  gate_waiting++;
  pthread_cond_broadcast(&cond);
  while (!gate_open)
    pthread_cond_wait(&cond, &lock);
  gate_waiting--;
  pthread_mutex_unlock(&lock);
  return json_true();
}

static void gate_set(bool open) {
  pthread_mutex_lock(&lock);
  gate_open = open;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
}

static int waiting_at_gate(void) {
  pthread_mutex_lock(&lock);
  int n = gate_waiting;
  pthread_mutex_unlock(&lock);
  return n;
}

static void submit(test_env_t *e, const char *name, int priority, char id[CT_BROKER_ID_SIZE]) {
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.priority = priority;
  json_t *kw = json_pack("{s:i,s:i}", "a", 1, "b", 2);
  CHECK_OK(ct_broker_submit(e->b, name, kw, &so, id));
  json_decref(kw);
}

/* The level's object of a queue_stats result. */
static const json_t *level(const json_t *s, const char *name) {
  size_t i;
  const json_t *l;
  json_array_foreach(json_object_get(s, "levels"), i, l) {
    if (strcmp(json_string_value(json_object_get(l, "level")), name) == 0)
      return l;
  }
  CHECK(!"no such level");
  return NULL;
}

static long long field(const json_t *o, const char *k) {
  return json_integer_value(json_object_get(o, k));
}

/* queue_stats' field k of level `lv` (NULL: the top level). */
static long long stat(test_env_t *e, const char *lv, const char *k) {
  json_t *s;
  CHECK_OK(ct_broker_queue_stats(e->b, &s));
  long long v = field(lv ? level(s, lv) : s, k);
  json_decref(s);
  return v;
}

TEST(status_names) {
  CHECK_EQ_STR(ct_broker_status_name(CT_BROKER_QUEUED), "queued");
  CHECK_EQ_STR(ct_broker_status_name(CT_BROKER_DEAD), "dead");
  CHECK_EQ_STR(ct_broker_status_name(CT_BROKER_EXPIRED), "expired");
  CHECK(ct_broker_status_name((ct_broker_status_t)(CT_BROKER_EXPIRED + 1)) == NULL);
  CHECK(ct_broker_status_name((ct_broker_status_t)-1) == NULL);
}

TEST(queue_stats_count_ready_pending_and_outcomes_per_level) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  json_t *s;
  CHECK_EQ_INT(ct_broker_queue_stats(NULL, &s), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_queue_stats(e.b, NULL), CT_EINVAL);
  /* A queue no one has used: every count 0, the four levels in order. */
  CHECK_OK(ct_broker_queue_stats(e.b, &s));
  CHECK_EQ_STR(json_string_value(json_object_get(s, "queue")), "default");
  CHECK_EQ_INT(json_array_size(json_object_get(s, "levels")), 4);
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(s, "levels"), 0),
                                                 "level")),
               "critical");
  CHECK_EQ_INT(field(s, "dead") + field(s, "workers") + field(level(s, "normal"), "ready"), 0);
  json_decref(s);

  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  CHECK_OK(ct_broker_register(e.b, "fail", fail, NULL));
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  test_broker_worker_start(e.b, 1);
  CHECK_EQ_INT(stat(&e, NULL, "workers"), 1);
  char g[CT_BROKER_ID_SIZE], id[CT_BROKER_ID_SIZE];
  /* One slot, held by a gated task: what comes after it stays ready. */
  submit(&e, "gated", CT_PRIORITY_HIGH, g);
  WAIT_FOR(waiting_at_gate() == 1);
  submit(&e, "add", CT_PRIORITY_NORMAL, id);
  submit(&e, "add", CT_PRIORITY_NORMAL, id);
  submit(&e, "fail", CT_PRIORITY_LOW, id);
  CHECK_OK(ct_broker_queue_stats(e.b, &s));
  CHECK_EQ_INT(field(level(s, "high"), "pending"), 1);
  CHECK_EQ_INT(field(level(s, "high"), "ready"), 0);
  CHECK_EQ_INT(field(level(s, "normal"), "ready"), 2);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 2);
  CHECK_EQ_INT(field(level(s, "normal"), "pending"), 0);
  CHECK_EQ_INT(field(level(s, "low"), "ready"), 1);
  double age = json_number_value(json_object_get(level(s, "high"), "oldest_pending_age"));
  CHECK(age >= 0 && age < 3600);
  CHECK(json_number_value(json_object_get(level(s, "normal"), "oldest_pending_age")) == 0);
  json_decref(s);
  /* Open the gate: all four end, and the counters reach Redis once the
   * worker is idle. */
  gate_set(true);
  WAIT_FOR(stat(&e, "high", "completed") == 1 && stat(&e, "normal", "completed") == 2 &&
           stat(&e, "low", "failed") == 1);
  CHECK_EQ_INT(stat(&e, "normal", "failed") + stat(&e, "low", "completed"), 0);
  CHECK_EQ_INT(stat(&e, "normal", "ready") + stat(&e, "high", "pending"), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  CHECK_EQ_INT(stat(&e, NULL, "workers"), 0);
  gate_set(false);
  test_env_end(&e);
}

TEST(queue_stats_count_retries_and_delayed_tasks) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  CHECK_OK(ct_broker_register(e.b, "fail", fail, NULL));
  test_broker_worker_start(e.b, 1);
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_attempts = 3;
  so.backoff = 0.05;
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "fail", NULL, &so, id));
  WAIT_FOR(test_broker_status(e.b, id) == CT_BROKER_FAILED);
  WAIT_FOR(stat(&e, "normal", "retried") == 2 && stat(&e, "normal", "failed") == 1);
  so = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  so.delay = 3600;
  CHECK_OK(ct_broker_submit(e.b, "fail", NULL, &so, id));
  CHECK_EQ_INT(test_broker_status(e.b, id), CT_BROKER_DELAYED);
  CHECK_EQ_INT(stat(&e, NULL, "delayed"), 1);
  CHECK_EQ_INT(stat(&e, "normal", "ready") + stat(&e, "normal", "expired"), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* A worker whose tasks come one at a time is idle after each: it writes
 * its counters at most every tenth of a second, not after every task (it
 * once wrote them whenever no task ran: 50 writes here). The bound on
 * writes is taken from the time the tasks took, so a slow machine only
 * loosens it. What is left is written when the worker retires. */
TEST(an_idle_worker_writes_its_counters_at_most_every_tenth_of_a_second) {
  enum { TASKS = 50 };
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 1);
  json_t *kw = json_pack("{s:i,s:i}", "a", 1, "b", 2), *result;
  CHECK_OK(ct_broker_call(e.b, "add", kw, NULL, 60, &result)); /* the worker is ready */
  json_decref(result);
  WAIT_FOR(stat(&e, "normal", "completed") == 1);
  long long writes = test_redis_calls(&e.r, "hincrby");
  double start = ct_now();
  for (int i = 0; i < TASKS; i++) {
    CHECK_OK(ct_broker_call(e.b, "add", kw, NULL, 60, &result));
    CHECK_EQ_INT(json_integer_value(result), 3);
    json_decref(result);
  }
  double took = ct_now() - start;
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  writes = test_redis_calls(&e.r, "hincrby") - writes;
  CHECK(writes >= 1);
  CHECK(writes <= 2 + (long long)(took / 0.1));
  CHECK_EQ_INT(stat(&e, "normal", "completed"), 1 + TASKS);
  json_decref(kw);
  test_env_end(&e);
}

TEST(dead_letters_are_listed_shown_retried_and_purged) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  json_t *l, *d;
  char id[CT_BROKER_ID_SIZE];
  long long n;
  CHECK_EQ_INT(ct_broker_dead_list(e.b, NULL, 0, &l), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_dead_list(e.b, NULL, 1001, &l), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_dead_list(e.b, "nope", 10, &l), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_dead_get(e.b, "1-x", &d), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_dead_get(e.b, "1-1", &d), CT_ENOENT);
  CHECK_EQ_INT(ct_broker_dead_retry(e.b, "1-1", id), CT_ENOENT);
  CHECK_OK(ct_broker_dead_list(e.b, NULL, 10, &l));
  CHECK_EQ_INT(json_array_size(l), 0);
  json_decref(l);

  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 2);
  /* A malformed entry (no kwargs) is buried by the worker. */
  freeReplyObject(test_redis(&e.r, "XADD " PREFIX "stream:normal * id %s name add enqueued 1",
                             "11111111-1111-4111-8111-111111111111"));
  WAIT_FOR(stat(&e, NULL, "dead") == 1);
  /* A whole task's dead letter, as the delivery limit writes them. */
  redisReply *x = test_redis(&e.r,
                             "XADD " PREFIX "dead * reason %s stream low entry 5-0 id %s name add "
                             "kwargs %s enqueued 1 deadline 1",
                             "too often", "22222222-2222-4222-8222-222222222222",
                             "{\"a\":20,\"b\":22}");
  CHECK(x->type == REDIS_REPLY_STRING);
  char good[64];
  snprintf(good, sizeof good, "%s", x->str);
  freeReplyObject(x);

  CHECK_OK(ct_broker_dead_list(e.b, NULL, 10, &l));
  CHECK_EQ_INT(json_array_size(l), 2);
  const json_t *first = json_array_get(l, 0);
  CHECK_EQ_STR(json_string_value(json_object_get(first, "reason")), "missing kwargs");
  CHECK_EQ_STR(json_string_value(json_object_get(first, "stream")), "normal");
  CHECK_EQ_STR(json_string_value(json_object_get(first, "id")),
               "11111111-1111-4111-8111-111111111111");
  char bad[64];
  snprintf(bad, sizeof bad, "%s", json_string_value(json_object_get(first, "dead_entry")));
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(l, 1), "dead_entry")), good);
  json_decref(l);
  /* Paging: after the first, one more; count bounds the page. */
  CHECK_OK(ct_broker_dead_list(e.b, bad, 10, &l));
  CHECK_EQ_INT(json_array_size(l), 1);
  json_decref(l);
  CHECK_OK(ct_broker_dead_list(e.b, NULL, 1, &l));
  CHECK_EQ_INT(json_array_size(l), 1);
  json_decref(l);

  CHECK_OK(ct_broker_dead_get(e.b, good, &d));
  CHECK_EQ_STR(json_string_value(json_object_get(d, "kwargs")), "{\"a\":20,\"b\":22}");
  CHECK_EQ_STR(json_string_value(json_object_get(d, "entry")), "5-0");
  json_decref(d);

  /* The malformed one cannot be retried; the whole one runs again, with
   * its id, and its record is made anew (it had none here). */
  CHECK_EQ_INT(ct_broker_dead_retry(e.b, bad, id), CT_EINVAL);
  /* Nor can one that a worker would bury again for what JSON does not
   * show: a name that is not UTF-8 (shown with its bad byte replaced),
   * kwargs that are not an object; they stay where they are. */
  const char *unfit[][2] = {{"caf\xe9", "{}"}, {"add", "[1]"}};
  for (int i = 0; i < 2; i++) {
    x = test_redis(&e.r, "XADD " PREFIX "dead * reason %s stream low entry 6-0 id %s name %s "
                   "kwargs %s enqueued 1", "too often", "33333333-3333-4333-8333-333333333333",
                   unfit[i][0], unfit[i][1]);
    CHECK(x->type == REDIS_REPLY_STRING);
    CHECK_EQ_INT(ct_broker_dead_retry(e.b, x->str, id), CT_EINVAL);
    CHECK_OK(ct_broker_dead_get(e.b, x->str, &d));
    json_decref(d);
    CHECK_OK(ct_broker_dead_purge(e.b, x->str, &n));
    CHECK_EQ_INT(n, 1);
    freeReplyObject(x);
  }
  CHECK_OK(ct_broker_dead_retry(e.b, good, id));
  CHECK_EQ_STR(id, "22222222-2222-4222-8222-222222222222");
  WAIT_FOR(test_broker_status(e.b, id) == CT_BROKER_COMPLETED);
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, id, &info));
  CHECK_EQ_INT(json_integer_value(info.result), 42);
  json_decref(info.result);
  CHECK_EQ_INT(ct_broker_dead_get(e.b, good, &d), CT_ENOENT);
  WAIT_FOR(stat(&e, "low", "completed") == 1);

  /* A dead task with a record: retried, its record is queued again, its
   * result gone, then completed. */
  CHECK_OK(ct_broker_dead_purge(e.b, bad, &n));
  CHECK_EQ_INT(n, 1);
  CHECK_OK(ct_broker_dead_purge(e.b, bad, &n));
  CHECK_EQ_INT(n, 0);
  freeReplyObject(test_redis(&e.r, "HSET " PREFIX "task:%s status dead result %s", id,
                             "{\"exception\":{\"class\":\"DeliveryLimit\"}}"));
  x = test_redis(&e.r, "XADD " PREFIX "dead * reason r stream normal id %s name add kwargs %s "
                       "enqueued 1", id, "{\"a\":1,\"b\":1}");
  snprintf(good, sizeof good, "%s", x->str);
  freeReplyObject(x);
  CHECK_OK(ct_broker_dead_retry(e.b, good, id));
  WAIT_FOR(test_broker_status(e.b, id) == CT_BROKER_COMPLETED);
  CHECK_OK(ct_broker_get(e.b, id, &info));
  CHECK_EQ_INT(json_integer_value(info.result), 2);
  json_decref(info.result);

  /* Purge everything. */
  for (int i = 0; i < 3; i++)
    freeReplyObject(test_redis(&e.r, "XADD " PREFIX "dead * reason r%d", i));
  CHECK_OK(ct_broker_dead_purge(e.b, NULL, &n));
  CHECK_EQ_INT(n, 3);
  CHECK_EQ_INT(stat(&e, NULL, "dead"), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(live_workers_are_listed) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  json_t *l;
  CHECK_OK(ct_broker_workers(e.b, &l));
  CHECK_EQ_INT(json_array_size(l), 0);
  json_decref(l);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 3;
  wo.consumer = "w-one";
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  /* A record that expired (its score in the past) is not listed. */
  freeReplyObject(test_redis(&e.r, "ZADD " PREFIX "workers 1 gone"));
  CHECK_OK(ct_broker_workers(e.b, &l));
  CHECK_EQ_INT(json_array_size(l), 1);
  const json_t *w = json_array_get(l, 0);
  CHECK_EQ_STR(json_string_value(json_object_get(w, "consumer")), "w-one");
  CHECK_EQ_INT(field(w, "concurrency"), 3);
  CHECK_EQ_INT(field(w, "pid"), getpid());
  CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(w, "names"), 0)), "add");
  CHECK(json_number_value(json_object_get(w, "expires")) > 1e9);
  json_decref(l);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  CHECK_OK(ct_broker_workers(e.b, &l));
  CHECK_EQ_INT(json_array_size(l), 0);
  json_decref(l);
  test_env_end(&e);
}

typedef struct {
  pthread_mutex_t lock;
  char seen[256]; /* "+name" at a start, "-name" or "!name" (failed) at an end */
  double waits, runs;
} events_t;

static void observe(const ct_broker_event_t *ev, void *data) {
  events_t *e = data;
  pthread_mutex_lock(&e->lock);
  size_t n = strlen(e->seen);
  snprintf(e->seen + n, sizeof e->seen - n, "%c%s",
           ev->kind == CT_BROKER_EVENT_START      ? '+'
           : ev->status == CT_BROKER_FAILED ? '!'
                                            : '-',
           ev->name);
  CHECK(strlen(ev->id) == CT_BROKER_ID_SIZE - 1);
  CHECK_EQ_STR(ev->level, "normal");
  CHECK(ev->queue_wait >= 0 && ev->run_time >= 0);
  e->waits += ev->queue_wait;
  e->runs += ev->run_time;
  pthread_mutex_unlock(&e->lock);
}

TEST(the_observer_hears_each_start_and_end) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  events_t ev = {PTHREAD_MUTEX_INITIALIZER, "", 0, 0};
  CHECK_EQ_INT(ct_broker_worker_observe(NULL, observe, &ev), CT_EINVAL);
  CHECK_OK(ct_broker_worker_observe(e.b, observe, &ev));
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  CHECK_OK(ct_broker_register(e.b, "fail", fail, NULL));
  test_broker_worker_start(e.b, 1);
  CHECK_EQ_INT(ct_broker_worker_observe(e.b, NULL, NULL), CT_EBUSY);
  char a[CT_BROKER_ID_SIZE], f[CT_BROKER_ID_SIZE];
  submit(&e, "add", CT_PRIORITY_NORMAL, a);
  WAIT_FOR(test_broker_status(e.b, a) == CT_BROKER_COMPLETED);
  submit(&e, "fail", CT_PRIORITY_NORMAL, f);
  WAIT_FOR(test_broker_status(e.b, f) == CT_BROKER_FAILED);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  pthread_mutex_lock(&ev.lock);
  CHECK_EQ_STR(ev.seen, "+add-add+fail!fail");
  pthread_mutex_unlock(&ev.lock);
  test_env_end(&e);
}

/* Records each DEAD event as "<name>@<level>#<id or ->;". */
static void observe_dead(const ct_broker_event_t *ev, void *data) {
  events_t *e = data;
  if (ev->kind != CT_BROKER_EVENT_DEAD)
    return;
  CHECK_EQ_INT(ev->status, CT_BROKER_DEAD);
  CHECK(ev->run_time == 0 && ev->queue_wait == 0);
  pthread_mutex_lock(&e->lock);
  size_t n = strlen(e->seen);
  snprintf(e->seen + n, sizeof e->seen - n, "%s@%s#%s;", ev->name, ev->level,
           *ev->id ? ev->id : "-");
  pthread_mutex_unlock(&e->lock);
}

TEST(the_observer_hears_each_entry_buried_by_the_name_it_had) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  events_t ev = {PTHREAD_MUTEX_INITIALIZER, "", 0, 0};
  CHECK_OK(ct_broker_worker_observe(e.b, observe_dead, &ev));
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 1);
  /* Malformed: no kwargs; then no name nor id; then a delayed member that
   * is not one. */
  freeReplyObject(test_redis(&e.r, "XADD " PREFIX "stream:high * id %s name add enqueued 1",
                             "11111111-1111-4111-8111-111111111111"));
  WAIT_FOR(stat(&e, NULL, "dead") == 1);
  freeReplyObject(test_redis(&e.r, "XADD " PREFIX "stream:low * x y"));
  WAIT_FOR(stat(&e, NULL, "dead") == 2);
  freeReplyObject(test_redis(&e.r, "ZADD " PREFIX "delayed 1 not-a-member"));
  WAIT_FOR(stat(&e, NULL, "dead") == 3);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  pthread_mutex_lock(&ev.lock);
  CHECK_EQ_STR(ev.seen, "add@high#11111111-1111-4111-8111-111111111111;@low#-;@delayed#-;");
  pthread_mutex_unlock(&ev.lock);
  test_env_end(&e);
}

int main(void) {
  RUN(status_names);
  RUN(queue_stats_count_ready_pending_and_outcomes_per_level);
  RUN(queue_stats_count_retries_and_delayed_tasks);
  RUN(an_idle_worker_writes_its_counters_at_most_every_tenth_of_a_second);
  RUN(dead_letters_are_listed_shown_retried_and_purged);
  RUN(live_workers_are_listed);
  RUN(the_observer_hears_each_start_and_end);
  RUN(the_observer_hears_each_entry_buried_by_the_name_it_had);
  return check_done();
}
