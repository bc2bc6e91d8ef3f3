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
  CHECK_OK(ct__pool_submit(p, t));
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
  CHECK_EQ_INT(ct__pool_submit(p, ct_task_ref(t[0])), CT_ESHUTDOWN);
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

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

/* Run one task and wait for it. */
static void run_one(ct__pool_t *p) {
  ct_task_t *t = queue(p, nothing, NULL, CT_PRIORITY_NORMAL);
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  ct_task_unref(t);
}

static void spin_counts(ct__pool_t *p, double *spin_for, uint64_t *spins, uint64_t *paid) {
  pthread_mutex_lock(&p->lock);
  *spin_for = p->spin_for;
  *spins = p->spins;
  *paid = p->spins_paid;
  pthread_mutex_unlock(&p->lock);
}

/* Stop a pool made with aligned_alloc(), wait until its last thread has
 * let go of its lock, and free it. */
static void end_pool(ct__pool_t *p, counter_t *drains) {
  CHECK(ct__pool_stop(p, false) == NULL);
  counter_wait_at_least(drains, 1);
  CHECK(ct__pool_drained(p)); /* the last thread has let go of the lock */
  ct__pool_destroy(p);
  free(p);
  counter_destroy(drains);
}

/* The idle spin backs off when work comes after pauses longer than
 * idle_spin (each pause quarters it, from 1 ms to none within six) and
 * then spins no more; work that comes right after the last task turns it
 * on again. Counts, not times: the pauses are 20 ms, far above the 1 ms
 * spin, and the back-to-back phase tries until a spin has paid off. */
TEST(idle_spin_backs_off_after_pauses_and_returns_for_bursts) {
  ct__pool_t *p = aligned_alloc(_Alignof(ct__pool_t), sizeof *p);
  counter_t drains;
  counter_init(&drains);
  ct__pool_cfg_t cfg = {.pool_size = 1, .min_threads = 1, .keepalive = 60,
                        .idle_spin = 0.001, .on_drained = drained, .data = &drains};
  CHECK_OK(ct__pool_init(p, &cfg));
  CHECK_OK(ct__pool_start(p));
  double spin_for;
  uint64_t spins, paid, spins_then;
  for (int i = 0; i < 10; i++) {
    check_sleep(0.02);
    run_one(p);
  }
  check_sleep(0.02);
  spin_counts(p, &spin_for, &spins, &paid);
  CHECK(spin_for == 0);
  CHECK(spins <= 7);
  for (int i = 0; i < 5; i++) {
    run_one(p);
    check_sleep(0.02);
  }
  spin_counts(p, &spin_for, &spins_then, &paid);
  CHECK_EQ_INT(spins_then, spins); /* off: no more spins after pauses */
  uint64_t paid_before = paid;
  for (int i = 0; paid == paid_before; i++) {
    CHECK(i < 200000);
    run_one(p);
    spin_counts(p, &spin_for, &spins, &paid);
  }
  end_pool(p, &drains);
}

/* Only a pause of the whole pool teaches the spin: a thread spins only in
 * an otherwise idle pool, so a thread claimed while another runs a task
 * says nothing of a spin. Here each claim comes after a pause fifty times
 * idle_spin, while a gate holds the other thread; learning from them, as
 * the spin once did, would have turned it off. */
