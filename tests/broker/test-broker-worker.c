/* The broker's worker against a real redis-server: registration, tasks run
 * through the supervisor with their results stored before the entry goes,
 * strict priority classes and no more fetched than free slots, malformed
 * entries to the dead letters, the first completion winning, and stop.
 * Counts and order only; time bounds are generous. */
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"
#include "handlers.h"

#define STREAM(level) "ctasker:{default}:stream:" level

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int gate_tickets; /* tasks the gate lets through */
static int gate_waiting;
static int gate_passed;
static char order[64];

static atomic_int fetch_failures;
static atomic_int unstored; /* "result not stored" log lines */
static atomic_int producer_connected; /* "connected" lines of producer_log */

static void producer_log(int level, const char *msg, void *data) {
  (void)level;
  (void)data;
  if (strstr(msg, ": connected"))
    atomic_fetch_add(&producer_connected, 1);
}

static void log_line(int level, const char *msg, void *data) {
  (void)level;
  (void)data;
  if (strstr(msg, "fetching tasks failed"))
    atomic_fetch_add(&fetch_failures, 1);
  if (strstr(msg, "result not stored"))
    atomic_fetch_add(&unstored, 1);
}

static json_t *add(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  return json_pack("{s:I}", "sum", json_integer_value(json_object_get(kwargs, "a")) +
                                       json_integer_value(json_object_get(kwargs, "b")));
}

static json_t *unwritable(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  return json_string_nocheck("\xff\xfe"); /* not UTF-8: jansson cannot dump it */
}

/* Notes kwargs "tag" in `order`, then waits for a ticket at the gate. */
static json_t *gated(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  pthread_mutex_lock(&lock);
  strcat(order, json_string_value(json_object_get(kwargs, "tag")));
  gate_waiting++;
  pthread_cond_broadcast(&cond);
  while (gate_tickets == 0)
    pthread_cond_wait(&cond, &lock);
  gate_tickets--;
  gate_waiting--;
  gate_passed++;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  return json_true();
}

/* Let one task through the gate and wait until it has passed. */
static void gate_pass_one(void) {
  pthread_mutex_lock(&lock);
  int passed = gate_passed;
  gate_tickets++;
  pthread_cond_broadcast(&cond);
  while (gate_passed == passed)
    pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
}

static void gate_reset(void) {
  pthread_mutex_lock(&lock);
  gate_tickets = gate_waiting = gate_passed = 0;
  order[0] = '\0';
  pthread_mutex_unlock(&lock);
}

static int waiting_at_gate(void) {
  pthread_mutex_lock(&lock);
  int n = gate_waiting;
  pthread_mutex_unlock(&lock);
  return n;
}

/* Log lines to log_line(), commands 10 s; pool_size: the supervisor's (0:
 * its default). */
static void env_start_pool(test_env_t *e, int pool_size) {
  test_env_start(e, pool_size, 10, log_line);
}

static void env_start(test_env_t *e) {
  env_start_pool(e, 0);
}

static void submit(test_env_t *e, const char *name, json_t *kwargs, int priority,
                   char id[CT_BROKER_ID_SIZE]) {
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.priority = priority;
  CHECK_OK(ct_broker_submit(e->b, name, kwargs, &so, id));
  json_decref(kwargs);
}

static long long pending(test_env_t *e, const char *stream) {
  redisReply *x = test_redis(&e->r, "XPENDING %s workers", stream);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 4);
  long long n = x->element[0]->integer;
  freeReplyObject(x);
  return n;
}

/* Entries pending in the four priority streams together. */
static long long pending_everywhere(test_env_t *e) {
  return pending(e, STREAM("critical")) + pending(e, STREAM("high")) +
         pending(e, STREAM("normal")) + pending(e, STREAM("low"));
}

/* Wait until the normal stream is empty (its entries acknowledged and
 * deleted); nothing of it may be left pending. */
static void wait_normal_stream_done(test_env_t *e) {
  WAIT_FOR(test_redis_int(&e->r, "XLEN " STREAM("normal")) == 0);
  CHECK_EQ_INT(pending(e, STREAM("normal")), 0);
}

