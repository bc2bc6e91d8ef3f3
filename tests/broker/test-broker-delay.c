/* The broker's delayed tasks, retries and idempotency keys against a real
 * redis-server: a delayed or ETA task waits in the delayed set (status
 * DELAYED) and runs once it is due, moved into its stream by any worker;
 * a failed run is retried per max_attempts with a growing backoff; a
 * handler's Reject fails at once and Retry requeues; a run past its
 * timeout is asked to cancel and fails with TimeoutError; the same key
 * returns the first id. Order and counts only; time bounds are generous
 * (a delay is checked as "not before", never as "by then"). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"

static atomic_int runs;

static json_t *count_run(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  atomic_fetch_add(&runs, 1);
  return json_string("ran");
}

/* Fails (or gives kwargs "outcome" as the class) while runs <= "fail",
 * then returns "ok". */
static json_t *flaky(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  int n = atomic_fetch_add(&runs, 1) + 1;
  const char *cls = json_string_value(json_object_get(kwargs, "outcome"));
  if (n <= json_integer_value(json_object_get(kwargs, "fail")))
    return ct_error_new(cls ? cls : "ValueError", "run %d fails", n);
  return json_string("ok");
}

static atomic_int started, saw_cancel;

/* Runs until asked to cancel (at most 20 s), then returns "late". */
static json_t *until_canceled(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)kwargs;
  (void)data;
  atomic_fetch_add(&started, 1);
  for (int i = 0; i < 2000 && !ct_task_cancel_requested(self); i++)
    check_sleep(0.01);
  if (ct_task_cancel_requested(self))
    atomic_fetch_add(&saw_cancel, 1);
  return json_string("late");
}

static atomic_int released;

/* Runs until asked to cancel or released (at most 20 s each), then returns
 * "late" (counting saw_cancel), or, released, "done" or, with kwargs
 * "fail", an error. */
static json_t *until_released(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)data;
  atomic_fetch_add(&started, 1);
  for (int i = 0; i < 2000 && !ct_task_cancel_requested(self) && !atomic_load(&released); i++)
    check_sleep(0.01);
  if (!ct_task_cancel_requested(self) && json_object_get(kwargs, "fail"))
    return ct_error_new("ValueError", "released to fail");
  if (!ct_task_cancel_requested(self))
    return json_string("done");
  atomic_fetch_add(&saw_cancel, 1);
  return json_string("late");
}

/* The first run waits until released, then fails; later runs succeed. */
static json_t *fails_once_released(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  if (atomic_fetch_add(&runs, 1) > 0)
    return json_string("ok");
  for (int i = 0; i < 2000 && !atomic_load(&released); i++)
    check_sleep(0.01);
  return ct_error_new("ValueError", "the first run fails");
}

static void env_start(test_env_t *e) {
  atomic_store(&runs, 0);
  atomic_store(&started, 0);
  atomic_store(&saw_cancel, 0);
  test_env_start(e, 0, 10, NULL);
}

/* env_start(), with "slow" registered as until_released (not released). */
static void env_start_slow(test_env_t *e) {
  env_start(e);
  atomic_store(&released, 0);
  CHECK_OK(ct_broker_register(e->b, "slow", until_released, NULL));
}

