/* A worker whose start fails half way (its fetch thread cannot be
 * started: the library's pthread_create() is routed through this test's
 * wrapper, which refuses the one it is told to) leaves no liveness record
 * and no place in the workers set behind, and a later start works. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "ctasker.h"
#include "redis.h"

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
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = r.url;
  o.command_timeout = 10;
  ct_broker_t *b;
  CHECK_OK(ct_broker_new(sup, &o, &b));
  CHECK_OK(ct_broker_register(b, "nothing", nothing, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.consumer = "w1";
  /* The start makes one thread for its fetch connection's loop, then the
   * store and fetch threads, last, once the liveness record is written:
   * refuse the store thread. */
  atomic_store(&creates_left, 1);
  CHECK_EQ_INT(ct_broker_worker_start(b, &wo), CT_EAGAIN);
  CHECK_EQ_INT(atomic_load(&creates_left), -1); /* the refusal happened */
  CHECK_EQ_INT(test_redis_int(&r, "EXISTS ctasker:{default}:worker:w1"), 0);
  redisReply *x = test_redis(&r, "ZSCORE ctasker:{default}:workers w1");
  CHECK(x->type == REDIS_REPLY_NIL);
  freeReplyObject(x);
  /* Registration is open again, and a start now works. */
  CHECK_OK(ct_broker_worker_start(b, &wo));
  CHECK_EQ_INT(test_redis_int(&r, "EXISTS ctasker:{default}:worker:w1"), 1);
  CHECK_OK(ct_broker_worker_stop(b, -1));
  ct_broker_free(b);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
  test_redis_stop(&r);
}

int main(void) {
  if (system("command -v redis-server >/dev/null") != 0) {
    fprintf(stderr, "redis-server is not installed (.ci/deps installs it)\n");
    return 77;
  }
  RUN(a_failed_start_leaves_no_liveness_record);
  return check_done();
}
