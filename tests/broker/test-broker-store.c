/* Results are stored on the worker's store thread: a handler's pool thread
 * hands its outcome over and returns, so the supervisor task ends at once.
 * A result whose store cannot go through yet (redis-server is stopped with
 * SIGSTOP by the handler itself) keeps its slot taken, its entry pending
 * and its END event untold; once Redis answers again it is stored and its
 * entry acknowledged, and only then does the next task start. A stop waits
 * for such a store within its grace. Results that queue up behind it are
 * stored in one batch whatever their order, leaving no entry; a lone result
 * whose store times out is sent again; a lone result's entry is deleted,
 * and many of one stream are trimmed, up to an older task still running; a
 * result whose record is gone writes it whole again. Counts and order only;
 * bounds are generous (the command timeout, 10 s but in the test of a store
 * that times out, is longer than any wait here for a store that must not
 * have happened). */
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include "ctasker.h"
#include "redis.h"

#define PREFIX "ctasker:{default}:"
#define STREAM PREFIX "stream:normal"

static test_redis_t r;
static atomic_int ends;            /* END events told */
static atomic_int ends_when_after; /* END events told when "after" started; -1: not yet */
static atomic_int unstored;        /* "result not stored" log lines */
static atomic_bool may_halt;       /* the test's own submissions are done */
static atomic_int no_reply;        /* "no reply within the command timeout" log lines */
static double command_timeout = 10; /* the broker's, in seconds */

static void log_line(int level, const char *msg, void *data) {
  (void)level;
  (void)data;
  if (strstr(msg, "result not stored"))
    atomic_fetch_add(&unstored, 1);
  if (strstr(msg, "no reply within the command timeout"))
    atomic_fetch_add(&no_reply, 1);
}

static void observe(const ct_broker_event_t *e, void *data) {
  (void)data;
  if (e->kind == CT_BROKER_EVENT_END)
    atomic_fetch_add(&ends, 1);
}

/* Stops redis-server, so that its own result cannot be stored yet; not
 * before the test has submitted all it needs (a submission to a stopped
 * server would time out). */
static json_t *halt(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  for (int i = 0; i < 3000 && !atomic_load(&may_halt); i++)
    check_sleep(0.01);
  kill(r.pid, SIGSTOP);
  return json_string("halted");
}

/* Notes how many results had been stored as it started. */
static json_t *after(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  atomic_store(&ends_when_after, atomic_load(&ends));
  return json_string("after");
}

/* Waits until the test opens its gate (kwargs "i": 0 or 1). */
static atomic_bool gates[2];

static json_t *gated(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  json_int_t i = json_integer_value(json_object_get(kwargs, "i"));
  for (int t = 0; t < 3000 && !atomic_load(&gates[i & 1]); t++)
    check_sleep(0.01);
  return json_string("gated");
}

static uint64_t sup_completed(ct_supervisor_t *sup) {
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  return s.completed;
}

/* Wait until the supervisor has completed n tasks, for at most 8 s: less
 * than the command timeout, so a pool thread that waited for its store
 * (with Redis stopped) would not have completed its task by then. */
static void wait_completed(ct_supervisor_t *sup, uint64_t n) {
  for (int i = 0; i < 800 && sup_completed(sup) < n; i++)
    check_sleep(0.01);
  CHECK_EQ_INT(sup_completed(sup), n);
}