/* Unix time, as the broker's times are. */
static double unix_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(a_delayed_task_waits_in_the_delayed_set_then_runs_once) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "count", count_run, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.delay = 1.5;
  char id[CT_BROKER_ID_SIZE];
  double before = ct_now();
  CHECK_OK(ct_broker_submit(e.b, "count", NULL, &so, id));
  /* Not in a stream: in the delayed set, DELAYED, with its due time. */
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 0);
  ct_broker_status_t st = test_broker_status(e.b, id);
  CHECK(st == CT_BROKER_DELAYED || ct_now() - before >= 1.5);
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 30);
  CHECK(ct_now() - before >= 1.4); /* never before it was due */
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "ran");
  CHECK_EQ_INT(info.attempts, 1);
  json_decref(info.result);
  CHECK_EQ_INT(atomic_load(&runs), 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* Two workers (two handles) share the delayed set: each due task is moved
 * into its stream once and run once; an ETA in the past runs now. */
/* A due member whose record is of another type, or with more values than
 * XADD can be given from a script: the promote script failed after its
 * ZREM, and the task was in no stream, no set and no dead letters. It now
 * goes to the dead letters, whole. */
TEST(a_due_task_that_cannot_go_back_into_its_stream_goes_to_the_dead_letters) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "count", count_run, NULL));
  const char *id = "44444444-4444-4444-8444-444444444444";
  freeReplyObject(test_redis(&e.r, "SET " PREFIX "task:%s foreign", id));
  json_t *m = json_pack("[s,s,s,s,s,s,s,s,s]", "normal", "id", id, "name", "count", "kwargs",
                        "{}", "enqueued", "1");
  char *text = json_dumps(m, JSON_COMPACT);
  freeReplyObject(test_redis(&e.r, "ZADD " PREFIX "delayed 1 %s", text));
  free(text);
  for (int i = 0; i < 4000; i++) { /* 8000 values more: over what XADD can take */
    json_array_append_new(m, json_string("x"));
    json_array_append_new(m, json_string("v"));
  }
  json_array_set_new(m, 2, json_string("55555555-5555-4555-8555-555555555555"));
  text = json_dumps(m, JSON_COMPACT);
  freeReplyObject(test_redis(&e.r, "ZADD " PREFIX "delayed 1 %s", text));
  free(text);
  json_decref(m);
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  WAIT_FOR(test_redis_int(&e.r, "XLEN " PREFIX "dead") == 2);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 0);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 0);
  redisReply *x = test_redis(&e.r, "XRANGE " PREFIX "dead - +");
  const char *reasons[2] = {x->element[0]->element[1]->element[1]->str,
                            x->element[1]->element[1]->element[1]->str};
  CHECK(strcmp(reasons[0], "its record is not a hash") == 0 ||
        strcmp(reasons[1], "its record is not a hash") == 0);
  CHECK(strcmp(reasons[0], "too many fields") == 0 || strcmp(reasons[1], "too many fields") == 0);
  freeReplyObject(x);
  CHECK_EQ_INT(atomic_load(&runs), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* A failed run whose retry the server does not answer in time (paused for
 * writes longer than three command timeouts, then back): its entry stays
 * pending and is run again, which succeeds. Its error was stored as its
 * final result (FAILED with a run left), once the server answered again. */
TEST(a_retry_the_server_does_not_answer_leaves_the_entry_to_run_again) {
  test_env_t e;
  atomic_store(&runs, 0);
  atomic_store(&released, 0);
  test_env_start(&e, 0, 0.3, NULL);
  ct_broker_t *watcher = test_broker_open(e.sup, e.r.url, 10, NULL);
  CHECK_OK(ct_broker_register(e.b, "once", fails_once_released, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 1;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_attempts = 2;
  so.backoff = 0.01;
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(watcher, "once", NULL, &so, id));
  WAIT_FOR(atomic_load(&runs) == 1);
  freeReplyObject(test_redis(&e.r, "CLIENT PAUSE 1500 WRITE"));
  atomic_store(&released, 1);
  ct_broker_info_t info = test_broker_wait_done(watcher, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "ok");
  json_decref(info.result);
  CHECK_EQ_INT(atomic_load(&runs), 2);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  ct_broker_free(watcher);
  test_env_end(&e);
}

TEST(due_tasks_are_moved_once_among_several_workers) {
  test_env_t e;
  env_start(&e);
  ct_broker_t *b2 = test_broker_open(e.sup, e.r.url, 10, NULL);
  CHECK_OK(ct_broker_register(e.b, "count", count_run, NULL));
  CHECK_OK(ct_broker_register(b2, "count", count_run, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  CHECK_OK(ct_broker_worker_start(b2, NULL));
  enum { N = 20 };
  char ids[N + 1][CT_BROKER_ID_SIZE];
  for (int i = 0; i < N; i++) {
    ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
    so.delay = 0.05 * (i % 5);
    so.priority = i % 2 ? CT_PRIORITY_HIGH : CT_PRIORITY_LOW;
    CHECK_OK(ct_broker_submit(e.b, "count", NULL, &so, ids[i]));
  }
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.eta = unix_now() - 60; /* past: runs now */
  CHECK_OK(ct_broker_submit(e.b, "count", NULL, &so, ids[N]));
  for (int i = 0; i <= N; i++)
    CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[i], 30), 1);
  CHECK_EQ_INT(atomic_load(&runs), N + 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  CHECK_OK(ct_broker_worker_stop(b2, -1));
  ct_broker_free(b2);
  test_env_end(&e);
}

/* A task due later than the worker's idle block is still taken when due:
 * the worker arms its wait for the due time it learns of through the wake
 * stream, whether it was blocked when the task came or not. */
TEST(an_idle_worker_takes_a_delayed_task_submitted_while_it_blocks) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "count", count_run, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  check_sleep(0.3); /* blocked in Redis by now */
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.eta = unix_now() + 2.5;
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "count", NULL, &so, id));
  /* The submission woke the blocked worker through the wake stream (the
   * block's own cap would also let it see the task, later: only the
   * producer's half can be told apart without timing it). */
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "wake"), 1);
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK(info.started >= so.eta - 0.01); /* not before its ETA */
  json_decref(info.result);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(the_same_key_returns_the_first_id_and_enqueues_nothing) {
  test_env_t e;
  env_start(&e);
  freeReplyObject(test_redis(&e.r, "SADD " PREFIX "names count"));
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.key = "order-17";
  char first[CT_BROKER_ID_SIZE], again[CT_BROKER_ID_SIZE], other[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "count", NULL, &so, first));
  so.priority = CT_PRIORITY_HIGH; /* the rest of the options do not matter */
  CHECK_OK(ct_broker_submit(e.b, "count", NULL, &so, again));
  CHECK_EQ_STR(again, first);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS " PREFIX "stream:high"), 0);
  so.key = "order-18";
  CHECK_OK(ct_broker_submit(e.b, "count", NULL, &so, other));
  CHECK(strcmp(other, first) != 0);
  /* The key lives as long as the first task's record may. */
  long long ttl = test_redis_int(&e.r, "TTL " PREFIX "key:order-17");
  CHECK(ttl > 86000 && ttl <= 86400);
  /* A call may not carry a key: an RPC is answered once, to its caller. */
  json_t *result = NULL;
  CHECK_EQ_INT(ct_broker_call(e.b, "count", NULL, &so, 1, &result), CT_EINVAL);
  test_env_end(&e);
}

