/* Priorities and reservations: with the pool saturated by gate tasks,
 * queued work starts in priority order, FIFO among equals, under the caps
 * documented in supervisor.h; CRITICAL bypasses every cap. */
#include "gate.h"
#include "core/runqueue.h"

static order_t order;

/* Record the tag given as arg when the task starts. */
static json_t *record(ct_task_t *self, void *arg) {
  (void)self;
  order_add(&order, (int)(intptr_t)arg);
  return NULL;
}

static ct_task_t *submit_tag(ct_supervisor_t *sup, int priority, int tag) {
  return submit(sup, record, (void *)(intptr_t)tag, priority);
}

/* Tags encode the expected rank: priority * 100 + submission index. */
TEST(priority_order_fifo_among_equals) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  order_init(&order);
  ct_task_t *blocker = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  int prios[] = {CT_PRIORITY_LOW, CT_PRIORITY_NORMAL, 255, CT_PRIORITY_HIGH, 1,
                 CT_PRIORITY_LOW, CT_PRIORITY_HIGH, CT_PRIORITY_NORMAL, 101, 1,
                 CT_PRIORITY_LOW, CT_PRIORITY_HIGH, 255, CT_PRIORITY_NORMAL};
  enum { N = sizeof prios / sizeof *prios };
  ct_task_t *t[N];
  for (int i = 0; i < N; i++)
    t[i] = submit_tag(sup, prios[i], prios[i] * 100 + i);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.queued, N);
  CHECK_EQ_INT(st.running, 1);
  gate_open(&gate);
  CHECK_OK(ct_wait_completed(t, N, -1));
  CHECK_EQ_INT(order.len, N);
  for (int i = 1; i < N; i++)
    CHECK(order.tags[i - 1] < order.tags[i]);
  for (int i = 0; i < N; i++)
    ct_task_unref(t[i]);
  ct_task_unref(blocker);
  stop_and_free(sup);
  order_destroy(&order);
  gate_destroy(&gate);
}

/* atasker's inversion: a HIGH task submitted after LOW ones are queued must
 * start before them, even with two threads busy. */
TEST(no_inversion) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  gate_t gate;
  gate_init(&gate);
  order_init(&order);
  ct_task_t *b1 = submit(sup, gate_task, &gate, CT_PRIORITY_LOW);
  ct_task_t *b2 = submit(sup, gate_task, &gate, CT_PRIORITY_LOW);
  gate_wait_arrived(&gate, 2);
  ct_task_t *t[5];
  for (int i = 0; i < 4; i++)
    t[i] = submit_tag(sup, CT_PRIORITY_LOW, 10 + i);
  t[4] = submit_tag(sup, CT_PRIORITY_HIGH, 1);
  gate_open(&gate);
  CHECK_OK(ct_wait_completed(t, 5, -1));
  /* Start times are taken under the pool lock as each task is taken off
   * the queue, so they give the start order even with two threads. */
  for (int i = 0; i < 4; i++)
    CHECK(ct_task_time_started(t[4]) <= ct_task_time_started(t[i]));
  for (int i = 0; i < 3; i++)
    CHECK(ct_task_time_started(t[i]) <= ct_task_time_started(t[i + 1]));
  for (int i = 0; i < 5; i++)
    ct_task_unref(t[i]);
  ct_task_unref(b1);
  ct_task_unref(b2);
  stop_and_free(sup);
  order_destroy(&order);
  gate_destroy(&gate);
}

/* Gate tasks of one class; count the ones that are running. */
typedef struct {
  gate_t gate;
  int tag;
} class_gate_t;

static json_t *class_task(ct_task_t *self, void *arg) {
  (void)self;
  class_gate_t *cg = arg;
  order_add(&order, cg->tag);
  gate_pass(&cg->gate);
  return NULL;
}

static void expect_running(ct_supervisor_t *sup, int running, int queued) {
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.running, running);
  CHECK_EQ_INT(st.queued, queued);
}

/* Wait until exactly `running` tasks run (a finished task's thread counts
 * it as running until just after its waiters wake). */
static void wait_running(ct_supervisor_t *sup, int running) {
  double deadline = ct_now() + WAIT_BOUND_S;
  ct_stats_t st = CT_STATS_INIT;
  for (;;) {
    CHECK_OK(ct_supervisor_stats(sup, &st));
    if (st.running == (uint64_t)running)
      return;
    CHECK(ct_now() < deadline);
    check_sleep(0.001);
  }
}

/* Give a task that must not start a moment to (wrongly) start. Only makes
 * the check stronger; the test never depends on it. */
static void settle(void) { check_sleep(0.02); }

/* pool 1, reserve_normal 2, reserve_high 1: LOW cap 1, NORMAL cap 3,
 * HIGH cap 4, CRITICAL unbounded. */