/* A worker of `concurrency` slots on a pool of `threads` threads. */
static void setup_with(ct_supervisor_t **sup, ct_broker_t **b, int concurrency, int threads) {
  atomic_store(&ends, 0);
  atomic_store(&ends_when_after, -1);
  atomic_store(&unstored, 0);
  atomic_store(&may_halt, false);
  atomic_store(&no_reply, 0);
  atomic_store(&gates[0], false);
  atomic_store(&gates[1], false);
  test_redis_start(&r, NULL);
  ct_supervisor_opts_t so = CT_SUPERVISOR_OPTS_INIT;
  so.pool_size = threads;
  CHECK_OK(ct_supervisor_new(&so, sup));
  CHECK_OK(ct_supervisor_start(*sup));
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = r.url;
  o.command_timeout = command_timeout;
  o.log = log_line;
  CHECK_OK(ct_broker_new(*sup, &o, b));
  CHECK_OK(ct_broker_worker_observe(*b, observe, NULL));
  CHECK_OK(ct_broker_register(*b, "halt", halt, NULL));
  CHECK_OK(ct_broker_register(*b, "after", after, NULL));
  CHECK_OK(ct_broker_register(*b, "gated", gated, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = concurrency;
  wo.consumer = "w";
  CHECK_OK(ct_broker_worker_start(*b, &wo));
}

static void setup(ct_supervisor_t **sup, ct_broker_t **b, int concurrency) {
  setup_with(sup, b, concurrency, 4); /* every slot a thread, whatever the machine */
}

static void teardown(ct_supervisor_t *sup, ct_broker_t *b) {
  ct_broker_free(b);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
  test_redis_stop(&r);
}

/* The task's record says completed with the handler's result, and no entry
 * is left, pending or not. */
static void check_stored(const char *id) {
  redisReply *x = test_redis(&r, "HMGET " PREFIX "task:%s status result", id);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 2);
  CHECK_EQ_STR(x->element[0]->str, "completed");
  CHECK_EQ_STR(x->element[1]->str, "\"halted\"");
  freeReplyObject(x);
  x = test_redis(&r, "XPENDING " STREAM " workers");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->element[0]->type == REDIS_REPLY_INTEGER);
  CHECK_EQ_INT(x->element[0]->integer, 0);
  freeReplyObject(x);
  CHECK_EQ_INT(test_redis_int(&r, "XLEN " STREAM), 0);
}

TEST(a_result_being_stored_keeps_its_slot_until_stored) {
  ct_supervisor_t *sup;
  ct_broker_t *b;
  setup(&sup, &b, 1);
  char first[CT_BROKER_ID_SIZE], second[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(b, "halt", NULL, NULL, first));
  CHECK_OK(ct_broker_submit(b, "after", NULL, NULL, second));
  atomic_store(&may_halt, true);
  /* The handler stopped Redis and returned: its task has ended, but its
   * result is not stored, so its run has not ended and its slot (the only
   * one) is still taken. */
  wait_completed(sup, 1);
  CHECK_EQ_INT(atomic_load(&ends), 0);
  CHECK_EQ_INT(atomic_load(&ends_when_after), -1);
  kill(r.pid, SIGCONT);
  WAIT_FOR(atomic_load(&ends) == 2);
  CHECK_EQ_INT(atomic_load(&ends_when_after), 1); /* the first was stored before */
  CHECK_EQ_INT(atomic_load(&unstored), 0);
  check_stored(first);
  CHECK_OK(ct_broker_worker_stop(b, -1));
  teardown(sup, b);
}

TEST(a_stop_waits_for_a_result_being_stored) {
  ct_supervisor_t *sup;
  ct_broker_t *b;
  setup(&sup, &b, 1);
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(b, "halt", NULL, NULL, id));
  /* Only now: the worker, woken in the same pass of the server as this
   * submission's reply is written, could stop it before it writes it. */
  atomic_store(&may_halt, true);
  wait_completed(sup, 1);
  /* Its store cannot end while Redis is stopped: nor can a stop. */
  CHECK_EQ_INT(ct_broker_worker_stop(b, 0.5), CT_ETIMEDOUT);
  CHECK_EQ_INT(atomic_load(&ends), 0);
  kill(r.pid, SIGCONT);
  CHECK_OK(ct_broker_worker_stop(b, 30));
  CHECK_EQ_INT(atomic_load(&ends), 1);
  CHECK_EQ_INT(atomic_load(&unstored), 0);
  check_stored(id);
  teardown(sup, b);
}

/* Results stored in one batch in another order than their entries' (the
 * newer task ended first) still leave no entry behind: the batch is sorted
 * by entry id before the completion script, which takes each stream's
 * last id as its newest. The batch is made by stopping Redis under a first
 * store: the two results that end meanwhile queue up behind it, newest
 * first. */
