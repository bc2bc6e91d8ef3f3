/* A worker whose start fails half way (its fetch thread cannot be
 * started: the library's pthread_create() is routed through this test's
 * wrapper, which refuses the one it is told to) leaves no liveness record
 * and no place in the workers set behind, and a later start works. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"

int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);

/* Thread starts still let through before one is refused; -1: all pass. */
static atomic_int creates_left = -1;

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *),
                          void *arg) {
  int left = atomic_load(&creates_left);
  while (left >= 0 && !atomic_compare_exchange_weak(&creates_left, &left, left - 1))
    ;
  if (left == 0)
    return EAGAIN;
  return __real_pthread_create(t, a, fn, arg);
}

static json_t *nothing(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  return NULL;
}

TEST(a_failed_start_leaves_no_liveness_record) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  CHECK_OK(ct_broker_register(e.b, "nothing", nothing, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.consumer = "w1";
  /* The start makes one thread for its fetch connection's loop, then the
   * store and fetch threads, last, once the liveness record is written:
   * refuse the store thread. */
  atomic_store(&creates_left, 1);
  CHECK_EQ_INT(ct_broker_worker_start(e.b, &wo), CT_EAGAIN);
  CHECK_EQ_INT(atomic_load(&creates_left), -1); /* the refusal happened */
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS ctasker:{default}:worker:w1"), 0);
  redisReply *x = test_redis(&e.r, "ZSCORE ctasker:{default}:workers w1");
  CHECK(x->type == REDIS_REPLY_NIL);
  freeReplyObject(x);
  /* Registration is open again, and a start now works. */
  CHECK_OK(ct_broker_worker_start(e.b, &wo));
  CHECK_EQ_INT(test_redis_int(&e.r, "EXISTS ctasker:{default}:worker:w1"), 1);
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  test_env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_failed_start_leaves_no_liveness_record);
  return check_done();
}