TEST(a_failed_run_is_retried_after_its_backoff_until_max_attempts) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "flaky", flaky, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  /* Fails twice, succeeds on its third and last run. */
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_attempts = 3;
  so.backoff = 0.2;
  so.backoff_max = 0.3;
  char id[CT_BROKER_ID_SIZE];
  double before = ct_now();
  test_broker_submit(e.b, "flaky", json_pack("{s:i}", "fail", 2), &so, id);
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "ok");
  CHECK_EQ_INT(info.attempts, 3);
  json_decref(info.result);
  CHECK_EQ_INT(atomic_load(&runs), 3);
  CHECK(ct_now() - before >= 0.1 + 0.15); /* at least half of each backoff */
  /* Fails more often than it may run: FAILED after max_attempts runs,
   * with the last run's exception; RETRYING while it waits. */
  atomic_store(&runs, 0);
  so.backoff = 1.5;
  so.backoff_max = 0;
  so.max_attempts = 2;
  test_broker_submit(e.b, "flaky", json_pack("{s:i}", "fail", 9), &so, id);
  WAIT_FOR(test_broker_status(e.b, id) == CT_BROKER_RETRYING);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 1);
  info = test_broker_wait_done(e.b, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK_EQ_INT(info.attempts, 2);
  CHECK_EQ_STR(ct_result_error_class(info.result), "ValueError");
  CHECK_EQ_STR(ct_result_error_str(info.result), "run 2 fails");
  json_decref(info.result);
  CHECK_EQ_INT(atomic_load(&runs), 2);
  /* Without max_attempts: one run, no retry. */
  atomic_store(&runs, 0);
  so = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  test_broker_submit(e.b, "flaky", json_pack("{s:i}", "fail", 9), &so, id);
  CHECK_EQ_INT(test_broker_wait_failed(e.b, id, 30, NULL), 1);
  CHECK_EQ_INT(atomic_load(&runs), 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 0);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* A task whose record is gone (its TTL passed, or another program deleted
 * it) still counts its runs, by its entry (a retry's entry says which run
 * it is for): it is retried up to max_attempts and no more, and the
 * record is written whole again by the last run's end. */
TEST(a_task_without_its_record_counts_its_runs_by_its_entry) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "flaky", flaky, NULL));
  freeReplyObject(test_redis(&e.r, "SADD " PREFIX "names flaky"));
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_attempts = 3;
  so.backoff = 0.05;
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "flaky", json_pack("{s:i}", "fail", 9), &so, id);
  CHECK_EQ_INT(test_redis_int(&e.r, "DEL " PREFIX "task:%s", id), 1);
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  /* Written again by the last run's end only (a retry writes no record). */
  WAIT_FOR(test_redis_int(&e.r, "EXISTS " PREFIX "task:%s", id) == 1);
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK_EQ_INT(info.attempts, 3);
  json_decref(info.result);
  check_sleep(0.3); /* a fourth run, due after 0.05 s or so, would have run by now */
  CHECK_EQ_INT(atomic_load(&runs), 3);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 0);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* A new entry written by another producer runs as the run its attempt
 * field names (decimal digits, 1 to 10^9; anything else counts as 1): one
 * for the last of max_attempts runs fails at once, without a retry. */