TEST(results_stored_out_of_order_in_one_batch_leave_no_entry) {
  ct_supervisor_t *sup;
  ct_broker_t *b;
  setup(&sup, &b, 3);
  char older[CT_BROKER_ID_SIZE], newer[CT_BROKER_ID_SIZE], halted[CT_BROKER_ID_SIZE];
  json_t *kw[2] = {json_pack("{s:i}", "i", 0), json_pack("{s:i}", "i", 1)};
  CHECK_OK(ct_broker_submit(b, "gated", kw[0], NULL, older));
  CHECK_OK(ct_broker_submit(b, "gated", kw[1], NULL, newer));
  CHECK_OK(ct_broker_submit(b, "halt", NULL, NULL, halted));
  atomic_store(&may_halt, true);
  wait_completed(sup, 1); /* Redis stopped; the halted result's store waits */
  check_sleep(0.3);       /* for the store thread to have sent it */
  atomic_store(&gates[1], true);
  wait_completed(sup, 2);
  atomic_store(&gates[0], true);
  wait_completed(sup, 3);
  CHECK_EQ_INT(atomic_load(&ends), 0);
  kill(r.pid, SIGCONT);
  WAIT_FOR(atomic_load(&ends) == 3);
  CHECK_EQ_INT(atomic_load(&unstored), 0);
  CHECK_EQ_INT(test_redis_int(&r, "XLEN " STREAM), 0);
  const char *ids[] = {older, newer};
  for (int i = 0; i < 2; i++) {
    redisReply *x = test_redis(&r, "HGET " PREFIX "task:%s status", ids[i]);
    CHECK(x->type == REDIS_REPLY_STRING);
    CHECK_EQ_STR(x->str, "completed");
    freeReplyObject(x);
    json_decref(kw[i]);
  }
  check_stored(halted);
  CHECK_OK(ct_broker_worker_stop(b, -1));
  teardown(sup, b);
}

/* A lone result, handed in while the store thread is idle, is sent by the
 * handler's own thread without waiting for the reply; when no reply comes
 * within the command timeout (Redis is stopped), the store thread sends it
 * again, and it is stored once Redis answers, within the tries left. */
TEST(a_lone_result_whose_store_times_out_is_sent_again) {
  ct_supervisor_t *sup;
  ct_broker_t *b;
  command_timeout = 2;
  setup(&sup, &b, 1);
  char halted[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(b, "halt", NULL, NULL, halted));
  atomic_store(&may_halt, true);
  wait_completed(sup, 1); /* Redis stopped; the result is on its way */
  WAIT_FOR(atomic_load(&no_reply) >= 1);
  CHECK_EQ_INT(atomic_load(&ends), 0);
  kill(r.pid, SIGCONT);
  WAIT_FOR(atomic_load(&ends) == 1);
  CHECK_EQ_INT(atomic_load(&unstored), 0);
  check_stored(halted);
  CHECK_EQ_INT(test_redis_int(&r, "XLEN " STREAM), 0);
  CHECK_OK(ct_broker_worker_stop(b, -1));
  teardown(sup, b);
  command_timeout = 10;
}

/* A lone result's entry is deleted with XDEL; a batch of many results of
 * one stream (17 here, made as above, in whatever order they end) is
 * trimmed with XTRIM up to the oldest entry still pending, which an older
 * task still running keeps: its entry stays until its own result is
 * stored. */