TEST(claims_while_another_thread_runs_leave_the_spin_alone) {
  ct__pool_t *p = aligned_alloc(_Alignof(ct__pool_t), sizeof *p);
  counter_t drains;
  gate_t gate;
  counter_init(&drains);
  gate_init(&gate);
  ct__pool_cfg_t cfg = {.pool_size = 2, .min_threads = 2, .keepalive = 60,
                        .idle_spin = 0.001, .on_drained = drained, .data = &drains};
  CHECK_OK(ct__pool_init(p, &cfg));
  CHECK_OK(ct__pool_start(p));
  ct_task_t *hold = queue(p, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  double before, after;
  uint64_t spins, paid;
  spin_counts(p, &before, &spins, &paid);
  for (int i = 0; i < 8; i++) {
    check_sleep(0.02);
    run_one(p);
  }
  spin_counts(p, &after, &spins, &paid);
  CHECK(before > 0);
  CHECK(after == before);
  gate_open(&gate);
  CHECK_OK(ct_task_wait(hold, WAIT_BOUND_S));
  ct_task_unref(hold);
  end_pool(p, &drains);
  gate_destroy(&gate);
}

static json_t *count_one(ct_task_t *self, void *arg) {
  (void)self;
  counter_add(arg, 1);
  return NULL;
}

typedef struct {
  ct__pool_t *p;
  counter_t *ran;
  atomic_bool done;
} burst_t;

static void *submit_burst(void *arg) {
  burst_t *b = arg;
  for (int i = 0; i < 15; i++)
    ct_task_unref(queue(b->p, count_one, b->ran, CT_PRIORITY_NORMAL));
  atomic_store(&b->done, true);
  return NULL;
}

static bool all_idle(ct__pool_t *p) {
  ct__pool_counts_t c;
  ct__pool_counts(p, &c);
  return c.threads_idle == (uint64_t)p->cfg.pool_size;
}

/* Submit one task into a pool of sleeping threads and take the pool's lock
 * while the thread claimed for it is still on its way (it needs the lock to
 * look at the queue). Returns with the lock held, or tries again. */
static void lock_while_a_thread_wakes(ct__pool_t *p, counter_t *ran, long *submitted) {
  for (int tries = 0;; tries++) {
    CHECK(tries < 1000);
    WAIT_FOR(all_idle(p));
    ct_task_unref(queue(p, count_one, ran, CT_PRIORITY_NORMAL));
    ++*submitted;
    pthread_mutex_lock(&p->lock);
    if (atomic_load(&p->waking) == 1)
      return;
    pthread_mutex_unlock(&p->lock);
    counter_wait_at_least(ran, *submitted);
  }
}

/* While a thread claimed for work is on its way, more submissions wake no
 * other thread (nor take the pool's lock): the thread on its way takes the
 * first task and wakes the next thread only if work is left, so a burst of
 * short tasks wakes threads one at a time rather than one per task. Here
 * the lock is held until a burst of 15 more has been submitted: claiming a
 * thread for each submission, as the pool once did, blocked on it (the
 * burst never ended). A burst of tasks that hold their threads still
 * reaches every thread. */
TEST(a_burst_wakes_threads_one_at_a_time_yet_reaches_them_all) {
  enum { THREADS = 16 };
  ct__pool_t *p = aligned_alloc(_Alignof(ct__pool_t), sizeof *p);
  counter_t drains, ran;
  gate_t gate;
  counter_init(&drains);
  counter_init(&ran);
  gate_init(&gate);
  ct__pool_cfg_t cfg = {.pool_size = THREADS, .min_threads = THREADS, .keepalive = 60,
                        .on_drained = drained, .data = &drains};
  CHECK_OK(ct__pool_init(p, &cfg));
  CHECK_OK(ct__pool_start(p));
  long submitted = 0;
  lock_while_a_thread_wakes(p, &ran, &submitted);
  burst_t b = {.p = p, .ran = &ran};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, submit_burst, &b) == 0);
  for (int i = 0; i < 10000 && !atomic_load(&b.done); i++)
    check_sleep(0.001);
  CHECK(atomic_load(&b.done));
  pthread_mutex_unlock(&p->lock);
  pthread_join(th, NULL);
  counter_wait_at_least(&ran, submitted + 15);

  ct_task_t *held[THREADS];
  for (int i = 0; i < THREADS; i++)
    held[i] = queue(p, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, THREADS);
  gate_open(&gate);
  for (int i = 0; i < THREADS; i++) {
    CHECK_OK(ct_task_wait(held[i], WAIT_BOUND_S));
    ct_task_unref(held[i]);
  }
  end_pool(p, &drains);
  gate_destroy(&gate);
  counter_destroy(&ran);
}

int main(void) {
  RUN(pool_runs_queued_tasks_by_priority_and_counts_them);
  RUN(cancel_stop_returns_queued_tasks_and_drains);
  RUN(idle_spin_backs_off_after_pauses_and_returns_for_bursts);
  RUN(claims_while_another_thread_runs_leave_the_spin_alone);
  RUN(a_burst_wakes_threads_one_at_a_time_yet_reaches_them_all);
  return check_done();
}