TEST(a_new_entry_runs_as_the_run_its_attempt_field_names) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "flaky", flaky, NULL));
  freeReplyObject(test_redis(&e.r, "SADD " PREFIX "names flaky"));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  const struct {
    const char *attempt, *id;
    int runs; /* runs before it fails for good, of max_attempts 3 */
  } cases[] = {{"3", "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a71", 1},
               {"2", "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a72", 2},
               {"3.0", "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a73", 3},
               {"0", "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a74", 3},
               {"1000000001", "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a75", 3}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    atomic_store(&runs, 0);
    test_redis_add_task(&e.r, cases[i].id, "flaky", "{\"fail\":9}", 3, cases[i].attempt);
    ct_broker_info_t info = test_broker_wait_done(e.b, cases[i].id, 30);
    CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
    CHECK_EQ_INT(info.attempts, 3); /* the number of the last run */
    CHECK_EQ_INT(atomic_load(&runs), cases[i].runs);
    json_decref(info.result);
  }
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(reject_fails_at_once_and_retry_requeues_without_backoff) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "flaky", flaky, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_attempts = 5;
  so.backoff = 1000; /* a retry after the backoff would never come in time */
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "flaky", json_pack("{s:i,s:s}", "fail", 9, "outcome", CT_BROKER_REJECT),
                     &so, id);
  ct_broker_info_t info = test_broker_wait_done(e.b, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK_EQ_INT(info.attempts, 1);
  CHECK_EQ_STR(ct_result_error_class(info.result), "Reject");
  json_decref(info.result);
  atomic_store(&runs, 0);
  test_broker_submit(e.b, "flaky", json_pack("{s:i,s:s}", "fail", 2, "outcome", CT_BROKER_RETRY),
                     &so, id);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, id, 30), 3);
  CHECK_EQ_INT(atomic_load(&runs), 3);
  /* A Retry on the last run fails as any error. */
  atomic_store(&runs, 0);
  so.max_attempts = 2;
  test_broker_submit(e.b, "flaky", json_pack("{s:i,s:s}", "fail", 9, "outcome", CT_BROKER_RETRY),
                     &so, id);
  info = test_broker_wait_done(e.b, id, 30);
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK_EQ_INT(info.attempts, 2);
  CHECK_EQ_STR(ct_result_error_class(info.result), "Retry");
  json_decref(info.result);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(a_run_past_its_timeout_is_asked_to_cancel_and_fails_with_timeout_error) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "slow", until_canceled, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.timeout = 0.3;
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "slow", NULL, &so, id);
  test_broker_wait_failed(e.b, id, 30, "TimeoutError");
  CHECK_EQ_INT(atomic_load(&saw_cancel), 1); /* not its 20 s bound */
  /* Retried as any failure. */
  so.max_attempts = 2;
  so.backoff = 0.1;
  test_broker_submit(e.b, "slow", NULL, &so, id);
  CHECK_EQ_INT(test_broker_wait_failed(e.b, id, 30, NULL), 2);
  CHECK_EQ_INT(atomic_load(&saw_cancel), 3);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* Another worker takes the entry over while this one still runs it (as
 * after a pause longer than the lease) and completes it first: this worker
 * learns it at its next renewal, asks its run to cancel, and its late
 * result neither overwrites the first nor acknowledges the other's entry. */
