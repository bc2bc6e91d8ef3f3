/* Stress: several producer threads submit many tasks with random
 * priorities, some delayed, some with handles that other threads cancel at
 * random. Every task must reach exactly one terminal status, run at most
 * once (exactly once unless canceled), have its callback run exactly once,
 * the counters must add up and the registry must end empty.
 *
 * CT_STRESS_TASKS sets the number of tasks (default 300000, 100000 under
 * a sanitizer).
 */
#include <stdatomic.h>

#include "gate.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEFAULT_TASKS 100000
#else
#define DEFAULT_TASKS 300000
#endif

enum { PRODUCERS = 4, CANCELERS = 2 };
enum kind { K_HANDLE, K_CALLBACK, K_BARE };

static ct_supervisor_t *sup;
static long n_tasks;
static atomic_uchar *ran, *callbacks;
static signed char *kinds;
static _Atomic(ct_task_t *) *handles;
static atomic_long latest[PRODUCERS];
static atomic_bool producing = true;
static atomic_long progress, cancel_ok, cancel_busy, cancel_already;
static pthread_mutex_t progress_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t progress_cond = PTHREAD_COND_INITIALIZER;

static unsigned next_rand(unsigned *state) {
  *state = *state * 1103515245u + 12345u;
  return *state >> 8;
}

static void step_progress(void) {
  if (atomic_fetch_add(&progress, 1) + 1 == n_tasks) {
    pthread_mutex_lock(&progress_lock);
    pthread_cond_broadcast(&progress_cond);
    pthread_mutex_unlock(&progress_lock);
  }
}

static bool should_fail(long i) { return i % 20 == 0; }

static json_t *work(ct_task_t *self, void *arg) {
  (void)self;
  long i = (long)(intptr_t)arg;
  CHECK(atomic_fetch_add(&ran[i], 1) == 0);
  if (kinds[i] == K_BARE)
    step_progress();
  return should_fail(i) ? ct_error_new("ValueError", "task %ld", i) : json_integer(i);
}

static void done(ct_task_t *task, void *data) {
  long i = (long)(intptr_t)data;
  CHECK(atomic_fetch_add(&callbacks[i], 1) == 0);
  int status = ct_task_status(task);
  if (status == CT_TASK_CANCELED) {
    CHECK_EQ_INT(atomic_load(&ran[i]), 0);
    CHECK_EQ_STR(ct_result_error_class(ct_task_result(task)), "CancelledError");
  } else {
    CHECK_EQ_INT(status, CT_TASK_COMPLETED);
    CHECK_EQ_INT(atomic_load(&ran[i]), 1);
    CHECK_EQ_INT(ct_task_failed(task), should_fail(i));
  }
  step_progress();
}

static int random_priority(unsigned *rng) {
  if (next_rand(rng) % 1000 == 0)
    return CT_PRIORITY_CRITICAL;
  return 1 + (int)(next_rand(rng) % CT_PRIORITY_MAX);
}

static void cancel_and_count(ct_task_t *t) {
  int rc = ct_task_cancel(t);
  if (rc == 0)
    atomic_fetch_add(&cancel_ok, 1);
  else if (rc == CT_EBUSY)
    atomic_fetch_add(&cancel_busy, 1);
  else {
    CHECK_EQ_INT(rc, CT_EALREADY);
    atomic_fetch_add(&cancel_already, 1);
  }
}

/* Cancel the latest handle task of the next producer. */
static void cancel_neighbours(long p) {
  long i = atomic_load(&latest[(p + 1) % PRODUCERS]);
  ct_task_t *t = i >= 0 ? atomic_load(&handles[i]) : NULL;
  if (t)
    cancel_and_count(t);
}

static void *produce(void *arg) {
  long p = (long)(intptr_t)arg;
  unsigned rng = 17u + (unsigned)p * 7919u;
  long from = n_tasks * p / PRODUCERS, to = n_tasks * (p + 1) / PRODUCERS;
  for (long i = from; i < to; i++) {
    unsigned r = next_rand(&rng) % 10;
    kinds[i] = r < 3 ? K_HANDLE : r < 9 ? K_CALLBACK : K_BARE;
    ct_task_opts_t o = CT_TASK_OPTS_INIT;
    o.priority = random_priority(&rng);
    if (kinds[i] != K_BARE) {
      o.on_done = done;
      o.done_data = (void *)(intptr_t)i;
      if (next_rand(&rng) % 10 == 0)
        o.delay = (next_rand(&rng) % 2000) * 1e-6;
    }
    ct_task_t *t = NULL;
    CHECK_OK(ct_background_task(sup, work, (void *)(intptr_t)i, &o,
                                kinds[i] == K_HANDLE ? &t : NULL));
    if (t) {
      atomic_store(&handles[i], t);
      atomic_store(&latest[p], i);
      if (next_rand(&rng) % 4 == 0)
        cancel_neighbours(p);
    }
  }
  return NULL;
}