TEST(registration_closes_at_start) {
  test_env_t e;
  env_start(&e);
  CHECK_EQ_INT(ct_broker_worker_start(e.b, NULL), CT_EINVAL); /* no handler */
  CHECK_EQ_INT(ct_broker_register(e.b, "add", NULL, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register(e.b, "", add, NULL), CT_EINVAL);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  CHECK_EQ_INT(ct_broker_register(e.b, "add", fail, NULL), CT_EBUSY);
  CHECK_EQ_INT(ct_broker_worker_stop(e.b, -1), CT_EINVAL); /* never started */
  test_broker_worker_start(e.b, 2);
  CHECK_EQ_INT(ct_broker_register(e.b, "late", add, NULL), CT_EBUSY);
  CHECK_EQ_INT(ct_broker_worker_start(e.b, NULL), CT_EBUSY);
  CHECK_EQ_INT(test_redis_int(&e.r, "SISMEMBER ctasker:{default}:names add"), 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(tasks_run_and_results_are_stored_before_the_entry_goes) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  CHECK_OK(ct_broker_register(e.b, "fail", fail, NULL));
  CHECK_OK(ct_broker_register(e.b, "unwritable", unwritable, NULL));
  test_broker_worker_start(e.b, 2);
  char id[CT_BROKER_ID_SIZE], bad[CT_BROKER_ID_SIZE], odd[CT_BROKER_ID_SIZE];
  submit(&e, "add", json_pack("{s:i,s:i}", "a", 2, "b", 40), CT_PRIORITY_NORMAL, id);
  submit(&e, "fail", NULL, CT_PRIORITY_HIGH, bad);
  submit(&e, "unwritable", NULL, CT_PRIORITY_LOW, odd);
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 20);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_INT(info.attempts, 1);
  CHECK(info.started > 0 && info.finished >= info.started && info.created > 0);
  CHECK_EQ_INT(json_integer_value(json_object_get(info.result, "sum")), 42);
  json_decref(info.result);
  test_broker_wait_failed(e.b, bad, 20, "ValueError");
  test_broker_wait_failed(e.b, odd, 20, "NotSerializable");
  /* Acknowledged and deleted: nothing pending, nothing left in the streams. */
  WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM("normal")) == 0 &&
           test_redis_int(&e.r, "XLEN " STREAM("high")) == 0 &&
           test_redis_int(&e.r, "XLEN " STREAM("low")) == 0);
  CHECK_EQ_INT(pending(&e, STREAM("normal")) + pending(&e, STREAM("high")) +
                   pending(&e, STREAM("low")), 0);
  long long ttl = test_redis_int(&e.r, "TTL ctasker:{default}:task:%s", id);
  CHECK(ttl > 86000 && ttl <= 86400);
  /* An idle worker still blocks in Redis and takes what comes later. */
  check_sleep(1.5);
  submit(&e, "add", json_pack("{s:i,s:i}", "a", 1, "b", 1), CT_PRIORITY_LOW, id);
  info = test_broker_wait_done(e.b, id, 20);
  CHECK_EQ_INT(json_integer_value(json_object_get(info.result, "sum")), 2);
  json_decref(info.result);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* A stored result's entry goes at once even while an older entry is still
 * running (the stream is trimmed only below the oldest pending entry; the
 * newer ones are deleted one by one); the older one goes when it is done.
 * Then many tasks, over several of the stream's listpack nodes (100
 * entries each, Redis's default), leave nothing behind. */
TEST(entries_go_once_stored_even_past_an_older_one_still_running) {
  test_env_t e;
  env_start_pool(&e, 4);
  gate_reset();
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 4);
  char slow[CT_BROKER_ID_SIZE], id[CT_BROKER_ID_SIZE];
  submit(&e, "gated", json_pack("{s:s}", "tag", "s"), CT_PRIORITY_NORMAL, slow);
  WAIT_FOR(waiting_at_gate() == 1);
  for (int i = 0; i < 3; i++) {
    submit(&e, "add", json_pack("{s:i,s:i}", "a", i, "b", 1), CT_PRIORITY_NORMAL, id);
    test_broker_wait_completed(e.b, id, 20);
  }
  WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM("normal")) == 1);
  CHECK_EQ_INT(pending(&e, STREAM("normal")), 1);
  gate_pass_one();
  test_broker_wait_completed(e.b, slow, 20);
  wait_normal_stream_done(&e);
  for (int i = 0; i < 250; i++)
    submit(&e, "add", json_pack("{s:i,s:i}", "a", i, "b", 1), CT_PRIORITY_NORMAL, id);
  test_broker_wait_completed(e.b, id, 60);
  wait_normal_stream_done(&e);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(a_name_without_handler_here_fails_as_unknown_task) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 1);
  freeReplyObject(test_redis(&e.r, "SADD ctasker:{default}:names elsewhere"));
  char id[CT_BROKER_ID_SIZE];
  submit(&e, "elsewhere", NULL, CT_PRIORITY_NORMAL, id);
  test_broker_wait_failed(e.b, id, 20, "UnknownTask");
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(strict_priority_and_never_more_than_free_slots) {
  test_env_t e;
  env_start(&e);
  gate_reset();
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  test_broker_worker_start(e.b, 1);
  char id[5][CT_BROKER_ID_SIZE];
  submit(&e, "gated", json_pack("{s:s}", "tag", "1"), CT_PRIORITY_NORMAL, id[0]);
  WAIT_FOR(waiting_at_gate() == 1);
  submit(&e, "gated", json_pack("{s:s}", "tag", "L"), CT_PRIORITY_LOW, id[1]);
  submit(&e, "gated", json_pack("{s:s}", "tag", "N"), CT_PRIORITY_NORMAL, id[2]);
  submit(&e, "gated", json_pack("{s:s}", "tag", "H"), CT_PRIORITY_HIGH, id[3]);
  submit(&e, "gated", json_pack("{s:s}", "tag", "C"), CT_PRIORITY_CRITICAL, id[4]);
  /* One slot, taken: nothing more was fetched. */
  check_sleep(0.3);
  CHECK_EQ_INT(pending_everywhere(&e), 1);
  for (int i = 0; i < 4; i++) {
    gate_pass_one();
    WAIT_FOR(waiting_at_gate() == 1);
    CHECK_EQ_INT(pending_everywhere(&e), 1);
  }
  gate_pass_one();
  for (int i = 0; i < 5; i++)
    test_broker_wait_completed(e.b, id[i], 20);
  CHECK_EQ_STR(order, "1CHNL");
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(a_malformed_entry_goes_to_the_dead_letters) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 1);
  freeReplyObject(test_redis(&e.r, "XADD " STREAM("normal") " * id nonsense name add"));
  freeReplyObject(test_redis(&e.r, "XADD " STREAM("normal") " * id "
                             "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b name add kwargs [1] enqueued 1"));
  char id[CT_BROKER_ID_SIZE];
  submit(&e, "add", json_pack("{s:i,s:i}", "a", 1, "b", 2), CT_PRIORITY_NORMAL, id);
  test_broker_wait_completed(e.b, id, 20);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:dead"), 2);
  redisReply *x = test_redis(&e.r, "XRANGE ctasker:{default}:dead - +");
  CHECK_EQ_STR(x->element[0]->element[1]->element[0]->str, "reason");
  CHECK_EQ_STR(x->element[0]->element[1]->element[1]->str, "missing or bad id");
  CHECK_EQ_STR(x->element[1]->element[1]->element[1]->str, "kwargs is not a JSON object");
  CHECK_EQ_STR(x->element[1]->element[1]->element[3]->str, "normal");
  freeReplyObject(x);
  wait_normal_stream_done(&e);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* An entry with more fields than one Redis command in a script can be
 * given (a reader skips fields it does not know, so it is a valid entry
 * but for its missing kwargs): its dead letter keeps what fits and says
 * how many values it left out. The bury script failed on it, and the entry
 * was delivered again after every lease, for ever. */
