/* ct_wait_completed(): one overall deadline for a list, timeout 0 and
 * negative, bad input, that it sleeps while it waits, that it returns
 * only after the callbacks, and that a finish wakes only its waiters. */
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gate.h"

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

TEST(bad_input) {
  CHECK_OK(ct_wait_completed(NULL, 0, -1));
  CHECK_OK(ct_wait_completed(NULL, 0, 0));
  CHECK_EQ_INT(ct_wait_completed(NULL, 2, -1), CT_EINVAL);
  CHECK_EQ_INT(ct_task_wait(NULL, -1), CT_EINVAL);
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_task_t *t = submit(sup, nothing, NULL, CT_PRIORITY_NORMAL);
  ct_task_t *list[] = {t, NULL};
  CHECK_EQ_INT(ct_wait_completed(list, 2, -1), CT_EINVAL);
  CHECK_OK(ct_wait_completed(list, 1, -1));
  ct_task_unref(t);
  stop_and_free(sup);
}

TEST(deadline_for_a_list) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *t[3];
  t[0] = submit(sup, nothing, NULL, CT_PRIORITY_NORMAL);
  t[1] = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  t[2] = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  CHECK_OK(ct_task_wait(t[0], -1));
  CHECK_EQ_INT(ct_wait_completed(t, 3, 0.05), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_wait_completed(t, 3, 0), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_task_wait(t[2], 0.01), CT_ETIMEDOUT);
  CHECK_OK(ct_wait_completed(t, 1, 0)); /* the finished one alone */
  CHECK(!ct_task_is_terminal(t[1]) && !ct_task_is_terminal(t[2]));
  gate_open(&gate);
  CHECK_OK(ct_wait_completed(t, 3, WAIT_BOUND_S));
  CHECK_OK(ct_wait_completed(t, 3, 0));
  for (int i = 0; i < 3; i++)
    ct_task_unref(t[i]);
  stop_and_free(sup);
  gate_destroy(&gate);
}

/* The one overall deadline: a list of tasks that each finish just before a
 * per-task deadline would pass still times out once for the whole list.
 * Each task finishes only when the test opens its gate; a helper thread
 * opens them one after another, each a little later than the last. */
typedef struct {
  gate_t gates[4];
  double step;
} staircase_t;

static void *open_stairs(void *arg) {
  staircase_t *s = arg;
  for (int i = 0; i < 4; i++) {
    check_sleep(s->step);
    gate_open(&s->gates[i]);
  }
  return NULL;
}

TEST(one_overall_deadline) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  staircase_t s = {.step = 0.2};
  ct_task_t *t[4];
  for (int i = 0; i < 4; i++) {
    gate_init(&s.gates[i]);
    t[i] = submit(sup, gate_task, &s.gates[i], CT_PRIORITY_NORMAL);
  }
  pthread_t th;
  CHECK(pthread_create(&th, NULL, open_stairs, &s) == 0);
  /* Each task ends within about `step` of the one before; a per-task
   * deadline of 2 steps would never pass, the overall one does. */
  int rc = ct_wait_completed(t, 4, 2 * s.step);
  pthread_join(th, NULL);
  CHECK_EQ_INT(rc, CT_ETIMEDOUT);
  CHECK_OK(ct_wait_completed(t, 4, -1));
  for (int i = 0; i < 4; i++) {
    ct_task_unref(t[i]);
    gate_destroy(&s.gates[i]);
  }
  stop_and_free(sup);
}

static double thread_cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *open_later(void *arg) {
  check_sleep(0.5);
  gate_open(arg);
  return NULL;
}

/* A negative timeout waits as long as it takes, and the waiting thread
 * sleeps meanwhile: over the half second it uses almost no CPU time, where
 * a polling loop would use about all of it (CPU time, not a duration: a
 * loaded machine only makes the wait longer and a poller costlier). */
