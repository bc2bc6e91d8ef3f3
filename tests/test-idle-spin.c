/* The pool's idle spin with the default options: a task submitted right
 * after the last one has returned finds a pool thread still looking for
 * work, not one that went to sleep and must be woken. Counts the process's
 * voluntary context switches (a thread that sleeps makes one), never time. */
#include <stdatomic.h>
#include <sys/resource.h>

#include "gate.h"

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

#define TASKS 2000

static json_t *raise_flag(ct_task_t *self, void *arg) {
  (void)self;
  atomic_store_explicit((atomic_int *)arg, 1, memory_order_release);
  return NULL;
}

static long voluntary_switches(void) {
  struct rusage ru;
  CHECK_OK(getrusage(RUSAGE_SELF, &ru));
  return ru.ru_nvcsw;
}

/* One pool thread, one task at a time, each submitted as soon as the last
 * has raised its flag: without a spin, every task puts the thread to sleep
 * and wakes it (a switch each, at least); with it, only the few tasks that
 * come later than a spin lasts (the submitting thread preempted, say). */
TEST(back_to_back_tasks_find_the_pool_thread_spinning_by_default) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 1;
  o.min_threads = 1;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  static atomic_int flags[TASKS];
  long before = voluntary_switches();
  for (int i = 0; i < TASKS; i++) {
    CHECK_OK(ct_background_task(sup, raise_flag, &flags[i], NULL, NULL));
    while (!atomic_load_explicit(&flags[i], memory_order_acquire))
      ;
  }
  long switches = voluntary_switches() - before;
  fprintf(stderr, "   %ld voluntary context switches for %d tasks\n", switches, TASKS);
#ifndef UNDER_TSAN
  CHECK(switches < TASKS / 4);
#else
  (void)switches; /* a submission takes longer than the spin lasts here: the
                     path runs for the race checks, the count tells nothing */
#endif
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, WAIT_BOUND_S));
  CHECK_OK(ct_supervisor_free(sup));
}

int main(void) {
  RUN(back_to_back_tasks_find_the_pool_thread_spinning_by_default);
  return check_done();
}