TEST(a_run_whose_lease_is_lost_is_canceled_and_its_late_result_dropped) {
  test_env_t e;
  env_start(&e);
  CHECK_OK(ct_broker_register(e.b, "slow", until_canceled, NULL));
  test_broker_lose_lease(&e.r, e.b, &started, &saw_cancel);
  test_env_end(&e);
}

/* Entry ids are per stream: two running tasks whose entries, in two
 * streams, have the same id (as two XADDs in the same millisecond give).
 * Another worker takes one over: only that one's run is asked to cancel;
 * the other runs on, is renewed, and its result is stored. */
TEST(a_lost_entry_cancels_its_own_run_not_one_of_the_same_id_elsewhere) {
  test_env_t e;
  env_start_slow(&e);
  const char *high = "7c9e6679-7425-40de-944b-e07fc1f90ae1";
  const char *normal = "7c9e6679-7425-40de-944b-e07fc1f90ae2";
  const char *level[] = {"high", "normal"}, *ids[] = {high, normal};
  for (int i = 0; i < 2; i++) {
    freeReplyObject(test_redis(&e.r, "HSET " PREFIX "task:%s status queued name slow created 1",
                               ids[i]));
    freeReplyObject(test_redis(&e.r, "XADD " PREFIX "stream:%s 5000000000000-0 id %s name slow "
                                     "kwargs {} enqueued 1", level[i], ids[i]));
  }
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 0.3; /* renewed every 0.1 s */
  wo.concurrency = 2;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  WAIT_FOR(atomic_load(&started) == 2);
  freeReplyObject(test_redis(&e.r, "XCLAIM " PREFIX "stream:normal workers other 0 "
                                   "5000000000000-0 JUSTID"));
  CHECK_OK(ct_broker_worker_stop(e.b, 0)); /* fetch nothing more; the runs go on */
  WAIT_FOR(atomic_load(&saw_cancel) >= 1);
  check_sleep(0.5); /* a few renewals more */
  CHECK_EQ_INT(atomic_load(&saw_cancel), 1);
  atomic_store(&released, 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, high, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "done");
  json_decref(info.result);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:high"), 0);
  ct_broker_status_t other = test_broker_status(e.b, normal); /* the other's to end */
  CHECK(other == CT_BROKER_QUEUED || other == CT_BROKER_RUNNING);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 1);
  test_env_end(&e);
}