TEST(a_malformed_entry_with_thousands_of_fields_goes_to_the_dead_letters) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 1);
  enum { EXTRA = 4100 };
  static char names[EXTRA][16];
  const char *argv[5 + 2 * EXTRA] = {"XADD", STREAM("normal"), "*", "name", "add"};
  for (int i = 0; i < EXTRA; i++) {
    snprintf(names[i], sizeof names[i], "x%d", i);
    argv[5 + 2 * i] = names[i];
    argv[6 + 2 * i] = "v";
  }
  freeReplyObject(redisCommandArgv(e.r.client, 5 + 2 * EXTRA, argv, NULL));
  WAIT_FOR(test_redis_int(&e.r, "XLEN ctasker:{default}:dead") == 1);
  redisReply *x = test_redis(&e.r, "XRANGE ctasker:{default}:dead - +");
  const redisReply *f = x->element[0]->element[1];
  CHECK_EQ_STR(f->element[1]->str, "missing or bad id");
  CHECK_EQ_STR(f->element[f->elements - 2]->str, "dropped");
  CHECK(atoi(f->element[f->elements - 1]->str) > 0);
  freeReplyObject(x);
  wait_normal_stream_done(&e);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* The server restarts without its data (no persistence). A worker that
 * lives on finds its groups gone, and adds its names again as it makes
 * them: submissions of them were refused until it started again. A
 * producer's handle forgets the names it had found registered before: a
 * name no worker has registered since is refused (it was written, for no
 * worker to take). */
TEST(after_the_server_lost_its_data_names_are_registered_and_checked_again) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 1);
  ct_broker_t *p = test_broker_open(e.sup, e.r.url, 10, producer_log);
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(p, "add", NULL, NULL, id)); /* p has found "add" registered */
  test_broker_wait_completed(p, id, 20);
  CHECK_OK(ct_broker_submit(p, "add", NULL, NULL, id)); /* ... and keeps it */
  test_broker_wait_completed(p, id, 20);
  test_redis_halt(&e.r, false);
  test_redis_start(&e.r, NULL);
  WAIT_FOR(test_redis_int(&e.r, "SISMEMBER ctasker:{default}:names add") == 1);
  CHECK_OK(ct_broker_submit(p, "add", NULL, NULL, id));
  test_broker_wait_completed(p, id, 20);
  /* Again, with the worker stopped: nothing registers "add" now. */
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  int before = atomic_load(&producer_connected);
  test_redis_halt(&e.r, false);
  test_redis_start(&e.r, NULL);
  WAIT_FOR(atomic_load(&producer_connected) > before); /* its connection made again */
  CHECK_EQ_INT(ct_broker_submit(p, "add", NULL, NULL, id), CT_ENOENT);
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS " STREAM("normal")), 0);
  ct_broker_free(p);
  test_env_end(&e);
}

/* A stop during which a run ends whose result the server does not take
 * (its writes paused past three command timeouts) says so: CT_EAGAIN, and
 * the entry stays pending for another worker. The stop returned 0, and the
 * daemon said every task ended and exited 0. */
TEST(a_stop_says_when_a_result_was_not_stored) {
  test_env_t e;
  test_env_start(&e, 0, 0.3, NULL);
  gate_reset();
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  test_broker_worker_start(e.b, 1);
  ct_broker_t *p = test_broker_open(e.sup, e.r.url, 10, NULL);
  char id[CT_BROKER_ID_SIZE];
  json_t *kwargs = json_pack("{s:s}", "tag", "a");
  CHECK_OK(ct_broker_submit(p, "gated", kwargs, NULL, id));
  json_decref(kwargs);
  WAIT_FOR(waiting_at_gate() == 1);
  CHECK_OK(ct_broker_worker_stop(e.b, 0)); /* the stop under way */
  freeReplyObject(test_redis(&e.r, "CLIENT PAUSE 3000 WRITE"));
  gate_pass_one();
  CHECK_EQ_INT(ct_broker_worker_stop(e.b, 30), CT_EAGAIN);
  CHECK_EQ_INT(ct_broker_worker_stop(e.b, 30), CT_EAGAIN); /* and again */
  WAIT_FOR(pending(&e, STREAM("normal")) == 1);
  ct_broker_free(p);
  test_env_end(&e);
}

/* The queue's count of the runs of a level that ended with `outcome`. */
static long long stat_of(test_env_t *e, const char *field) {
  redisReply *x = test_redis(&e->r, "HGET ctasker:{default}:stats %s", field);
  long long n = x->type == REDIS_REPLY_STRING ? atoll(x->str) : 0;
  freeReplyObject(x);
  return n;
}

/* Runs that ended are counted in Redis within about a second, also while
 * a long run holds every slot: their counts waited for it to end. */
