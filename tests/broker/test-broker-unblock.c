/* A stop ends an idle worker's blocking read at once: it sends CLIENT
 * UNBLOCK for the fetch connection, whose id the connection learns as it
 * connects, also after that connection was made again (CLIENT KILL) with
 * a new id: the new one is blocked in XREAD (CLIENT LIST says) before the
 * stop. */
#include <string.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"

static json_t *nothing(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self, (void)kwargs, (void)data;
  return NULL;
}

/* The id of the one client blocked in XREAD, once there is one. */
static long long blocked_reader(test_redis_t *r) {
  for (int t = 0; t < 2000; t++) {
    redisReply *x = test_redis(r, "CLIENT LIST");
    long long id = 0;
    for (char *line = x->str, *next; line; line = next) {
      next = strchr(line, '\n');
      if (next)
        *next++ = '\0';
      if (strstr(line, "cmd=xread ") && strstr(line, " flags=b") && strncmp(line, "id=", 3) == 0)
        id = atoll(line + 3);
    }
    freeReplyObject(x);
    if (id)
      return id;
    check_sleep(0.01);
  }
  CHECK(!"no worker blocked in XREAD");
  return 0;
}

static void test_a_stop_unblocks_the_fetch_connection_by_its_current_id(void) {
  test_env_t e;
  test_env_start(&e, 0, 0, NULL);
  CHECK_OK(ct_broker_register(e.b, "nothing", nothing, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  long long first = blocked_reader(&e.r);
  /* The fetch connection is made again, with a new id. */
  freeReplyObject(test_redis(&e.r, "CLIENT KILL ID %lld", first));
  long long id = 0;
  for (int t = 0; t < 2000 && (id == 0 || id == first); t++) {
    id = blocked_reader(&e.r);
    if (id == first)
      check_sleep(0.01);
  }
  CHECK(id != first);
  /* The stop sends CLIENT UNBLOCK (MONITOR does not show admin commands:
   * the command counts do), with the id it published for the read. */
  freeReplyObject(test_redis(&e.r, "CONFIG RESETSTAT"));
  CHECK_OK(ct_broker_worker_stop(e.b, -1));
  redisReply *x = test_redis(&e.r, "INFO commandstats");
  CHECK(strstr(x->str, "cmdstat_client|unblock:calls=1,") != NULL);
  freeReplyObject(x);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "workers"), 0); /* the stop ended */
  test_env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_stop_unblocks_the_fetch_connection_by_its_current_id);
  return check_done();
}
