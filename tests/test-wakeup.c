/* Wake-ups: with one thread per class (pool_size 1), every task submitted
 * starts, however its submission falls against the only thread giving up
 * its busy slot. Each task is submitted the moment the previous one has
 * started, so the submission races with the thread finishing that task,
 * finding the intake empty and going to sleep; a wake-up lost there leaves
 * the task queued with the thread asleep, which the test sees as a task not
 * started within a generous bound.
 *
 * CT_TEST_WAKEUP_TASKS sets how many tasks run (default: 1,000,000, or
 * 100,000 under AddressSanitizer or ThreadSanitizer, which slow each round
 * trip down many times).
 */
#include <sched.h>
#include <stdatomic.h>

#include "gate.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(SANITIZED)
#define DEFAULT_TASKS 100000L
#else
#define DEFAULT_TASKS 1000000L
#endif

#define START_BOUND_S 10.0

static atomic_long started;

static json_t *note_start(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  atomic_fetch_add_explicit(&started, 1, memory_order_release);
  return NULL;
}

static long task_count(void) {
  const char *s = getenv("CT_TEST_WAKEUP_TASKS");
  long n = s ? strtol(s, NULL, 10) : DEFAULT_TASKS;
  return n > 0 ? n : DEFAULT_TASKS;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Spin (yielding) until `n` tasks have started; false after START_BOUND_S. */
static bool wait_started(long n) {
  double deadline = 0;
  for (long i = 0; atomic_load_explicit(&started, memory_order_acquire) < n; i++) {
    if ((i & 1023) != 1023)
      continue;
    sched_yield();
    if (deadline == 0)
      deadline = now_s() + START_BOUND_S;
    else if (now_s() > deadline)
      return atomic_load(&started) >= n;
  }
  return true;
}

static void report_stranded(ct_supervisor_t *sup, long i) {
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &st));
  fprintf(stderr,
          "task %ld not started after %.0f s: queued %" PRIu64 ", running %" PRIu64
          ", threads %" PRIu64 ", idle %" PRIu64 "\n",
          i, START_BOUND_S, st.queued, st.running, st.threads, st.threads_idle);
}

static void submit_then_start(int pool_size, long n) {
  ct_supervisor_t *sup = start_supervisor(pool_size, 0, 0);
  atomic_store(&started, 0);
  for (long i = 0; i < n; i++) {
    CHECK_OK(ct_background_task(sup, note_start, NULL, NULL, NULL));
    if (!wait_started(i + 1)) {
      report_stranded(sup, i);
      CHECK(!"a submitted task did not start");
    }
  }
  stop_and_free(sup);
  CHECK_EQ_INT(atomic_load(&started), n);
}

TEST(every_task_starts_with_one_thread) { submit_then_start(1, task_count()); }

int main(void) {
  RUN(every_task_starts_with_one_thread);
  return check_done();
}
