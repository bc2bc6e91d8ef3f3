/* The core layer on its own: tasks, the run queue and the registry, linked
 * without any executor, supervisor or worker code (tests/meson.build). */
#include "check.h"
#include "core/registry.h"
#include "core/runqueue.h"
#include "gate.h"

typedef struct {
  ct__task_owner_t owner;
  ct__registry_t registry;
  int forgotten;
} owner_t;

static void forget(ct__task_owner_t *o, ct_task_t *t) {
  owner_t *own = (owner_t *)o;
  own->forgotten++;
  ct__registry_remove(&own->registry, t);
}

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  return json_integer(*(int *)arg);
}

TEST(registry_finds_added_tasks_until_removed) {
  ct__registry_t r;
  CHECK_OK(ct__registry_init(&r));
  ct_task_t *tasks[1000];
  for (int i = 0; i < 1000; i++) {
    tasks[i] = ct__task_new(answer, NULL, CT_PRIORITY_NORMAL, false);
    CHECK(tasks[i]);
    tasks[i]->id = (uint64_t)i + 1;
    CHECK_OK(ct__registry_add(&r, tasks[i]));
  }
  CHECK_EQ_INT(ct__registry_size(&r), 1000);
  for (int i = 0; i < 1000; i += 2)
    ct__registry_remove(&r, tasks[i]);
  CHECK_EQ_INT(ct__registry_size(&r), 500);
  for (int i = 0; i < 1000; i++) {
    ct_task_t *found = ct__registry_get(&r, (uint64_t)i + 1);
    CHECK(i % 2 == 0 ? found == NULL : found == tasks[i]);
    ct_task_unref(found);
  }
  CHECK(ct__registry_get(&r, 5000) == NULL);
  for (int i = 1; i < 1000; i += 2)
    ct__registry_remove(&r, tasks[i]);
  CHECK_EQ_INT(ct__registry_size(&r), 0);
  for (int i = 0; i < 1000; i++)
    ct_task_unref(tasks[i]);
  ct__registry_destroy(&r);
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
  owner_t own = {.owner.forget = forget};
  CHECK_OK(ct__registry_init(&own.registry));
  int value = 42;
  ct_task_t *t = ct__task_new(answer, &value, CT_PRIORITY_NORMAL, true);
  CHECK(t);
  t->owner = &own.owner;
  t->id = 7;
  CHECK_OK(ct__registry_add(&own.registry, t));
  atomic_fetch_or(&t->flags, CT__F_REGISTERED);
  ct_task_t *handle = ct_task_ref(t);
  CHECK(ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_STARTED));
  ct__task_run_and_release(t);
  CHECK_OK(ct_task_wait(handle, WAIT_BOUND_S));
  CHECK_EQ_INT(own.forgotten, 1);
  CHECK_EQ_INT(ct__registry_size(&own.registry), 0);
  CHECK_EQ_INT(json_integer_value(ct_task_result(handle)), 42);
  CHECK_EQ_INT(ct_task_status(handle), CT_TASK_COMPLETED);
  ct_task_unref(handle);

  ct_task_t *plain = ct__task_new(answer, &value, CT_PRIORITY_NORMAL, true);
  plain->owner = &own.owner;
  handle = ct_task_ref(plain);
  CHECK(ct__task_try_status(plain, CT_TASK_QUEUED, CT_TASK_STARTED));
  ct__task_run_and_release(plain);
  CHECK_EQ_INT(own.forgotten, 1);
  CHECK_EQ_INT(ct_task_status(handle), CT_TASK_COMPLETED);
  ct_task_unref(handle);
  ct__registry_destroy(&own.registry);
}

int main(void) {
  RUN(registry_finds_added_tasks_until_removed);
  RUN(run_queue_pops_by_priority_then_in_push_order);
  RUN(finishing_a_registered_task_calls_its_owners_forget_hook_once);
  return check_done();
}
