/* A fetch writes no task record: a run's record is written when it ends,
 * and marked RUNNING (with the run's number and start) only once the run
 * has lasted a moment (MARK_AFTER in worker.c, a tenth of a second), by
 * a script call of its own; a short run's record goes from QUEUED to its
 * end at once. A task whose record is gone or is a key of another type
 * runs, its record neither created nor touched by the mark, and holds up
 * the marks of none that run with it. The gated handlers wait at a gate,
 * so that what was written is read while every task runs. Counts only;
 * time bounds are generous. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"
#define N 4 /* tasks, taken by one fetch: the worker has as many slots */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int waiting; /* handlers at the gate */
static bool open_gate;
static atomic_int unstored; /* "result not stored" log lines */

static void log_line(int level, const char *msg, void *data) {
  (void)level;
  (void)data;
  if (strstr(msg, "result not stored"))
    atomic_fetch_add(&unstored, 1);
}

static json_t *gated(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  pthread_mutex_lock(&lock);
  waiting++;
  while (!open_gate)
    pthread_cond_wait(&cond, &lock);
  waiting--;
  pthread_mutex_unlock(&lock);
  return json_true();
}

static int at_gate(void) {
  pthread_mutex_lock(&lock);
  int n = waiting;
  pthread_mutex_unlock(&lock);
  return n;
}

static void gate_set(bool open) {
  pthread_mutex_lock(&lock);
  open_gate = open;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
}

/* A server, a handle with "gated" registered, and N tasks of it submitted
 * before any worker runs, into ids. */
static void env_with_tasks(test_env_t *e, char ids[N][CT_BROKER_ID_SIZE]) {
  gate_set(false);
  test_env_start(e, N, 10, log_line);
  CHECK_OK(ct_broker_register(e->b, "gated", gated, NULL));
  freeReplyObject(test_redis(&e->r, "SADD " PREFIX "names gated")); /* as a worker did */
  for (int i = 0; i < N; i++)
    test_broker_submit(e->b, "gated", NULL, NULL, ids[i]);
}

/* Start the worker with N slots and a long lease (no renewal while the
 * test reads), and wait until its N tasks run, held at the gate. */
static void worker_start_all_at_gate(test_env_t *e) {
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = N;
  wo.lease = 60;
  CHECK_OK(ct_broker_worker_start(e->b, &wo));
  WAIT_FOR(at_gate() == N);
}

/* Whether the task's record says this status and these runs, with a
 * start time. */
static bool record_is(test_env_t *e, const char *id, const char *status, const char *runs) {
  redisReply *x = test_redis(&e->r, "HMGET " PREFIX "task:%s status attempts started", id);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 3);
  bool is = x->element[0]->str && strcmp(x->element[0]->str, status) == 0 &&
            x->element[1]->str && strcmp(x->element[1]->str, runs) == 0 &&
            x->element[2]->str && atoll(x->element[2]->str) > 1600000000000LL;
  freeReplyObject(x);
  return is;
}

/* The first test of this binary: this process has loaded no script yet,
 * so no EVALSHA is answered NOSCRIPT (and counted) before it loads one. */
TEST(a_run_that_lasts_is_marked_running_by_a_call_of_its_own) {
  test_env_t e;
  char ids[N][CT_BROKER_ID_SIZE];
  env_with_tasks(&e, ids);
  long long scripts = test_redis_calls(&e.r, "evalsha");
  long long writes = test_redis_calls(&e.r, "hset");
  worker_start_all_at_gate(&e);
  CHECK_EQ_INT(test_redis_calls(&e.r, "evalsha"), scripts + 1); /* the fetch */
  for (int i = 0; i < N; i++)
    WAIT_FOR(record_is(&e, ids[i], "running", "1"));
  CHECK(test_redis_calls(&e.r, "eval") >= 1); /* the marks: not the fetch's */
  CHECK_EQ_INT(test_redis_calls(&e.r, "hset"), writes + N); /* each record marked once */
  gate_set(true);
  for (int i = 0; i < N; i++)
    CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[i], 20), 1);
  CHECK_EQ_INT(test_redis_calls(&e.r, "hset"), writes + 2 * N); /* and written as it ends */
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* Short runs are not marked: before, every fetched task's record was
 * marked, two writes per task; a run of a few microseconds is marked only
 * if it stalls for a tenth of a second, which not all of them do. */
