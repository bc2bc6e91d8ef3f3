/* The fetch marks the tasks it takes RUNNING, in the same script call:
 * a fetch costs one script call, marks included; a task whose record is
 * gone or is a key of another type runs uncounted, its record neither
 * created nor touched, and holds up the marks of none fetched with it.
 * The handlers wait at a gate, so that what the fetch wrote is read while
 * every task of it runs. Counts only; time bounds are generous. */
#include <pthread.h>
#include <stdatomic.h>
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

static void record_says(test_env_t *e, const char *id, const char *status, const char *runs) {
  redisReply *x = test_redis(&e->r, "HMGET " PREFIX "task:%s status attempts", id);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 2);
  CHECK_EQ_STR(x->element[0]->str, status);
  CHECK_EQ_STR(x->element[1]->str, runs);
  freeReplyObject(x);
}

/* The first test of this binary: this process has loaded no script yet,
 * so no EVALSHA is answered NOSCRIPT (and counted) before it loads one. */
TEST(a_fetch_is_one_script_call_marks_included) {
  test_env_t e;
  char ids[N][CT_BROKER_ID_SIZE];
  env_with_tasks(&e, ids);
  long long scripts = test_redis_calls(&e.r, "evalsha");
  worker_start_all_at_gate(&e);
  /* The fetch; the marks were a second call before. */
  CHECK_EQ_INT(test_redis_calls(&e.r, "evalsha"), scripts + 1);
  for (int i = 0; i < N; i++)
    record_says(&e, ids[i], "running", "1");
  gate_set(true);
  for (int i = 0; i < N; i++)
    CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[i], 20), 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

TEST(a_record_gone_or_of_another_type_runs_uncounted_and_holds_up_no_mark) {
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
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS " PREFIX "task:%s", ids[1]), 0); /* not created */
  record_says(&e, ids[2], "running", "1");
  record_says(&e, ids[3], "running", "1");
  gate_set(true);
  WAIT_FOR(test_redis_int(&e.r, "EXISTS " PREFIX "task:%s", ids[1]) == 1); /* the result's */
  CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[1], 20), 0);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[2], 20), 1);
  CHECK_EQ_INT(test_broker_wait_completed(e.b, ids[3], 20), 1);
  WAIT_FOR(atomic_load(&unstored) == 1); /* the foreign key takes no result either */
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_fetch_is_one_script_call_marks_included);
  RUN(a_record_gone_or_of_another_type_runs_uncounted_and_holds_up_no_mark);
  return check_done();
}