TEST(negative_waits_forever) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *t = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, open_later, &gate) == 0);
  double cpu = thread_cpu_seconds();
  CHECK_OK(ct_task_wait(t, -1));
  CHECK(thread_cpu_seconds() - cpu < 0.1);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  pthread_join(th, NULL);
  ct_task_unref(t);
  stop_and_free(sup);
  gate_destroy(&gate);
}

/* A callback that takes its time: the waiter must not return before it. */
static void slow_callback(ct_task_t *task, void *data) {
  (void)task;
  check_sleep(0.02);
  *(volatile int *)data = 1;
}

TEST(returns_after_the_callback) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  enum { N = 8 };
  int done[N] = {0};
  ct_task_t *t[N];
  for (int i = 0; i < N; i++) {
    ct_task_opts_t o = CT_TASK_OPTS_INIT;
    o.on_done = slow_callback;
    o.done_data = &done[i];
    CHECK_OK(ct_background_task(sup, nothing, NULL, &o, &t[i]));
  }
  CHECK_OK(ct_wait_completed(t, N, -1));
  for (int i = 0; i < N; i++) {
    CHECK_EQ_INT(done[i], 1);
    ct_task_unref(t[i]);
  }
  stop_and_free(sup);
}

/* Several threads wait on overlapping lists at once. */
typedef struct {
  ct_task_t **tasks;
  size_t n;
  int rc;
} waiter_t;

static void *wait_thread(void *arg) {
  waiter_t *w = arg;
  w->rc = ct_wait_completed(w->tasks, w->n, -1);
  return NULL;
}

TEST(many_waiters) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  gate_t gate;
  gate_init(&gate);
  enum { N = 6, W = 4 };
  ct_task_t *t[N];
  for (int i = 0; i < N; i++)
    t[i] = submit(sup, gate_task, &gate, i % 2 ? CT_PRIORITY_LOW : CT_PRIORITY_HIGH);
  waiter_t w[W];
  pthread_t th[W];
  for (int i = 0; i < W; i++) {
    w[i] = (waiter_t){&t[i], (size_t)(N - i), 1};
    CHECK(pthread_create(&th[i], NULL, wait_thread, &w[i]) == 0);
  }
  gate_open(&gate);
  for (int i = 0; i < W; i++) {
    pthread_join(th[i], NULL);
    CHECK_OK(w[i].rc);
  }
  for (int i = 0; i < N; i++)
    ct_task_unref(t[i]);
  stop_and_free(sup);
  gate_destroy(&gate);
}

/* ---- a finish wakes only the waiters of its task ---- */

typedef struct {
  ct_task_t *task;
  atomic_int tid; /* set once the thread is about to wait */
  long wakes;     /* its voluntary context switches while it waited */
} lone_waiter_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long own_voluntary_switches(void) {
  struct rusage ru;
  CHECK_OK(getrusage(RUSAGE_THREAD, &ru));
  return ru.ru_nvcsw;
}

static void *wait_alone(void *arg) {
  lone_waiter_t *w = arg;
  long before = own_voluntary_switches();
  atomic_store(&w->tid, (int)gettid());
  CHECK_OK(ct_task_wait(w->task, -1));
  w->wakes = own_voluntary_switches() - before;
  return NULL;
}

/* True if thread `tid` of this process is asleep (state S). */
static bool asleep(int tid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *paren = strrchr(buf, ')');
  return paren && paren[1] == ' ' && paren[2] == 'S';
}

/* Waits (bounded) until every waiter from `first` on sleeps in its wait. */
static void wait_until_asleep(lone_waiter_t *w, int first, int n) {
  for (double until = now_s() + WAIT_BOUND_S; now_s() < until;) {
    bool all = true;
    for (int i = first; i < n && all; i++)
      all = atomic_load(&w[i].tid) != 0 && asleep(atomic_load(&w[i].tid));
    if (all)
      return;
    sched_yield();
  }
  CHECK(!"waiters fell asleep");
}

/* Four threads each wait for a task of their own; the tasks finish one at
 * a time, each after every waiter still waiting has fallen asleep. A wait
 * woken by every finish in the process sleeps again after each, so the
 * last waiter would sleep four times; woken by its own task only, once. */
