/* Built without the redis feature: every broker call says CT_ENOTSUP and
 * hands out nothing. */
#include "../check.h"
#include "ctasker.h"

TEST(broker_calls_are_not_supported) {
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = "unix:///tmp/redis.sock";
  ct_broker_t *b = (ct_broker_t *)&o;
  CHECK_EQ_INT(ct_broker_new(NULL, &o, &b), CT_ENOTSUP);
  CHECK(b == NULL);
  char id[CT_BROKER_ID_SIZE];
  CHECK_EQ_INT(ct_broker_submit(NULL, "t", NULL, NULL, id), CT_ENOTSUP);
  ct_broker_info_t info;
  CHECK_EQ_INT(ct_broker_get(NULL, "x", &info), CT_ENOTSUP);
  CHECK_EQ_INT(ct_broker_register(NULL, "t", NULL, NULL), CT_ENOTSUP);
  CHECK_EQ_INT(ct_broker_register_process(NULL, "t", "f", 1), CT_ENOTSUP);
  CHECK_EQ_INT(ct_broker_register_loop(NULL, "t", NULL, NULL, NULL), CT_ENOTSUP);
  ct_broker_run_complete(NULL, json_string("dropped")); /* no leak */
  CHECK(!ct_broker_run_canceled(NULL));
  ct_broker_run_on_cancel(NULL, NULL, NULL);
  CHECK_EQ_INT(ct_broker_worker_start(NULL, NULL), CT_ENOTSUP);
  CHECK_EQ_INT(ct_broker_worker_stop(NULL, -1), CT_ENOTSUP);
  CHECK_EQ_INT(ct_broker_submit_async(NULL, "t", NULL, NULL, NULL, NULL, NULL), CT_ENOTSUP);
  CHECK_EQ_INT(ct_broker_get_async(NULL, "x", NULL, NULL, NULL), CT_ENOTSUP);
  CHECK_EQ_INT(ct_broker_call_async(NULL, "t", NULL, NULL, 1, NULL, NULL, NULL), CT_ENOTSUP);
  ct_broker_free(NULL);
}

int main(void) {
  RUN(broker_calls_are_not_supported);
  return check_done();
}