TEST(counts_are_written_while_a_long_run_holds_every_slot) {
  test_env_t e;
  env_start(&e);
  gate_reset();
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  test_broker_worker_start(e.b, 1);
  char id[CT_BROKER_ID_SIZE];
  for (int i = 0; i < 5; i++) {
    submit(&e, "add", json_pack("{s:i,s:i}", "a", i, "b", 1), CT_PRIORITY_NORMAL, id);
    test_broker_wait_completed(e.b, id, 20);
  }
  submit(&e, "gated", json_pack("{s:s}", "tag", "a"), CT_PRIORITY_NORMAL, id);
  WAIT_FOR(waiting_at_gate() == 1);
  WAIT_FOR(stat_of(&e, "normal:completed") == 5);
  gate_pass_one();
  test_broker_wait_completed(e.b, id, 20);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  CHECK_EQ_INT(stat_of(&e, "normal:completed"), 6);
  test_env_end(&e);
}

/* kwargs over the worker's 16 MiB payload limit. */
static json_t *oversized_kwargs(void) {
  size_t len = (17u << 20);
  char *big = malloc(len + 1);
  CHECK(big != NULL);
  memset(big, 'x', len);
  big[len] = '\0';
  json_t *kw = json_pack("{s:s}", "blob", big);
  free(big);
  CHECK(kw != NULL);
  return kw;
}

TEST(an_oversized_task_is_dead_in_its_record_and_answers_its_caller) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 1);
  json_t *kw = oversized_kwargs();
  char id[CT_BROKER_ID_SIZE];
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_payload = 32u << 20; /* this producer allows what the worker refuses */
  CHECK_OK(ct_broker_submit(e.b, "add", kw, &so, id));
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 20); /* never terminal before the fix */
  CHECK_EQ_INT(info.status, CT_BROKER_DEAD);
  CHECK_EQ_STR(ct_result_error_class(info.result), "MalformedTask");
  CHECK_EQ_STR(ct_result_error_str(info.result), "kwargs over the payload limit");
  json_decref(info.result);
  json_t *result = NULL;
  CHECK_OK(ct_broker_call(e.b, "add", kw, &so, 20, &result)); /* not CT_ETIMEDOUT */
  CHECK_EQ_STR(ct_result_error_class(result), "MalformedTask");
  json_decref(result);
  json_decref(kw);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:dead"), 2);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " STREAM("normal")), 0);
  CHECK_EQ_INT(pending(&e, STREAM("normal")), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(the_first_completion_wins) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  freeReplyObject(test_redis(&e.r, "SADD ctasker:{default}:names add")); /* as a worker did */
  char id[CT_BROKER_ID_SIZE];
  submit(&e, "add", json_pack("{s:i,s:i}", "a", 1, "b", 2), CT_PRIORITY_NORMAL, id);
  /* Another worker completed it first (as after a reclaim). */
  freeReplyObject(test_redis(&e.r, "HSET ctasker:{default}:task:%s status completed "
                             "result \"first\" finished 5000", id));
  test_broker_worker_start(e.b, 1);
  WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM("normal")) == 0);
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, id, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "first");
  CHECK_EQ_INT(info.attempts, 0); /* not marked running again either */
  json_decref(info.result);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(stop_waits_for_running_tasks) {
  test_env_t e;
  env_start(&e);
  gate_reset();
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  test_broker_worker_start(e.b, 2);
  char id[CT_BROKER_ID_SIZE];
  submit(&e, "gated", json_pack("{s:s}", "tag", "x"), CT_PRIORITY_NORMAL, id);
  WAIT_FOR(waiting_at_gate() == 1);
  CHECK_EQ_INT(ct_broker_worker_stop(e.b, 0.2), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_broker_worker_stop(e.b, 0), 0); /* does not wait */
  /* Stopped fetching: a new task stays in its stream. */
  char later[CT_BROKER_ID_SIZE];
  submit(&e, "gated", json_pack("{s:s}", "tag", "y"), CT_PRIORITY_NORMAL, later);
  gate_pass_one();
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, id, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  json_decref(info.result);
  CHECK_OK(ct_broker_get(e.b, later, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_QUEUED);
  CHECK_EQ_STR(order, "x");
  test_env_end(&e);
}

static json_t *liveness(test_env_t *e) {
  redisReply *x = test_redis(&e->r, "GET ctasker:{default}:worker:w1");
  json_t *j = x->type == REDIS_REPLY_STRING ? json_loads(x->str, 0, NULL) : NULL;
  freeReplyObject(x);
  return j;
}

TEST(a_worker_keeps_an_expiring_liveness_record) {
  test_env_t e;
  env_start(&e);
  gate_reset();
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.consumer = "w1";
  wo.concurrency = 3;
  wo.lease = 0.5; /* the record lives 1.5 s, refreshed every 1/6 s */
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  json_t *rec = liveness(&e);
  CHECK(rec != NULL);
  CHECK_EQ_INT(json_integer_value(json_object_get(rec, "pid")), getpid());
  CHECK_EQ_INT(json_integer_value(json_object_get(rec, "concurrency")), 3);
  CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(rec, "names"), 0)), "gated");
  CHECK_EQ_INT(json_integer_value(json_object_get(rec, "in_flight")), 0);
  json_decref(rec);
  long long ttl = test_redis_int(&e.r, "PTTL ctasker:{default}:worker:w1");
  CHECK(ttl > 0 && ttl <= 1500);
  redisReply *x = test_redis(&e.r, "ZSCORE ctasker:{default}:workers w1");
  CHECK(x->type == REDIS_REPLY_STRING);
  freeReplyObject(x);
  char id[CT_BROKER_ID_SIZE];
  submit(&e, "gated", json_pack("{s:s}", "tag", "a"), CT_PRIORITY_NORMAL, id);
  WAIT_FOR(waiting_at_gate() == 1);
  /* Refreshed while it lives, several TTLs long, with the task in flight. */
  double until = ct_now() + 2;
  for (int i = 0;; i++) {
    CHECK(i < 2000);
    rec = liveness(&e);
    CHECK(rec != NULL); /* never expired meanwhile */
    bool busy = json_integer_value(json_object_get(rec, "in_flight")) == 1;
    json_decref(rec);
    if (busy && ct_now() > until)
      break;
    check_sleep(0.01);
  }
  gate_pass_one();
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS ctasker:{default}:worker:w1"), 0);
  x = test_redis(&e.r, "ZSCORE ctasker:{default}:workers w1");
  CHECK(x->type == REDIS_REPLY_NIL);
  freeReplyObject(x);
  test_env_end(&e);
}

