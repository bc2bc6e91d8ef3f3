/* Tasks by id through the supervisor: a tracked task is found while it is
 * known, and once it is terminal its id answers CT_ENOENT, also after the
 * next task has taken its slot of the handle table. */
#include "gate.h"

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return json_integer(1);
}

TEST(a_stale_id_answers_enoent_after_its_slot_is_reused) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *first, *found;
  CHECK_OK(ct_background_task(sup, gate_task, &gate, NULL, &first));
  uint64_t stale = ct_task_id(first);
  CHECK(stale > 0);
  CHECK_OK(ct_supervisor_get_task(sup, stale, &found));
  CHECK(found == first);
  ct_task_unref(found);
  gate_open(&gate);
  CHECK_OK(ct_task_wait(first, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_supervisor_get_task(sup, stale, &found), CT_ENOENT);
  CHECK(found == NULL);
  /* Many more tracked tasks, one at a time: each takes the slot the last
   * one left, and none is ever found by an earlier id. */
  for (int i = 0; i < 1000; i++) {
    ct_task_t *t;
    CHECK_OK(ct_background_task(sup, answer, NULL, NULL, &t));
    CHECK(ct_task_id(t) != stale);
    CHECK_EQ_INT(ct_supervisor_get_task(sup, stale, &found), CT_ENOENT);
    CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
    CHECK_EQ_INT(ct_supervisor_get_task(sup, ct_task_id(t), &found), CT_ENOENT);
    stale = ct_task_id(t);
    ct_task_unref(t);
  }
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  ct_task_unref(first);
  stop_and_free(sup);
  gate_destroy(&gate);
}

int main(void) {
  RUN(a_stale_id_answers_enoent_after_its_slot_is_reused);
  return check_done();
}
