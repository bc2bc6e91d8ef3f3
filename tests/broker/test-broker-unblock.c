/* A stop ends an idle worker's blocking read at once: it sends CLIENT
 * UNBLOCK for the fetch connection, whose id the connection learns as it
 * connects, also after that connection was made again (CLIENT KILL) with
 * a new id: the new one is blocked in XREAD (CLIENT LIST says) before the
 * stop. */
#include <string.h>

#include "ctasker.h"
#include "redis.h"

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
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = r.url;
  ct_broker_t *b;
  CHECK_OK(ct_broker_new(sup, &o, &b));
  CHECK_OK(ct_broker_register(b, "nothing", nothing, NULL));
  CHECK_OK(ct_broker_worker_start(b, NULL));
  long long first = blocked_reader(&r);
  /* The fetch connection is made again, with a new id. */
  freeReplyObject(test_redis(&r, "CLIENT KILL ID %lld", first));
  long long id = 0;
  for (int t = 0; t < 2000 && (id == 0 || id == first); t++) {
    id = blocked_reader(&r);
    if (id == first)
      check_sleep(0.01);
  }
  CHECK(id != first);
  /* The stop sends CLIENT UNBLOCK (MONITOR does not show admin commands:
   * the command counts do), with the id it published for the read. */
  freeReplyObject(test_redis(&r, "CONFIG RESETSTAT"));
  CHECK_OK(ct_broker_worker_stop(b, -1));
  redisReply *x = test_redis(&r, "INFO commandstats");
  CHECK(strstr(x->str, "cmdstat_client|unblock:calls=1,") != NULL);
  freeReplyObject(x);
  CHECK_EQ_INT(test_redis_int(&r, "ZCARD " PREFIX "workers"), 0); /* the stop ended */
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
  RUN(a_stop_unblocks_the_fetch_connection_by_its_current_id);
  return check_done();
}