TEST(reservation_caps) {
  ct_supervisor_t *sup = start_supervisor(1, 2, 1);
  order_init(&order);
  class_gate_t low = {.tag = 'L'}, normal = {.tag = 'N'}, high = {.tag = 'H'},
               crit = {.tag = 'C'};
  gate_init(&low.gate);
  gate_init(&normal.gate);
  gate_init(&high.gate);
  gate_init(&crit.gate);
  ct_task_t *t[16];
  int n = 0;

  /* LOW may use the pool only: 1 of 3 runs. */
  for (int i = 0; i < 3; i++)
    t[n++] = submit(sup, class_task, &low, CT_PRIORITY_LOW);
  gate_wait_arrived(&low.gate, 1);
  settle();
  expect_running(sup, 1, 2);
  CHECK_EQ_INT(gate_arrived(&low.gate), 1);

  /* NORMAL may use pool + reserve_normal: 2 more (3 running), the third waits. */
  for (int i = 0; i < 3; i++)
    t[n++] = submit(sup, class_task, &normal, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&normal.gate, 2);
  settle();
  expect_running(sup, 3, 3);
  CHECK_EQ_INT(gate_arrived(&normal.gate), 2);

  /* HIGH (priority 1..50) may use pool + both reserves: 1 more, then waits. */
  t[n++] = submit(sup, class_task, &high, 1);
  t[n++] = submit(sup, class_task, &high, CT_PRIORITY_HIGH);
  gate_wait_arrived(&high.gate, 1);
  settle();
  expect_running(sup, 4, 4);
  CHECK_EQ_INT(gate_arrived(&high.gate), 1);

  /* CRITICAL starts at once although every cap is reached. */
  for (int i = 0; i < 2; i++)
    t[n++] = submit(sup, class_task, &crit, CT_PRIORITY_CRITICAL);
  gate_wait_arrived(&crit.gate, 2);
  expect_running(sup, 6, 4);
  gate_open(&crit.gate);
  CHECK_OK(ct_wait_completed(&t[n - 2], 2, -1));
  wait_running(sup, 4);
  settle();
  expect_running(sup, 4, 4);

  /* Releasing the LOW runner lets the waiting HIGH one start, not a LOW one. */
  int before = order.len;
  gate_open(&low.gate);
  CHECK_OK(ct_task_wait(t[0], -1));
  gate_wait_arrived(&high.gate, 2);
  CHECK_EQ_INT(order.tags[before], 'H');
  gate_open(&high.gate);
  gate_open(&normal.gate);
  CHECK_OK(ct_wait_completed(t, n, -1));
  /* The queued ones started in class order: HIGH, NORMAL, then LOW. */
  const char expect[] = "LNNHCCHNLL";
  CHECK_EQ_INT(order.len, (int)strlen(expect));
  for (int i = 0; i < order.len; i++)
    CHECK_EQ_INT(order.tags[i], expect[i]);
  for (int i = 0; i < n; i++)
    ct_task_unref(t[i]);
  stop_and_free(sup);
  gate_destroy(&low.gate);
  gate_destroy(&normal.gate);
  gate_destroy(&high.gate);
  gate_destroy(&crit.gate);
  order_destroy(&order);
}

/* The cap function itself, at every class boundary. */
TEST(cap_boundaries) {
  enum { P = 3, RN = 2, RH = 1 };
  CHECK_EQ_INT(ct__cap_for_priority(0, P, RN, RH), INT_MAX);
  CHECK_EQ_INT(ct__cap_for_priority(1, P, RN, RH), P + RN + RH);
  CHECK_EQ_INT(ct__cap_for_priority(50, P, RN, RH), P + RN + RH);
  CHECK_EQ_INT(ct__cap_for_priority(51, P, RN, RH), P + RN);
  CHECK_EQ_INT(ct__cap_for_priority(100, P, RN, RH), P + RN);
  CHECK_EQ_INT(ct__cap_for_priority(101, P, RN, RH), P);
  CHECK_EQ_INT(ct__cap_for_priority(255, P, RN, RH), P);
}

/* With no reserves, CRITICAL still starts while the single thread is busy. */
TEST(critical_bypasses_a_busy_pool) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  order_init(&order);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *blocker = submit(sup, gate_task, &gate, CT_PRIORITY_CRITICAL);
  gate_wait_arrived(&gate, 1);
  ct_task_t *queued = submit_tag(sup, 1, 1);
  ct_task_t *crit = submit_tag(sup, CT_PRIORITY_CRITICAL, 0);
  CHECK_OK(ct_task_wait(crit, -1));
  CHECK_EQ_INT(ct_task_status(queued), CT_TASK_QUEUED);
  CHECK_EQ_INT(ct_task_status(blocker), CT_TASK_STARTED);
  gate_open(&gate);
  CHECK_OK(ct_task_wait(queued, -1));
  CHECK_EQ_INT(order.tags[0], 0);
  CHECK_EQ_INT(order.tags[1], 1);
  ct_task_unref(blocker);
  ct_task_unref(queued);
  ct_task_unref(crit);
  stop_and_free(sup);
  gate_destroy(&gate);
  order_destroy(&order);
}

int main(void) {
  RUN(priority_order_fifo_among_equals);
  RUN(no_inversion);
  RUN(reservation_caps);
  RUN(cap_boundaries);
  RUN(critical_bypasses_a_busy_pool);
  return check_done();
}
