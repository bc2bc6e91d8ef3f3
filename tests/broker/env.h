/* The setting most broker tests run in, and what they do in it again and
 * again.
 *
 * test_env_t: a redis-server of the test's own (redis.h), a started
 * supervisor and one broker handle on that server; test_env_start() makes
 * them, test_env_end() frees them in the reverse order. A test that needs
 * more (a process pool, extra loops) builds its own from redis.h's parts.
 *
 * test_handle_loop() finds the loop a fresh supervisor's one handle runs
 * on. The test_broker_ helpers work on any handle (of a test_env_t or of a
 * setting a test built itself): a submission, a task's status, a wait
 * until it is terminal (polled, with a generous bound the caller gives;
 * no duration is asserted), and the lease-loss scenario shared by the
 * thread and loop handlers' tests.
 */
#ifndef CT_TESTS_BROKER_ENV_H
#define CT_TESTS_BROKER_ENV_H

#include <stdatomic.h>
#include <string.h>

#include "redis.h"

typedef struct test_env {
  test_redis_t r;
  ct_supervisor_t *sup;
  ct_broker_t *b;
} test_env_t;

/* Start a server, a supervisor of `pool_size` threads (0: its default) and
 * a handle on the server (test_broker_open(): 10 s to connect;
 * command_timeout 0: the library's default; log may be NULL). */
static inline void test_env_start(test_env_t *e, int pool_size, double command_timeout,
                                  ct_log_fn log) {
  memset(e, 0, sizeof *e);
  test_redis_start(&e->r, NULL);
  ct_supervisor_opts_t so = CT_SUPERVISOR_OPTS_INIT;
  so.pool_size = pool_size;
  CHECK_OK(ct_supervisor_new(&so, &e->sup));
  CHECK_OK(ct_supervisor_start(e->sup));
  e->b = test_broker_open(e->sup, e->r.url, command_timeout, log);
}

static inline void test_env_end(test_env_t *e) {
  ct_broker_free(e->b);
  test_sup_end(e->sup);
  test_redis_stop(&e->r);
}

/* The handle's own loop: the one ct-broker-<n> loop of a fresh supervisor
 * with one handle and no worker yet. Found by name: no call returns it,
 * and <n> counts the handles the whole process has made. */
static inline ct_loop_t *test_handle_loop(ct_supervisor_t *sup) {
  ct_loop_t *found = NULL, *l;
  char name[32];
  for (int i = 0; i < 10000; i++) {
    snprintf(name, sizeof name, "ct-broker-%d", i);
    if (ct_loop_get(sup, name, &l) == 0) {
      CHECK(found == NULL);
      found = l;
    }
  }
  CHECK(found != NULL);
  return found;
}

/* Start the handle's worker with `concurrency` slots. */
static inline void test_broker_worker_start(ct_broker_t *b, int concurrency) {
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = concurrency;
  CHECK_OK(ct_broker_worker_start(b, &wo));
}

/* Submit with `so` (may be NULL); kwargs (may be NULL) is taken. */
static inline void test_broker_submit(ct_broker_t *b, const char *name, json_t *kwargs,
                                      const ct_broker_submit_opts_t *so,
                                      char id[CT_BROKER_ID_SIZE]) {
  CHECK_OK(ct_broker_submit(b, name, kwargs, so, id));
  json_decref(kwargs);
}

static inline ct_broker_status_t test_broker_status(ct_broker_t *b, const char *id) {
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(b, id, &info));
  json_decref(info.result);
  return info.status;
}

/* Wait (at most `seconds`, polled every 10 ms) until the task is terminal
 * (completed, failed, dead or expired); its info, the result owned by the
 * caller. */
static inline ct_broker_info_t test_broker_wait_done(ct_broker_t *b, const char *id,
                                                     int seconds) {
  ct_broker_info_t info;
  for (int i = 0;; i++) {
    CHECK(i < seconds * 100);
    CHECK_OK(ct_broker_get(b, id, &info));
    if (info.status == CT_BROKER_COMPLETED || info.status == CT_BROKER_FAILED ||
        info.status == CT_BROKER_DEAD || info.status == CT_BROKER_EXPIRED)
      return info;
    check_sleep(0.01);
  }
}

/* Wait for the task as test_broker_wait_done() does: it must have
 * completed. Returns how many runs it took. */
static inline int test_broker_wait_completed(ct_broker_t *b, const char *id, int seconds) {
  ct_broker_info_t info = test_broker_wait_done(b, id, seconds);
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  json_decref(info.result);
  return info.attempts;
}

/* The same for a task that must have failed, with an exception of class
 * `cls` (NULL: any). */
static inline int test_broker_wait_failed(ct_broker_t *b, const char *id, int seconds,
                                          const char *cls) {
  ct_broker_info_t info = test_broker_wait_done(b, id, seconds);
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  if (cls)
    CHECK_EQ_STR(ct_result_error_class(info.result), cls);
  json_decref(info.result);
  return info.attempts;
}

/* A run that loses its lease: b has "slow" registered (a handler whose run
 * counts itself in *started and, once asked to cancel, in *saw_cancel);
 * its worker starts with a short lease (0.3 s) and takes one "slow" task.
 * Another worker takes over the entry while this one still runs it, as
 * after a pause longer than the lease, and completes the task first
 * ("first"). This worker must learn of the loss at its next renewal, ask
 * the run to cancel and drop its late result, which neither overwrites the
 * first nor acknowledges the other's entry. Stops the worker. */
static inline void test_broker_lose_lease(test_redis_t *r, ct_broker_t *b, atomic_int *started,
                                          atomic_int *saw_cancel) {
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 0.3;
  CHECK_OK(ct_broker_worker_start(b, &wo));
  char id[CT_BROKER_ID_SIZE];
  test_broker_submit(b, "slow", NULL, NULL, id);
  WAIT_FOR(atomic_load(started) == 1);
  test_redis_take_over_only_entry(r, "ctasker:{default}:stream:normal");
  freeReplyObject(test_redis(r, "HSET ctasker:{default}:task:%s status completed "
                             "result \"first\" finished 5000", id));
  /* Fetch nothing more (the entry, idle under "other", would be taken
   * back after a lease); the running task goes on, and its renewals. */
  CHECK_OK(ct_broker_worker_stop(b, 0));
  WAIT_FOR(atomic_load(saw_cancel) == 1);
  CHECK_OK(ct_broker_worker_stop(b, -1)); /* its run has ended */
  CHECK_EQ_INT(atomic_load(started), 1);
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(b, id, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_STR(json_string_value(info.result), "first");
  json_decref(info.result);
  /* The entry is still the other worker's, pending: not acknowledged. */
  redisReply *x = test_redis(r, "XPENDING ctasker:{default}:stream:normal workers - + 10");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  CHECK_EQ_STR(x->element[0]->element[1]->str, "other");
  freeReplyObject(x);
}

#endif
