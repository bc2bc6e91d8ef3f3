/* Smoke test: a supervisor starts, runs a task with a result, stops. */
#include <ctasker.h>

#include "check.h"

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return json_integer(42);
}

TEST(one_task_round_trip) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, answer, NULL, NULL, &t));
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  CHECK_EQ_INT(json_integer_value(ct_task_result(t)), 42);
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  CHECK_OK(ct_supervisor_free(sup));
}

int main(void) {
  RUN(one_task_round_trip);
  return check_done();
}
