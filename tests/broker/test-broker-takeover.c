/* Taking over the entries of silent owners (XAUTOCLAIM) is done by a
 * worker's fetches on a timer, not by every fetch: a busy worker does not
 * scan the pending lists once per fetch, and a take-over that its free
 * slots cut short goes on in the next fetch rather than waiting for the
 * timer. The silent owner is a consumer that read entries with a raw
 * XREADGROUP and never came back; XCLAIM ... IDLE makes them look silent
 * for longer than the lease without waiting for it. An entry taken over
 * runs as the run its attempt field and its deliveries say, as the fetch
 * script reads them. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"

static atomic_int runs;

static json_t *count_run(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self, (void)kwargs, (void)data;
  atomic_fetch_add(&runs, 1);
  return json_true();
}

#define MAX_CASES 8
static atomic_int case_runs[MAX_CASES];

/* Counts a run of its case (kwargs "case") and fails. */
static json_t *fail_run(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self, (void)data;
  json_int_t c = json_integer_value(json_object_get(kwargs, "case"));
  int n = atomic_fetch_add(&case_runs[c >= 0 && c < MAX_CASES ? c : 0], 1) + 1;
  return ct_error_new("ValueError", "run %d of case %d fails", n, (int)c);
}

/* The supervisor has two threads; "count" is registered, and known to
 * producers as a worker's start would make it. */
static void env_start(test_env_t *e) {
  test_env_start(e, 2, 0, NULL);
  CHECK_OK(ct_broker_register(e->b, "count", count_run, NULL));
  test_redis_register_name(&e->r, "count");
  atomic_store(&runs, 0);
}

static void env_stop(test_env_t *e) {
  CHECK_OK(ct_broker_worker_stop(e->b, -1));
  test_env_end(e);
}

static void wait_completed(test_env_t *e, char ids[][CT_BROKER_ID_SIZE], int n,
                           double bound) {
  double end = ct_now() + bound;
  for (int i = 0; i < n; i++) {
    ct_broker_info_t info = {0};
    CHECK_OK(ct_broker_get(e->b, ids[i], &info));
    while (info.status != CT_BROKER_COMPLETED && ct_now() < end) {
      check_sleep(0.01);
      json_decref(info.result);
      CHECK_OK(ct_broker_get(e->b, ids[i], &info));
    }
    CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
    json_decref(info.result);
  }
}

/* A worker busy with many tasks, one at a time (a fetch each), runs the
 * take-over scan about once a second, not once per fetch and stream. */
static void test_a_busy_worker_does_not_scan_for_silent_owners_on_every_fetch(void) {
  test_env_t e;
  env_start(&e);
  enum { N = 200 };
  static char ids[N][CT_BROKER_ID_SIZE];
  for (int i = 0; i < N; i++)
    CHECK_OK(ct_broker_submit(e.b, "count", NULL, NULL, ids[i]));
  freeReplyObject(test_redis(&e.r, "CONFIG RESETSTAT"));
  double t0 = ct_now();
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 1;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  wait_completed(&e, ids, N, 60);
  double took = ct_now() - t0;
  long long scans = test_redis_calls(&e.r, "xautoclaim");
  long long fetches = test_redis_calls(&e.r, "xreadgroup");
  CHECK(fetches >= N);
  /* One scan per stream (4) per take-over: the first fetch's, then at
   * most one a second; every fetch (the old way) made at least N. */
  CHECK(scans <= 4 * (long long)(took + 2));
  CHECK(scans < N / 2);
  CHECK_EQ_INT(atomic_load(&runs), N);
  env_stop(&e);
}

/* The n entries of the normal stream are read by a consumer that never
 * comes back (a delivery each), silent for 100 s, longer than the lease. */
static void read_by_a_silent_owner(test_env_t *e, int n) {
  freeReplyObject(test_redis(&e->r, "XGROUP CREATE " PREFIX "stream:normal workers 0 MKSTREAM"));
  redisReply *x = test_redis(&e->r, "XREADGROUP GROUP workers gone COUNT %d STREAMS "
                                    PREFIX "stream:normal >", n);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->element[0]->element[1]->elements == (size_t)n);
  for (int i = 0; i < n; i++)
    freeReplyObject(test_redis(&e->r, "XCLAIM " PREFIX "stream:normal workers gone 0 %s IDLE "
                                      "100000 JUSTID",
                               x->element[0]->element[1]->element[i]->element[0]->str));
  freeReplyObject(x);
}

/* Entries of a silent owner, more than the worker's free slots, are all
 * taken over fetch after fetch; none waits for the next take-over time. */