/* Cancel recently submitted tasks of a random producer. */
static void *cancel_some(void *arg) {
  unsigned rng = 99u + (unsigned)(intptr_t)arg;
  while (atomic_load(&producing)) {
    long p = (long)(next_rand(&rng) % PRODUCERS);
    long i = atomic_load(&latest[p]) - (long)(next_rand(&rng) % 64);
    ct_task_t *t = i >= 0 ? atomic_load(&handles[i]) : NULL;
    if (!t) {
      sched_yield();
      continue;
    }
    cancel_and_count(t);
  }
  return NULL;
}

static void wait_progress(void) {
  pthread_mutex_lock(&progress_lock);
  HELPER_WAIT_UNTIL(&progress_cond, &progress_lock, atomic_load(&progress) == n_tasks);
  pthread_mutex_unlock(&progress_lock);
}

TEST(many_tasks_nothing_lost) {
  const char *env = getenv("CT_STRESS_TASKS");
  n_tasks = env ? atol(env) : DEFAULT_TASKS;
  CHECK(n_tasks >= PRODUCERS);
  ran = calloc((size_t)n_tasks, sizeof *ran);
  callbacks = calloc((size_t)n_tasks, sizeof *callbacks);
  kinds = calloc((size_t)n_tasks, sizeof *kinds);
  handles = calloc((size_t)n_tasks, sizeof *handles);
  CHECK(ran && callbacks && kinds && handles);

  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 2;
  o.reserve_normal = 1;
  o.reserve_high = 1;
  o.min_threads = 1;
  o.keepalive = 0.05; /* threads above min retire and come back */
  o.idle_spin = 20e-6; /* and idle ones spin before they sleep */
  CHECK_OK(ct_supervisor_new(&o, &sup));
  CHECK_OK(ct_supervisor_start(sup));

  double start = ct_now();
  pthread_t producers[PRODUCERS], cancelers[CANCELERS];
  for (long p = 0; p < PRODUCERS; p++)
    CHECK(pthread_create(&producers[p], NULL, produce, (void *)(intptr_t)p) == 0);
  for (long c = 0; c < CANCELERS; c++)
    CHECK(pthread_create(&cancelers[c], NULL, cancel_some, (void *)(intptr_t)c) == 0);
  for (int p = 0; p < PRODUCERS; p++)
    pthread_join(producers[p], NULL);
  atomic_store(&producing, false);
  for (int c = 0; c < CANCELERS; c++)
    pthread_join(cancelers[c], NULL);
  wait_progress();
  fprintf(stderr, "%ld tasks in %.2f s; cancel: %ld canceled, %ld running, %ld finished\n",
          n_tasks, ct_now() - start, atomic_load(&cancel_ok), atomic_load(&cancel_busy),
          atomic_load(&cancel_already));

  long expect_canceled = 0, expect_failed = 0, expect_completed = 0;
  for (long i = 0; i < n_tasks; i++) {
    ct_task_t *t = atomic_load(&handles[i]);
    if (t) {
      /* Progress is counted inside the callbacks, so the last ones may not
       * have returned yet: the wait ends once they have. */
      CHECK_OK(ct_task_wait(t, 60));
      CHECK(ct_task_is_terminal(t));
      CHECK_EQ_INT(ct_task_status(t) == CT_TASK_CANCELED, ran[i] == 0);
    }
    if (kinds[i] == K_BARE)
      CHECK_EQ_INT(ran[i], 1);
    else
      CHECK_EQ_INT(callbacks[i], 1);
    if (ran[i] == 0)
      expect_canceled++;
    else if (should_fail(i))
      expect_failed++;
    else
      expect_completed++;
  }
  CHECK_EQ_INT(expect_canceled, atomic_load(&cancel_ok));
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);

  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.submitted, n_tasks);
  CHECK_EQ_INT(st.completed, expect_completed);
  CHECK_EQ_INT(st.failed, expect_failed);
  CHECK_EQ_INT(st.canceled, expect_canceled);
  CHECK_EQ_INT(st.queued + st.delayed + st.running + st.threads, 0);
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  CHECK_OK(ct_supervisor_free(sup));

  for (long i = 0; i < n_tasks; i++)
    ct_task_unref(atomic_load(&handles[i]));
  free(ran);
  free(callbacks);
  free(kinds);
  free(handles);
}

int main(void) {
  RUN(many_tasks_nothing_lost);
  return check_done();
}