TEST(a_short_run_s_record_is_written_once_as_it_ends) {
  enum { M = 20 };
  test_env_t e;
  gate_set(true);
  test_env_start(&e, 1, 10, log_line);
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  freeReplyObject(test_redis(&e.r, "SADD " PREFIX "names gated"));
  char ids[M][CT_BROKER_ID_SIZE];
  for (int i = 0; i < M; i++)
    test_broker_submit(e.b, "gated", NULL, NULL, ids[i]);
  long long writes = test_redis_calls(&e.r, "hset");
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  for (int i = 0; i < M; i++)
    CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[i], 20), 1); /* counted all the same */
  CHECK(test_redis_calls(&e.r, "hset") < writes + 2 * M);
  CHECK(record_is(&e, ids[0], "completed", "1"));
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(a_record_gone_or_of_another_type_is_left_alone_and_holds_up_no_mark) {
  test_env_t e;
  char ids[N][CT_BROKER_ID_SIZE];
  env_with_tasks(&e, ids);
  atomic_store(&unstored, 0);
  freeReplyObject(test_redis(&e.r, "DEL " PREFIX "task:%s", ids[0]));
  freeReplyObject(test_redis(&e.r, "SET " PREFIX "task:%s foreign", ids[0]));
  freeReplyObject(test_redis(&e.r, "DEL " PREFIX "task:%s", ids[1]));
  worker_start_all_at_gate(&e); /* all four run */
  redisReply *x = test_redis(&e.r, "GET " PREFIX "task:%s", ids[0]);
  CHECK_EQ_STR(x->str, "foreign"); /* left alone */
  freeReplyObject(x);
  WAIT_FOR(record_is(&e, ids[2], "running", "1"));
  WAIT_FOR(record_is(&e, ids[3], "running", "1"));
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS " PREFIX "task:%s", ids[1]), 0); /* not created */
  x = test_redis(&e.r, "GET " PREFIX "task:%s", ids[0]);
  CHECK_EQ_STR(x->str, "foreign"); /* left alone by the mark too */
  freeReplyObject(x);
  gate_set(true);
  WAIT_FOR(test_redis_int(&e.r, "EXISTS " PREFIX "task:%s", ids[1]) == 1); /* the result's */
  CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[1], 20), 1); /* its entry counts its runs */
  CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[2], 20), 1);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[3], 20), 1);
  WAIT_FOR(atomic_load(&unstored) == 1); /* the foreign key takes no result either */
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

/* A mark due while the handle's connection is down (every connection
 * killed, and none taken again until maxclients is raised) is sent once
 * it is back, while the run still lasts. */
TEST(a_mark_due_while_the_connection_is_down_is_sent_once_it_is_back) {
  test_env_t e;
  gate_set(false);
  test_env_start(&e, 1, 10, log_line);
  CHECK_OK(ct_broker_register(e.b, "gated", gated, NULL));
  freeReplyObject(test_redis(&e.r, "SADD " PREFIX "names gated"));
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(e.b, "gated", NULL, NULL, id);
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 1;
  wo.lease = 60;
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  WAIT_FOR(at_gate() == 1);
  freeReplyObject(test_redis(&e.r, "CONFIG SET maxclients 1"));
  freeReplyObject(test_redis(&e.r, "CLIENT KILL TYPE normal SKIPME yes"));
  /* The mark falls due meanwhile (unless this thread came here later than
   * that: the test then proves nothing, and passes). */
  check_sleep(0.5);
  freeReplyObject(test_redis(&e.r, "CONFIG SET maxclients 10000"));
  WAIT_FOR(record_is(&e, id, "running", "1"));
  gate_set(true);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, id, 20), 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_run_that_lasts_is_marked_running_by_a_call_of_its_own);
  RUN(a_short_run_s_record_is_written_once_as_it_ends);
  RUN(a_record_gone_or_of_another_type_is_left_alone_and_holds_up_no_mark);
  RUN(a_mark_due_while_the_connection_is_down_is_sent_once_it_is_back);
  return check_done();
}