TEST(a_restarted_server_loses_no_task_and_doubles_no_result) {
  static const char *const aof[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
  test_env_t e;
  memset(&e, 0, sizeof e);
  test_redis_start(&e.r, aof);
  CHECK_OK(ct_supervisor_new(NULL, &e.sup));
  CHECK_OK(ct_supervisor_start(e.sup));
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = e.r.url;
  o.log = log_line;
  o.command_timeout = 5; /* a result is retried for 3 x 5 s */
  CHECK_OK(ct_broker_new(e.sup, &o, &e.b));
  gate_reset();
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  test_broker_worker_start(e.b, 1);
  char running[CT_BROKER_ID_SIZE], waiting[CT_BROKER_ID_SIZE];
  submit(&e, "gated", json_pack("{s:s}", "tag", "r"), CT_PRIORITY_NORMAL, running);
  WAIT_FOR(waiting_at_gate() == 1);
  submit(&e, "gated", json_pack("{s:s}", "tag", "w"), CT_PRIORITY_NORMAL, waiting);
  test_redis_halt(&e.r, false); /* SIGTERM: the AOF is complete */
  gate_pass_one();              /* its result now waits for the server */
  test_redis_start(&e.r, aof);
  gate_pass_one();              /* the task that waited in the stream */
  const char *ids[] = {running, waiting};
  for (int i = 0; i < 2; i++)
    CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[i], 20), 1);
  CHECK_EQ_STR(order, "rw"); /* each ran once */
  wait_normal_stream_done(&e);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(a_server_that_may_evict_is_refused_unless_allowed) {
  test_env_t e;
  env_start(&e);
  freeReplyObject(test_redis(&e.r, "CONFIG SET maxmemory-policy allkeys-lru"));
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  CHECK_EQ_INT(ct_broker_worker_start(e.b, NULL), CT_ENOTSUP);
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS ctasker:{default}:names"), 0); /* nothing */
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.allow_eviction = true;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(stopping_the_supervisor_ends_the_worker) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 2);
  atomic_store(&fetch_failures, 0);
  CHECK_OK(ct_supervisor_stop(e.sup, CT_STOP_DRAIN, -1));
  check_sleep(1.5); /* a fetch thread still trying would fail every 0.5 s */
  CHECK_EQ_INT(atomic_load(&fetch_failures), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, 20));
  ct_broker_free(e.b);
  e.b = NULL;
  CHECK_OK(ct_supervisor_free(e.sup));
  test_redis_stop(&e.r);
}

/* --- calls (RPC) ----------------------------------------------------------- */

typedef struct {
  ct_broker_t *b;
  int a;
  int rc;
  long long sum;
} call_arg_t;

static void *call_add(void *p) {
  call_arg_t *c = p;
  json_t *result = NULL;
  json_t *kw = json_pack("{s:i,s:i}", "a", c->a, "b", 1000);
  c->rc = ct_broker_call(c->b, "add", kw, NULL, 20, &result);
  c->sum = json_integer_value(json_object_get(result, "sum"));
  json_decref(kw);
  json_decref(result);
  return NULL;
}

TEST(call_returns_the_result_or_the_exception) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  CHECK_OK(ct_broker_register(e.b, "fail", fail, NULL));
  test_broker_worker_start(e.b, 4);
  json_t *result = NULL;
  json_t *kw = json_pack("{s:i,s:i}", "a", 20, "b", 22);
  CHECK_OK(ct_broker_call(e.b, "add", kw, NULL, 20, &result));
  CHECK_EQ_INT(json_integer_value(json_object_get(result, "sum")), 42);
  json_decref(result);
  CHECK_OK(ct_broker_call(e.b, "fail", kw, NULL, 20, &result));
  CHECK_EQ_STR(ct_result_error_class(result), "ValueError");
  json_decref(result);
  CHECK_EQ_INT(ct_broker_call(e.b, "nobody", kw, NULL, 20, &result), CT_ENOENT);
  CHECK(result == NULL);
  CHECK_EQ_INT(ct_broker_call(e.b, "add", kw, NULL, 0, &result), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_call(e.b, "add", kw, NULL, NAN, &result), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_call(e.b, "add", kw, NULL, 1, NULL), CT_EINVAL);
  /* No deadline at all: INFINITY waits as long as it takes. */
  CHECK_OK(ct_broker_call(e.b, "add", kw, NULL, INFINITY, &result));
  CHECK_EQ_INT(json_integer_value(json_object_get(result, "sum")), 42);
  json_decref(result);
  CHECK_OK(ct_broker_call(e.b, "add", kw, NULL, 1e12, &result)); /* longer than a day too */
  json_decref(result);
  json_decref(kw);
  /* Calls from several threads wait at once, each on its own connection. */
  enum { N = 4 };
  pthread_t th[N];
  call_arg_t args[N];
  for (int i = 0; i < N; i++) {
    args[i] = (call_arg_t){e.b, i, -1, 0};
    CHECK(pthread_create(&th[i], NULL, call_add, &args[i]) == 0);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    CHECK_OK(args[i].rc);
    CHECK_EQ_INT(args[i].sum, 1000 + i);
  }
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(a_call_past_its_deadline_times_out_and_is_not_run) {
  test_env_t e;
  env_start(&e);
  gate_reset();
  freeReplyObject(test_redis(&e.r, "SADD ctasker:{default}:names gated")); /* as a worker did */
  json_t *result = (json_t *)&e;
  json_t *kw = json_pack("{s:s}", "tag", "late");
  CHECK_EQ_INT(ct_broker_call(e.b, "gated", kw, NULL, 0.3, &result), CT_ETIMEDOUT);
  CHECK(result == NULL);
  json_decref(kw);
  redisReply *x = test_redis(&e.r, "XRANGE " STREAM("normal") " - +");
  CHECK(x->elements == 1);
  redisReply *f = x->element[0]->element[1];
  char id[CT_BROKER_ID_SIZE];
  snprintf(id, sizeof id, "%s", f->element[1]->str); /* the first field is id */
  CHECK_EQ_STR(f->element[8]->str, "deadline");
  freeReplyObject(x);
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  test_broker_worker_start(e.b, 1);
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 20);
  CHECK_EQ_INT(info.status, CT_BROKER_EXPIRED);
  CHECK_EQ_STR(ct_result_error_class(info.result), "TimeoutError");
  CHECK_EQ_INT(info.attempts, 0);
  json_decref(info.result);
  CHECK_EQ_STR(order, ""); /* the handler never ran */
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

