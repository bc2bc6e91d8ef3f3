/* The thread pool on its own: run order, counts, a cancel stop and the
 * on_drained hook, linked without supervisor, process or worker code
 * (tests/meson.build). */
#include "check.h"
#include "exec/threadpool.h"
#include "gate.h"

static order_t order;

static json_t *record(ct_task_t *self, void *arg) {
  (void)self;
  order_add(&order, (int)(intptr_t)arg);
  return NULL;
}

static void drained(void *data) { counter_add(data, 1); }

static void start_pool(ct__pool_t *p, counter_t *drains) {
  ct__pool_cfg_t cfg = {.pool_size = 1, .keepalive = 10, .on_drained = drained, .data = drains};
  CHECK_OK(ct__pool_init(p, &cfg));
  CHECK_OK(ct__pool_start(p));
}

static ct_task_t *queue(ct__pool_t *p, ct_task_fn fn, void *arg, int priority) {
  ct_task_t *t = ct__task_new(fn, arg, priority, false);
  CHECK(t);
  ct_task_t *handle = ct_task_ref(t);
  CHECK_OK(ct__pool_submit(p, t, false));
  return handle;
}

/* One thread, held at a gate: what waits starts by priority, then in
 * submission order, and every task is counted once. */
TEST(pool_runs_queued_tasks_by_priority_and_counts_them) {
  ct__pool_t *p = aligned_alloc(_Alignof(ct__pool_t), sizeof *p);
  counter_t drains;
  gate_t gate;
  counter_init(&drains);
  gate_init(&gate);
  order_init(&order);
  start_pool(p, &drains);
  ct_task_t *hold = queue(p, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  static const int prio[] = {200, 100, 50, 100, 200, 50};
  ct_task_t *t[6];
  for (int i = 0; i < 6; i++)
    t[i] = queue(p, record, (void *)(intptr_t)i, prio[i]);
  ct__pool_counts_t c;
  ct__pool_counts(p, &c);
  CHECK_EQ_INT(c.queued, 6);
  CHECK_EQ_INT(c.running, 1);
  gate_open(&gate);
  CHECK_OK(ct_wait_completed(t, 6, WAIT_BOUND_S));
  static const int expected[] = {2, 5, 1, 3, 0, 4};
  CHECK_EQ_INT(order.len, 6);
  for (int i = 0; i < 6; i++)
    CHECK_EQ_INT(order.tags[i], expected[i]);
  CHECK(ct__pool_stop(p, false) == NULL);
  counter_wait_at_least(&drains, 1);
  CHECK(ct__pool_drained(p));
  ct__pool_counts(p, &c);
  CHECK_EQ_INT(c.completed, 7);
  CHECK_EQ_INT(c.queued + c.running + c.failed + c.canceled, 0);
  for (int i = 0; i < 6; i++)
    ct_task_unref(t[i]);
  ct_task_unref(hold);
  ct__pool_destroy(p);
  free(p);
  CHECK_EQ_INT(counter_get(&drains), 1);
  order_destroy(&order);
  gate_destroy(&gate);
  counter_destroy(&drains);
}

/* A cancel stop hands back every queued task CANCELED, for the caller to
 * finish; the running one completes and the pool then says it drained. */
TEST(cancel_stop_returns_queued_tasks_and_drains) {
  ct__pool_t *p = aligned_alloc(_Alignof(ct__pool_t), sizeof *p);
  counter_t drains;
  gate_t gate;
  counter_init(&drains);
  gate_init(&gate);
  order_init(&order);
  start_pool(p, &drains);
  ct_task_t *hold = queue(p, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  ct_task_t *t[3];
  for (int i = 0; i < 3; i++)
    t[i] = queue(p, record, (void *)(intptr_t)i, CT_PRIORITY_NORMAL);
  ct_task_t *canceled = ct__pool_stop(p, true);
  int n = 0;
  while (canceled) {
    ct_task_t *next = canceled->link;
    CHECK(canceled == t[n]);
    ct__task_finish_canceled(canceled);
    ct_task_unref(canceled);
    canceled = next;
    n++;
  }
  CHECK_EQ_INT(n, 3);
  CHECK_EQ_INT(ct__pool_submit(p, ct_task_ref(t[0]), false), CT_ESHUTDOWN);
  ct_task_unref(t[0]);
  gate_open(&gate);
  counter_wait_at_least(&drains, 1);
  ct__pool_counts_t c;
  ct__pool_counts(p, &c);
  CHECK_EQ_INT(c.completed, 1);
  CHECK_EQ_INT(c.canceled, 3);
  CHECK_EQ_INT(order.len, 0);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(ct_task_status(t[i]), CT_TASK_CANCELED);
    ct_task_unref(t[i]);
  }
  CHECK_OK(ct_task_wait(hold, WAIT_BOUND_S));
  ct_task_unref(hold);
  ct__pool_destroy(p);
  free(p);
  order_destroy(&order);
  gate_destroy(&gate);
  counter_destroy(&drains);
}

int main(void) {
  RUN(pool_runs_queued_tasks_by_priority_and_counts_them);
  RUN(cancel_stop_returns_queued_tasks_and_drains);
  return check_done();
}