TEST(many_results_in_one_batch_trim_up_to_a_running_task) {
  enum { MANY = 17 };
  ct_supervisor_t *sup;
  ct_broker_t *b;
  setup_with(&sup, &b, MANY + 2, MANY + 2);
  char running[CT_BROKER_ID_SIZE], many[MANY][CT_BROKER_ID_SIZE], halted[CT_BROKER_ID_SIZE];
  json_t *kw[2] = {json_pack("{s:i}", "i", 0), json_pack("{s:i}", "i", 1)};
  CHECK_OK(ct_broker_submit(b, "gated", kw[0], NULL, running));
  for (int i = 0; i < MANY; i++)
    CHECK_OK(ct_broker_submit(b, "gated", kw[1], NULL, many[i]));
  CHECK_OK(ct_broker_submit(b, "halt", NULL, NULL, halted));
  atomic_store(&may_halt, true);
  wait_completed(sup, 1); /* Redis stopped; the halted result's store waits */
  check_sleep(0.3);       /* for the store thread to have sent it */
  atomic_store(&gates[1], true);
  wait_completed(sup, 1 + MANY);
  kill(r.pid, SIGCONT);
  WAIT_FOR(atomic_load(&ends) == 1 + MANY);
  CHECK_EQ_INT(test_redis_calls(&r, "xtrim"), 1); /* not the lone result's */
  for (int i = 0; i < MANY; i++) {
    redisReply *x = test_redis(&r, "HGET " PREFIX "task:%s status", many[i]);
    CHECK(x->type == REDIS_REPLY_STRING);
    CHECK_EQ_STR(x->str, "completed");
    freeReplyObject(x);
  }
  CHECK_EQ_INT(test_redis_int(&r, "XLEN " STREAM), 1); /* the running task's */
  redisReply *x = test_redis(&r, "XPENDING " STREAM " workers");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements >= 1);
  CHECK_EQ_INT(x->element[0]->integer, 1);
  freeReplyObject(x);
  atomic_store(&gates[0], true);
  WAIT_FOR(atomic_load(&ends) == 2 + MANY);
  CHECK_EQ_INT(test_redis_calls(&r, "xtrim"), 1);
  check_stored(halted); /* no entry left, pending or not */
  CHECK_EQ_INT(test_redis_int(&r, "XLEN " STREAM), 0);
  CHECK_EQ_INT(atomic_load(&unstored), 0);
  json_decref(kw[0]);
  json_decref(kw[1]);
  CHECK_OK(ct_broker_worker_stop(b, -1));
  teardown(sup, b);
}

/* A result whose record is gone as it is stored (expired, or deleted by
 * hand as here) writes the record whole again: its status, result, name
 * and times, which ct_broker_get() reads as any other. One that is there
 * keeps its own name and creation time. */
TEST(a_result_whose_record_is_gone_writes_it_whole) {
  ct_supervisor_t *sup;
  ct_broker_t *b;
  setup(&sup, &b, 2);
  char gone[CT_BROKER_ID_SIZE], kept[CT_BROKER_ID_SIZE];
  json_t *kw[2] = {json_pack("{s:i}", "i", 0), json_pack("{s:i}", "i", 1)};
  CHECK_OK(ct_broker_submit(b, "gated", kw[0], NULL, gone));
  CHECK_OK(ct_broker_submit(b, "gated", kw[1], NULL, kept));
  ct_broker_info_t info = {0};
  for (int k = 1; k >= 0; k--) { /* both running: their records marked */
    memset(&info, 0, sizeof info);
    for (int i = 0; i < 1000 && info.status != CT_BROKER_RUNNING; i++) {
      json_decref(info.result);
      CHECK_OK(ct_broker_get(b, k ? gone : kept, &info));
      check_sleep(0.01);
    }
    CHECK_EQ_INT(info.status, CT_BROKER_RUNNING);
  }
  double created = info.created;
  json_decref(info.result);
  freeReplyObject(test_redis(&r, "DEL " PREFIX "task:%s", gone));
  atomic_store(&gates[0], true);
  atomic_store(&gates[1], true);
  WAIT_FOR(atomic_load(&ends) == 2);
  const char *ids[] = {gone, kept};
  for (int i = 0; i < 2; i++) {
    memset(&info, 0, sizeof info);
    CHECK_OK(ct_broker_get(b, ids[i], &info));
    CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
    CHECK_EQ_STR(json_string_value(info.result), "gated");
    redisReply *x = test_redis(&r, "HGET " PREFIX "task:%s name", ids[i]);
    CHECK(x->type == REDIS_REPLY_STRING);
    CHECK_EQ_STR(x->str, "gated");
    freeReplyObject(x);
    CHECK(info.created > 0 && info.finished >= info.created);
    if (i == 1)
      CHECK(info.created == created); /* its own, kept */
    json_decref(info.result);
    json_decref(kw[i]);
  }
  CHECK_EQ_INT(test_redis_int(&r, "XLEN " STREAM), 0);
  CHECK_OK(ct_broker_worker_stop(b, -1));
  teardown(sup, b);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_result_being_stored_keeps_its_slot_until_stored);
  RUN(a_stop_waits_for_a_result_being_stored);
  RUN(results_stored_out_of_order_in_one_batch_leave_no_entry);
  RUN(a_lone_result_whose_store_times_out_is_sent_again);
  RUN(many_results_in_one_batch_trim_up_to_a_running_task);
  RUN(a_result_whose_record_is_gone_writes_it_whole);
  return check_done();
}