TEST(a_finish_wakes_only_the_waiters_of_its_task) {
  enum { W = 4 };
  ct_supervisor_t *sup = start_supervisor(W, 0, 0);
  gate_t gate[W];
  lone_waiter_t w[W];
  pthread_t th[W];
  for (int i = 0; i < W; i++) {
    gate_init(&gate[i]);
    w[i] = (lone_waiter_t){.task = submit(sup, gate_task, &gate[i], CT_PRIORITY_NORMAL)};
    atomic_init(&w[i].tid, 0);
    CHECK(pthread_create(&th[i], NULL, wait_alone, &w[i]) == 0);
  }
  for (int i = 0; i < W; i++) {
    wait_until_asleep(w, i, W);
    gate_open(&gate[i]);
    pthread_join(th[i], NULL);
  }
  fprintf(stderr, "   the last waiter slept %ld times\n", w[W - 1].wakes);
  CHECK(w[W - 1].wakes < W - 1);
  for (int i = 0; i < W; i++) {
    ct_task_unref(w[i].task);
    gate_destroy(&gate[i]);
  }
  stop_and_free(sup);
}

/* ---- a batch wait sleeps once, not once per task ---- */

typedef struct {
  ct_task_t **tasks;
  size_t n;
  atomic_int tid; /* set once the thread is about to wait */
  long wakes;     /* its voluntary context switches while it waited */
} batch_waiter_t;

static void *wait_batch(void *arg) {
  batch_waiter_t *w = arg;
  long before = own_voluntary_switches();
  atomic_store(&w->tid, (int)gettid());
  CHECK_OK(ct_wait_completed(w->tasks, w->n, -1));
  w->wakes = own_voluntary_switches() - before;
  return NULL;
}

/* One pool thread runs a batch in submission order, each task held until
 * the waiter of the whole batch sleeps. A wait that followed the pool from
 * the front of the list would be woken by every finish and sleep again;
 * waiting for the last task first, it sleeps once. */
TEST(a_batch_wait_sleeps_once_while_its_tasks_finish_in_order) {
  enum { N = 8 };
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate[N];
  ct_task_t *t[N];
  for (int i = 0; i < N; i++) {
    gate_init(&gate[i]);
    t[i] = submit(sup, gate_task, &gate[i], CT_PRIORITY_NORMAL);
  }
  batch_waiter_t w = {.tasks = t, .n = N};
  atomic_init(&w.tid, 0);
  lone_waiter_t probe = {0}; /* only its tid: wait_until_asleep() reads it */
  pthread_t th;
  CHECK(pthread_create(&th, NULL, wait_batch, &w) == 0);
  for (int i = 0; i < N; i++) {
    while (atomic_load(&w.tid) == 0)
      sched_yield();
    atomic_store(&probe.tid, atomic_load(&w.tid));
    if (i > 0) /* the last finish is done, and woke whoever it wakes */
      CHECK_OK(ct_task_wait(t[i - 1], WAIT_BOUND_S));
    wait_until_asleep(&probe, 0, 1);
    gate_open(&gate[i]);
  }
  pthread_join(th, NULL);
  fprintf(stderr, "   the batch's waiter slept %ld times for %d tasks\n", w.wakes, N);
  CHECK(w.wakes <= 2);
  for (int i = 0; i < N; i++) {
    ct_task_unref(t[i]);
    gate_destroy(&gate[i]);
  }
  stop_and_free(sup);
}

int main(void) {
  RUN(bad_input);
  RUN(deadline_for_a_list);
  RUN(one_overall_deadline);
  RUN(negative_waits_forever);
  RUN(returns_after_the_callback);
  RUN(many_waiters);
  RUN(a_finish_wakes_only_the_waiters_of_its_task);
  RUN(a_batch_wait_sleeps_once_while_its_tasks_finish_in_order);
  return check_done();
}
