/* Memory after a burst: a million fire-and-forget tasks queued behind busy
 * threads take tens of megabytes; once they have run and the pool is idle,
 * the process's resident size is back near where it started. And a queued
 * fire-and-forget task costs at most 64 bytes of task slab. Counts bytes,
 * never time (the wait for the pool to go idle is bounded generously). */
#include <stdatomic.h>
#include <unistd.h>

#include "core/task-internal.h"
#include "gate.h"

#define BURST 1000000L
/* A burst's records take 80 MB; what may stay is a few spare pages, the
 * records the submitting thread still caches, and allocator noise. */
#define SLACK_BYTES (4L << 20)

static atomic_long ran;

static json_t *count(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  atomic_fetch_add(&ran, 1); /* release: the waiter then destroys the gate */
  return NULL;
}

/* Wait at the gate, then count: once counted, the gate is not touched. */
static json_t *wait_then_count(ct_task_t *self, void *arg) {
  gate_pass(arg);
  return count(self, NULL);
}

/* Resident bytes, from /proc/self/statm. */
static long resident_bytes(void) {
  long size = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  CHECK(f);
  CHECK_EQ_INT(fscanf(f, "%ld %ld", &size, &resident), 2);
  fclose(f);
  return resident * sysconf(_SC_PAGESIZE);
}

/* Queue `n` tasks while both threads wait at a gate, then let them run;
 * returns once every one has run. */
static void burst(ct_supervisor_t *sup, long n) {
  gate_t gate;
  gate_init(&gate);
  long before = atomic_load(&ran);
  for (int i = 0; i < 2; i++)
    CHECK_OK(ct_background_task(sup, wait_then_count, &gate, NULL, NULL));
  gate_wait_arrived(&gate, 2);
  for (long i = 0; i < n; i++)
    CHECK_OK(ct_background_task(sup, count, NULL, NULL, NULL));
  gate_open(&gate);
  WAIT_FOR(atomic_load(&ran) == before + n + 2);
  gate_destroy(&gate);
}

TEST(memory_comes_back_after_a_burst_has_drained) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  burst(sup, 1000); /* threads, stacks and caches in place */
  WAIT_FOR(resident_bytes() > 0);
  long start = resident_bytes();
  burst(sup, BURST);
  long peak = resident_bytes();
  fprintf(stderr, "   resident: %ld KiB at the start, %ld KiB with the burst run\n",
          start >> 10, peak >> 10);
  WAIT_FOR(resident_bytes() <= start + SLACK_BYTES);
  fprintf(stderr, "   back to %ld KiB\n", resident_bytes() >> 10);
  stop_and_free(sup);
}

/* The slab bytes that QUEUED tasks hold, per task: the record and its
 * share of its page's header (64 of 64 KiB), nothing else on the heap. */
#define QUEUED 100000L

TEST(a_queued_fire_and_forget_task_takes_at_most_64_bytes) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  long before_ran = atomic_load(&ran);
  CHECK_OK(ct_background_task(sup, wait_then_count, &gate, NULL, NULL));
  gate_wait_arrived(&gate, 1);
  size_t before = ct__task_slab_bytes();
  for (long i = 0; i < QUEUED; i++)
    CHECK_OK(ct_background_task(sup, count, NULL, NULL, NULL));
  double per_task = (double)(ct__task_slab_bytes() - before) / QUEUED;
  fprintf(stderr, "   %.1f bytes of slab per queued task\n", per_task);
  /* Spare pages mapped before may take a few of the records: at most a
   * few bytes less per task, never more. */
  CHECK(per_task <= 64.0 * 65536 / (65536 - 64));
  gate_open(&gate);
  WAIT_FOR(atomic_load(&ran) == before_ran + QUEUED + 1);
  gate_destroy(&gate);
  stop_and_free(sup);
}

int main(void) {
  RUN(a_queued_fire_and_forget_task_takes_at_most_64_bytes);
  RUN(memory_comes_back_after_a_burst_has_drained);
  return check_done();
}