/* A run fails after another worker has taken its entry over, before a
 * renewal tells its worker so (here the lease is long: no renewal comes).
 * The entry is the new owner's to run and end: the old owner neither
 * retries the task nor acknowledges that entry. */
TEST(a_failed_run_whose_entry_was_taken_over_is_not_retried_by_its_old_owner) {
  test_env_t e;
  env_start_slow(&e);
  CHECK_OK(ct_broker_worker_start(e.b, NULL)); /* renewed every 10 s */
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_attempts = 3;
  so.backoff = 0.05;
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "slow", json_pack("{s:b}", "fail", 1), &so, id);
  WAIT_FOR(atomic_load(&started) == 1);
  test_redis_take_over_only_entry(&e.r, PREFIX "stream:normal");
  atomic_store(&released, 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1)); /* the run has ended */
  CHECK_EQ_INT(atomic_load(&started), 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 0);
  ct_broker_status_t status = test_broker_status(e.b, id);
  CHECK(status == CT_BROKER_QUEUED || status == CT_BROKER_RUNNING);
  redisReply *x = test_redis(&e.r, "XPENDING " PREFIX "stream:normal workers - + 10");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  CHECK_EQ_STR(x->element[0]->element[1]->str, "other");
  freeReplyObject(x);
  test_env_end(&e);
}

/* A worker whose renewals were held up past the lease (here: its entry is
 * made to look idle that long) takes its own running entry over in a
 * fetch: the run goes on, and the task does not run a second time. */
TEST(a_worker_taking_over_its_own_running_entry_does_not_run_it_twice) {
  test_env_t e;
  env_start_slow(&e);
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.consumer = "me"; /* renewed every 10 s, taking over every second */
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "slow", NULL, NULL, id);
  WAIT_FOR(atomic_load(&started) == 1);
  redisReply *x = test_redis(&e.r, "XRANGE " PREFIX "stream:normal - +");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  freeReplyObject(test_redis(&e.r, "XCLAIM " PREFIX "stream:normal workers me 0 %s "
                                   "IDLE 100000 JUSTID", x->element[0]->element[0]->str));
  freeReplyObject(x);
  check_sleep(2.5); /* two take-overs or more */
  CHECK_EQ_INT(atomic_load(&started), 1);
  atomic_store(&released, 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  CHECK_EQ_INT(atomic_load(&started), 1);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, id, 30), 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 0);
  test_env_end(&e);
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  if (!test_redis_installed())
    return 77;
  RUN(a_delayed_task_waits_in_the_delayed_set_then_runs_once);
  RUN(a_due_task_that_cannot_go_back_into_its_stream_goes_to_the_dead_letters);
  RUN(a_retry_the_server_does_not_answer_leaves_the_entry_to_run_again);
  RUN(due_tasks_are_moved_once_among_several_workers);
  RUN(an_idle_worker_takes_a_delayed_task_submitted_while_it_blocks);
  RUN(the_same_key_returns_the_first_id_and_enqueues_nothing);
  RUN(a_failed_run_is_retried_after_its_backoff_until_max_attempts);
  RUN(a_new_entry_runs_as_the_run_its_attempt_field_names);
  RUN(a_task_without_its_record_counts_its_runs_by_its_entry);
  RUN(reject_fails_at_once_and_retry_requeues_without_backoff);
  RUN(a_run_past_its_timeout_is_asked_to_cancel_and_fails_with_timeout_error);
  RUN(a_run_whose_lease_is_lost_is_canceled_and_its_late_result_dropped);
  RUN(a_lost_entry_cancels_its_own_run_not_one_of_the_same_id_elsewhere);
  RUN(a_failed_run_whose_entry_was_taken_over_is_not_retried_by_its_old_owner);
  RUN(a_worker_taking_over_its_own_running_entry_does_not_run_it_twice);
  return check_done();
}