typedef struct {
  ct_broker_t *b;
  int rc;
  json_t *result;
} dead_call_t;

static void *call_job(void *p) {
  dead_call_t *c = p;
  json_t *kw = json_pack("{s:s}", "tag", "d");
  c->rc = ct_broker_call(c->b, "job", kw, NULL, 20, &c->result);
  json_decref(kw);
  return NULL;
}

TEST(a_call_whose_task_goes_to_the_dead_letters_gets_its_exception) {
  test_env_t e;
  env_start(&e);
  gate_reset();
  freeReplyObject(test_redis(&e.r, "SADD ctasker:{default}:names job")); /* as a worker did */
  freeReplyObject(test_redis(&e.r, "XGROUP CREATE " STREAM("normal") " workers 0 MKSTREAM"));
  dead_call_t c = {e.b, -1, NULL};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, call_job, &c) == 0);
  WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM("normal")) == 1);
  /* A consumer takes the entry and goes silent: its lease lapses, and the
   * next delivery is one more than the worker allows. */
  freeReplyObject(test_redis(&e.r, "XREADGROUP GROUP workers ghost COUNT 1 STREAMS "
                                   STREAM("normal") " >"));
  CHECK_OK(ct_broker_register(e.b, "job", gated, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 0.1;
  wo.max_deliveries = 1;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  pthread_join(th, NULL); /* before its 20 s deadline, or CT_ETIMEDOUT */
  CHECK_OK(c.rc);
  CHECK_EQ_STR(ct_result_error_class(c.result), "DeliveryLimit");
  json_decref(c.result);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:dead"), 1);
  CHECK_EQ_STR(order, ""); /* never run */
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* --- leases: a worker in a child process, killed mid-task ------------------ */

static int child_notify_fd = -1;

/* The child's handler: tell the parent it runs, then hang until killed. */
static json_t *hang(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  (void)!write(child_notify_fd, "r", 1);
  for (;;)
    pause();
  return NULL;
}

/* The worker process (this binary run as `--worker URL FD`): serves "job"
 * with `hang` until killed. */
static int worker_process(const char *url, const char *fd) {
  child_notify_fd = atoi(fd);
  ct_supervisor_t *sup;
  ct_broker_t *b;
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = url;
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 1.0;
  if (ct_supervisor_new(NULL, &sup) != 0 || ct_supervisor_start(sup) != 0 ||
      ct_broker_new(sup, &o, &b) != 0 || ct_broker_register(b, "job", hang, NULL) != 0 ||
      ct_broker_worker_start(b, &wo) != 0)
    return 3;
  for (;;)
    pause();
}

/* Start a worker process (exec'd, so that it starts its threads afresh). */
static pid_t spawn_worker(const char *url, int notify_fd) {
  char fd[16];
  snprintf(fd, sizeof fd, "%d", notify_fd);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
    execl("/proc/self/exe", "test-broker-worker", "--worker", url, fd, (char *)NULL);
    _exit(127);
  }
  return pid;
}

/* Submit "job", let a child worker take it, and kill the child mid-task:
 * the entry is left pending under a consumer that will never speak again. */
static void task_of_a_killed_worker(test_env_t *e, char id[CT_BROKER_ID_SIZE]) {
  int fds[2];
  CHECK(pipe(fds) == 0);
  child_notify_fd = fds[1];
  pid_t child = spawn_worker(e->r.url, fds[1]);
  close(fds[1]);
  WAIT_FOR(test_redis_int(&e->r, "SISMEMBER ctasker:{default}:names job") == 1);
  submit(e, "job", json_pack("{s:s}", "tag", "k"), CT_PRIORITY_NORMAL, id);
  struct pollfd p = {fds[0], POLLIN, 0};
  CHECK(poll(&p, 1, 20000) == 1);
  char c;
  CHECK(read(fds[0], &c, 1) == 1);
  close(fds[0]);
  CHECK(kill(child, SIGKILL) == 0);
  CHECK(waitpid(child, NULL, 0) == child);
  CHECK_EQ_INT(pending(e, STREAM("normal")), 1);
}

/* The task of a killed worker, and "job" registered here to wait at the
 * gate: the options of the worker that is to take the task over (a lease
 * of 1 s). */
static ct_broker_worker_opts_t after_a_killed_worker(test_env_t *e, char id[CT_BROKER_ID_SIZE]) {
  gate_reset();
  task_of_a_killed_worker(e, id);
  CHECK_OK(ct_broker_register(e->b, "job", gated, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 1.0;
  return wo;
}

/* The start of the one pending entry: consumer and delivery count. */
static void only_pending(test_env_t *e, char *consumer, size_t size, long long *deliveries) {
  redisReply *x = test_redis(&e->r, "XPENDING " STREAM("normal") " workers - + 10");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  snprintf(consumer, size, "%s", x->element[0]->element[1]->str);
  *deliveries = x->element[0]->element[3]->integer;
  freeReplyObject(x);
}

TEST(a_killed_workers_task_is_reclaimed_after_its_lease) {
  test_env_t e;
  env_start(&e);
  char id[CT_BROKER_ID_SIZE];
  ct_broker_worker_opts_t wo = after_a_killed_worker(&e, id);
  wo.consumer = "survivor";
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  WAIT_FOR(waiting_at_gate() == 1);
  char consumer[64];
  long long deliveries;
  only_pending(&e, consumer, sizeof consumer, &deliveries);
  CHECK_EQ_STR(consumer, "survivor");
  CHECK_EQ_INT(deliveries, 2);
  gate_pass_one();
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 20);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_INT(info.attempts, 2);
  CHECK(json_is_true(info.result));
  json_decref(info.result);
  CHECK_EQ_STR(order, "k"); /* run once here */
  wait_normal_stream_done(&e);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(a_task_delivered_too_often_goes_to_the_dead_letters) {
  test_env_t e;
  env_start(&e);
  char id[CT_BROKER_ID_SIZE];
  ct_broker_worker_opts_t wo = after_a_killed_worker(&e, id);
  wo.max_deliveries = 1;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 20);
  CHECK_EQ_INT(info.status, CT_BROKER_DEAD);
  CHECK_EQ_STR(ct_result_error_class(info.result), "DeliveryLimit");
  CHECK(strstr(ct_result_error_str(info.result), "delivered 2 times") != NULL);
  json_decref(info.result);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:dead"), 1);
  redisReply *x = test_redis(&e.r, "XRANGE ctasker:{default}:dead - +");
  CHECK_EQ_STR(x->element[0]->element[1]->element[1]->str, "delivered 2 times, more than 1");
  freeReplyObject(x);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " STREAM("normal")), 0);
  CHECK_EQ_INT(pending(&e, STREAM("normal")), 0);
  CHECK_EQ_STR(order, ""); /* never run here */
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

static atomic_int spins;

/* The lease of the CPU-bound test: long enough that renewals every third of
 * it reach the server even on a loaded machine, where a 1 s lease was once
 * lost while its owner lived. */
#define SPIN_LEASE 2.0

/* Hogs a CPU for three leases, never yielding. */
static json_t *spin(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  atomic_fetch_add(&spins, 1);
  volatile unsigned long n = 0;
  for (double end = ct_now() + 3 * SPIN_LEASE; ct_now() < end;)
    n++;
  return json_integer(1);
}

TEST(a_cpu_bound_task_longer_than_its_lease_runs_once) {
  test_env_t e;
  env_start(&e);
  ct_broker_t *other;
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = e.r.url;
  CHECK_OK(ct_broker_new(e.sup, &o, &other));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = SPIN_LEASE;
  wo.concurrency = 1;
  CHECK_OK(ct_broker_register(e.b, "spin", spin, NULL));
  CHECK_OK(ct_broker_register(other, "spin", spin, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  CHECK_OK(ct_broker_worker_start(other, &wo));
  atomic_store(&spins, 0);
  char id[CT_BROKER_ID_SIZE];
  submit(&e, "spin", NULL, CT_PRIORITY_NORMAL, id);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, id, 20), 1);
  CHECK_EQ_INT(atomic_load(&spins), 1);
  ct_broker_free(other);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

static void rpc_add(test_env_t *e, long long a, long long b) {
  json_t *kw = json_pack("{s:I,s:I}", "a", a, "b", b), *result = NULL;
  CHECK_OK(ct_broker_call(e->b, "add", kw, NULL, 20, &result));
  CHECK_EQ_INT(json_integer_value(json_object_get(result, "sum")), a + b);
  json_decref(result);
  json_decref(kw);
}

TEST(scripts_run_by_sha_and_are_loaded_again_when_the_server_forgets_them) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, 1);
  rpc_add(&e, 1, 2);
  freeReplyObject(test_redis(&e.r, "SCRIPT FLUSH")); /* as a restarted server has none */
  rpc_add(&e, 3, 4);
  rpc_add(&e, 5, 6);
  /* the scripts of each call (fetch, complete, counters): by SHA1, not by text */
  CHECK(test_redis_calls(&e.r, "evalsha") >= 12);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " STREAM("normal")), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* From the server's slow log (which logs every command here): how many
 * calls of the complete script it ran (an EVALSHA whose keys are a stream
 * then a record), and how many results they stored in all (the sum of its
 * streams' counts of results, which follow the group, the TTL and the
 * count of streams). */
static void complete_calls(test_env_t *e, int *calls, int *results) {
  redisReply *r = test_redis(&e->r, "SLOWLOG GET -1");
  CHECK(r && r->type == REDIS_REPLY_ARRAY);
  *calls = *results = 0;
  for (size_t i = 0; i < r->elements; i++) {
    const redisReply *args = r->element[i]->element[3];
    if (args->elements < 6 || strcasecmp(args->element[0]->str, "EVALSHA") != 0 ||
        !strstr(args->element[3]->str, "}:stream:") || !strstr(args->element[4]->str, "}:task:"))
      continue;
    ++*calls;
    size_t streams_at = 3 + (size_t)atoi(args->element[2]->str) + 2;
    CHECK(streams_at < args->elements);
    int streams = atoi(args->element[streams_at]->str);
    CHECK(streams >= 1 && streams_at + (size_t)streams < args->elements);
    for (int k = 1; k <= streams; k++)
      *results += atoi(args->element[streams_at + (size_t)k]->str);
  }
  freeReplyObject(r);
}

TEST(results_that_finish_together_are_stored_in_one_call) {
  enum { N = 8 };
  test_env_t e;
  env_start_pool(&e, N);
  gate_reset();
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  CHECK_OK(ct_broker_register(e.b, "add", add, NULL));
  test_broker_worker_start(e.b, N);
  rpc_add(&e, 1, 2); /* this server has the scripts now: no NOSCRIPT below */
  char ids[N][CT_BROKER_ID_SIZE];
  for (int i = 0; i < N; i++)
    submit(&e, "gated", json_pack("{s:s}", "tag", "a"), 100, ids[i]);
  WAIT_FOR(waiting_at_gate() == N);
  freeReplyObject(test_redis(&e.r, "CONFIG SET slowlog-max-len 10000"));
  freeReplyObject(test_redis(&e.r, "CONFIG SET slowlog-log-slower-than 0"));
  freeReplyObject(test_redis(&e.r, "SLOWLOG RESET"));
  /* The first store waits in the server; the others queue up behind it. */
  freeReplyObject(test_redis(&e.r, "CLIENT PAUSE 2000 WRITE"));
  for (int i = 0; i < N; i++)
    gate_pass_one();
  for (int i = 0; i < N; i++)
    test_broker_wait_completed(e.b, ids[i], 20);
  int calls, results;
  complete_calls(&e, &calls, &results);
  CHECK_EQ_INT(results, N); /* each stored once */
  CHECK(calls < N);         /* one call each before */
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " STREAM("normal")), 0);
  CHECK_EQ_INT(pending(&e, STREAM("normal")), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* Returns once `late_after` tasks have passed the gate, a little after
 * them: its result comes while theirs are being stored. */
static int late_after;

static json_t *late(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  pthread_mutex_lock(&lock);
  while (gate_passed < late_after)
    pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  check_sleep(0.2);
  return json_true();
}

/* A result the server refuses (its record is a key of another type, a
 * foreign program's doing) holds up none of those stored with it: they
 * are stored, their runs counted, and only its entry stays pending. */
TEST(a_refused_result_holds_up_none_stored_with_it) {
  enum { N = 4 };
  test_env_t e;
  env_start_pool(&e, N);
  gate_reset();
  atomic_store(&unstored, 0);
  late_after = N - 1;
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  CHECK_OK(ct_broker_register(e.b, "late", late, NULL));
  freeReplyObject(test_redis(&e.r, "SADD ctasker:{default}:names gated late"));
  char ids[N][CT_BROKER_ID_SIZE];
  submit(&e, "late", NULL, 100, ids[0]);
  for (int i = 1; i < N; i++)
    submit(&e, "gated", json_pack("{s:s}", "tag", "a"), 100, ids[i]);
  freeReplyObject(test_redis(&e.r, "DEL ctasker:{default}:task:%s", ids[0]));
  freeReplyObject(test_redis(&e.r, "SET ctasker:{default}:task:%s x", ids[0]));
  test_broker_worker_start(e.b, N);
  WAIT_FOR(waiting_at_gate() == N - 1);
  /* The first result waits in the server; the late one queues up behind
   * it with the others. */
  freeReplyObject(test_redis(&e.r, "CLIENT PAUSE 2000 WRITE"));
  for (int i = 1; i < N; i++)
    gate_pass_one();
  for (int i = 1; i < N; i++)
    CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[i], 20), 1);
  WAIT_FOR(atomic_load(&unstored) == 1);
  CHECK_EQ_INT(pending(&e, STREAM("normal")), 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " STREAM("normal")), 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--worker") == 0)
    return worker_process(argv[2], argv[3]);
  if (!test_redis_installed())
    return 77;
  RUN(registration_closes_at_start);
  RUN(tasks_run_and_results_are_stored_before_the_entry_goes);
  RUN(entries_go_once_stored_even_past_an_older_one_still_running);
  RUN(a_name_without_handler_here_fails_as_unknown_task);
  RUN(strict_priority_and_never_more_than_free_slots);
  RUN(a_malformed_entry_goes_to_the_dead_letters);
  RUN(a_malformed_entry_with_thousands_of_fields_goes_to_the_dead_letters);
  RUN(after_the_server_lost_its_data_names_are_registered_and_checked_again);
  RUN(a_stop_says_when_a_result_was_not_stored);
  RUN(counts_are_written_while_a_long_run_holds_every_slot);
  RUN(an_oversized_task_is_dead_in_its_record_and_answers_its_caller);
  RUN(the_first_completion_wins);
  RUN(stop_waits_for_running_tasks);
  RUN(a_worker_keeps_an_expiring_liveness_record);
  RUN(a_restarted_server_loses_no_task_and_doubles_no_result);
  RUN(a_server_that_may_evict_is_refused_unless_allowed);
  RUN(stopping_the_supervisor_ends_the_worker);
  RUN(call_returns_the_result_or_the_exception);
  RUN(a_call_past_its_deadline_times_out_and_is_not_run);
  RUN(a_call_whose_task_goes_to_the_dead_letters_gets_its_exception);
  RUN(a_killed_workers_task_is_reclaimed_after_its_lease);
  RUN(a_task_delivered_too_often_goes_to_the_dead_letters);
  RUN(a_cpu_bound_task_longer_than_its_lease_runs_once);
  RUN(scripts_run_by_sha_and_are_loaded_again_when_the_server_forgets_them);
  RUN(results_that_finish_together_are_stored_in_one_call);
  RUN(a_refused_result_holds_up_none_stored_with_it);
  return check_done();
}
