/* The core layer on its own: tasks, the run queue and the handle table, linked
 * without any executor, supervisor or worker code (tests/meson.build). */
#include "check.h"
#include "handles.h"
#include "core/runqueue.h"
#include "gate.h"

typedef struct {
  ct__task_owner_t owner;
  ct__handles_t *handles;
  int forgotten;
} owner_t;

static void forget(ct__task_owner_t *o, ct_task_t *t) {
  owner_t *own = (owner_t *)o;
  own->forgotten++;
  ct__handles_remove(own->handles, t);
}

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  return json_integer(*(int *)arg);
}

TEST(handle_table_finds_added_tasks_until_removed) {
  ct__handles_t *h = new_handles();
  enum { N = 10000 }; /* more than one chunk of slots */
  static ct_task_t *tasks[N];
  static uint64_t ids[N];
  for (int i = 0; i < N; i++) {
    tasks[i] = ct__task_new(answer, NULL, CT_PRIORITY_NORMAL, false);
    CHECK(tasks[i]);
    CHECK_OK(ct__handles_add(h, tasks[i]));
    ct__handles_publish(h, tasks[i]);
    ids[i] = tasks[i]->id;
    CHECK(ids[i] > 0);
    CHECK(i == 0 || ids[i] != ids[i - 1]);
  }
  CHECK_EQ_INT(ct__handles_size(h), N);
  for (int i = 0; i < N; i += 2)
    ct__handles_remove(h, tasks[i]);
  CHECK_EQ_INT(ct__handles_size(h), N / 2);
  for (int i = 0; i < N; i++) {
    ct_task_t *found = ct__handles_get(h, ids[i]);
    CHECK(i % 2 == 0 ? found == NULL : found == tasks[i]);
    ct_task_unref(found);
  }
  /* Ids the table never gave: no slot, or not an id of the table. */
  CHECK(ct__handles_get(h, 0) == NULL);
  CHECK(ct__handles_get(h, 5000) == NULL);
  CHECK(ct__handles_get(h, CT__HANDLE_ID_MARK | (uint64_t)(N + 1)) == NULL);
  for (int i = 1; i < N; i += 2)
    ct__handles_remove(h, tasks[i]);
  CHECK_EQ_INT(ct__handles_size(h), 0);
  for (int i = 0; i < N; i++)
    ct_task_unref(tasks[i]);
  free_handles(h);
}

/* A slot serves the next task once its task has left, under a new
 * generation: the old id finds nothing, never the new task. */
TEST(a_stale_id_finds_nothing_even_when_its_slot_serves_another_task) {
  ct__handles_t *h = new_handles();
  ct_task_t *first = ct__task_new(answer, NULL, CT_PRIORITY_NORMAL, false);
  CHECK(first);
  CHECK_OK(ct__handles_add(h, first));
  uint64_t stale = first->id;
  ct__handles_remove(h, first);
  ct__handles_remove(h, first); /* not there any more: nothing happens */
  ct_task_t *second = ct__task_new(answer, NULL, CT_PRIORITY_NORMAL, false);
  CHECK(second);
  CHECK_OK(ct__handles_add(h, second));
  ct__handles_publish(h, second);
  CHECK_EQ_INT((uint32_t)second->id, (uint32_t)stale); /* the same slot */
  CHECK(second->id != stale);
  CHECK(ct__handles_get(h, stale) == NULL);
  ct_task_t *found = ct__handles_get(h, second->id);
  CHECK(found == second);
  ct_task_unref(found);
  ct__handles_remove(h, second);
  ct_task_unref(first);
  ct_task_unref(second);
  free_handles(h);
}

TEST(run_queue_pops_by_priority_then_in_push_order) {
  static const int prio[] = {200, 0, 100, 0, 50, 255, 100, 50};
  enum { N = sizeof prio / sizeof prio[0] };
  ct__runqueue_t *rq = malloc(sizeof *rq);
  CHECK(rq);
  ct__rq_init(rq);
  ct_task_t *t[N];
  for (int i = 0; i < N; i++) {
    CHECK(t[i] = ct__task_new(answer, NULL, prio[i], false));
    ct__rq_push(rq, t[i]);
  }
  static const int expected[] = {1, 3, 4, 7, 2, 6, 0, 5};
  for (int i = 0; i < N; i++)
    CHECK(ct__rq_pop(rq) == t[expected[i]]);
  CHECK(ct__rq_pop(rq) == NULL);
  CHECK_EQ_INT(rq->len, 0);
  for (int i = 0; i < N; i++)
    ct_task_unref(t[i]);
  free(rq);
}

/* A registered task that finishes is dropped by its owner's forget hook,
 * once, before its waiters return; an unregistered one never calls it. */
TEST(finishing_a_registered_task_calls_its_owners_forget_hook_once) {
  owner_t own = {.owner.forget = forget, .handles = new_handles()};
  int value = 42;
  ct_task_t *t = ct__task_new(answer, &value, CT_PRIORITY_NORMAL, true);
  CHECK(t);
  t->owner = &own.owner;
  CHECK_OK(ct__handles_add(own.handles, t));
  atomic_fetch_or(&t->flags, CT__F_REGISTERED);
  ct_task_t *handle = ct_task_ref(t);
  CHECK(ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_STARTED));
  ct__task_run_and_release(t, NULL);
  CHECK_OK(ct_task_wait(handle, WAIT_BOUND_S));
  CHECK_EQ_INT(own.forgotten, 1);
  CHECK_EQ_INT(ct__handles_size(own.handles), 0);
  CHECK_EQ_INT(json_integer_value(ct_task_result(handle)), 42);
  CHECK_EQ_INT(ct_task_status(handle), CT_TASK_COMPLETED);
  ct_task_unref(handle);

  ct_task_t *plain = ct__task_new(answer, &value, CT_PRIORITY_NORMAL, true);
  plain->owner = &own.owner;
  handle = ct_task_ref(plain);
  CHECK(ct__task_try_status(plain, CT_TASK_QUEUED, CT_TASK_STARTED));
  ct__task_run_and_release(plain, NULL);
  CHECK_EQ_INT(own.forgotten, 1);
  CHECK_EQ_INT(ct_task_status(handle), CT_TASK_COMPLETED);
  ct_task_unref(handle);
  free_handles(own.handles);
}

/* A tracked task's record (with the extra part) is two whole cache lines,
 * so that no two tasks share a line: the thread finishing one does not pull
 * away the line of the next, which its submitter fills or another thread
 * runs. */
TEST(records_with_the_extra_part_take_whole_cache_lines) {
  enum { N = 64 };
  ct_task_t *t[N];
  for (int i = 0; i < N; i++) {
    CHECK(t[i] = ct__task_new(answer, NULL, CT_PRIORITY_NORMAL, true));
    CHECK_EQ_INT((uintptr_t)t[i] % 64, 0);
  }
  for (int i = 0; i < N; i++)
    ct_task_unref(t[i]);
}

int main(void) {
  RUN(handle_table_finds_added_tasks_until_removed);
  RUN(a_stale_id_finds_nothing_even_when_its_slot_serves_another_task);
  RUN(run_queue_pops_by_priority_then_in_push_order);
  RUN(finishing_a_registered_task_calls_its_owners_forget_hook_once);
  RUN(records_with_the_extra_part_take_whole_cache_lines);
  return check_done();
}