static void test_a_take_over_cut_short_by_free_slots_goes_on_in_the_next_fetch(void) {
  test_env_t e;
  env_start(&e);
  enum { N = 12 };
  char ids[N][CT_BROKER_ID_SIZE];
  for (int i = 0; i < N; i++)
    CHECK_OK(ct_broker_submit(e.b, "count", NULL, NULL, ids[i]));
  read_by_a_silent_owner(&e, N);
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 1;
  wo.lease = 30; /* a take-over every second at most: 11 s for one at a time */
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  wait_completed(&e, ids, N, 6);
  CHECK_EQ_INT(atomic_load(&runs), N);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 0);
  env_stop(&e);
}

/* A stream's pending entries are mostly live ones (LIVE tasks that another
 * worker, "live", still runs), then one of a silent owner. A worker with
 * one free slot asks XAUTOCLAIM for one entry, which scans ten at most:
 * its take-over pass goes on from where the last fetch stopped, reaches
 * the silent owner's entry and runs it, and, the pass done, pauses (no
 * fetch after fetch, each scanning the same first entries, which never
 * reached that entry and never ended). */
static void test_a_take_over_pass_goes_on_past_live_entries_to_a_silent_one(void) {
  test_env_t e;
  env_start(&e);
  enum { LIVE = 50 };
  freeReplyObject(test_redis(&e.r, "XGROUP CREATE " PREFIX "stream:normal workers 0 MKSTREAM"));
  for (int i = 0; i <= LIVE; i++) {
    char id[CT_BROKER_ID_SIZE];
    snprintf(id, sizeof id, "3f0e8a9c-1b2d-4c5e-8f70-%012d", i);
    test_redis_add_task(&e.r, id, "count", "{}", 1, "1");
  }
  freeReplyObject(test_redis(&e.r, "XREADGROUP GROUP workers live COUNT %d STREAMS "
                                   PREFIX "stream:normal >", LIVE));
  read_by_a_silent_owner(&e, 1); /* the last one, the newest entry */
  freeReplyObject(test_redis(&e.r, "CONFIG RESETSTAT"));
  double t0 = ct_now();
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 1;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  char silent[CT_BROKER_ID_SIZE];
  snprintf(silent, sizeof silent, "3f0e8a9c-1b2d-4c5e-8f70-%012d", LIVE);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, silent, 30), 2); /* its second delivery */
  check_sleep(2); /* a pass a second: two or three more */
  long long scans = test_redis_calls(&e.r, "xautoclaim");
  double took = ct_now() - t0;
  CHECK_EQ_INT(atomic_load(&runs), 1); /* the live ones are left to their owner */
  /* A pass: one scan of each stream but this one, six of this one (ten
   * entries each); at most one pass a second, and the first at once. Begun
   * again at every fetch, the scans were thousands a second. */
  CHECK(scans <= (3 + LIVE / 10 + 1) * (long long)(took + 2));
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), LIVE);
  env_stop(&e);
}

/* An entry taken over runs as the run its attempt field names plus its
 * deliveries before (here one: the silent owner's). The fetch script reads
 * the field as the codec does (ct__bmsg_attempt(): decimal digits for 1 to
 * 10^9; anything else counts as 1). Each run fails, so a task runs from
 * that run up to the last of its max_attempts (4). */
static void test_a_task_taken_over_runs_as_its_attempt_field_and_deliveries_say(void) {
  test_env_t e;
  test_env_start(&e, 2, 0, NULL);
  CHECK_OK(ct_broker_register(e.b, "fail", fail_run, NULL));
  test_redis_register_name(&e.r, "fail");
  const struct {
    const char *attempt, *id;
    int runs; /* of max_attempts 4, from run attempt + 1 (2 if not counted) */
  } cases[] = {{"3", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c41", 1},
               {"2", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c42", 2},
               {"3.0", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c43", 3},
               {"+2", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c44", 3},
               {"0", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c45", 3},
               {"1000000001", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c46", 3},
               {"0x2", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c47", 3}};
  enum { N = sizeof cases / sizeof *cases };
  _Static_assert(N <= MAX_CASES, "a case without its counter");
  for (int i = 0; i < N; i++) {
    atomic_store(&case_runs[i], 0);
    char kwargs[32];
    snprintf(kwargs, sizeof kwargs, "{\"case\":%d}", i);
    test_redis_add_task(&e.r, cases[i].id, "fail", kwargs, 4, cases[i].attempt);
  }
  read_by_a_silent_owner(&e, N);
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  for (int i = 0; i < N; i++) {
    ct_broker_info_t info = test_broker_wait_done(e.b, cases[i].id, 30);
    CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
    CHECK_EQ_INT(info.attempts, 4); /* the number of the last run */
    json_decref(info.result);
    CHECK_EQ_INT(atomic_load(&case_runs[i]), cases[i].runs);
  }
  env_stop(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_busy_worker_does_not_scan_for_silent_owners_on_every_fetch);
  RUN(a_take_over_cut_short_by_free_slots_goes_on_in_the_next_fetch);
  RUN(a_take_over_pass_goes_on_past_live_entries_to_a_silent_one);
  RUN(a_task_taken_over_runs_as_its_attempt_field_and_deliveries_say);
  return check_done();
}
