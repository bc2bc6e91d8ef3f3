/* A task's start time, read from another thread while the task starts: a
 * thread that polls a task's status and start time never sees it STARTED
 * (or COMPLETED) without its start time, nor a start time earlier than its
 * queueing time. The executor stamps the time before the status that
 * publishes it; the other way round, a poller could read the status before
 * the stamp (a start time of 0), and the two threads' accesses to the time
 * were a data race (TSan reported it). Each task waits until the poller
 * has seen it STARTED, so every round checks a running task. */
#include <sched.h>
#include <stdatomic.h>

#include "gate.h"

#define ROUNDS 2000

typedef struct {
  atomic_bool seen; /* the poller has seen the task STARTED */
} probe_t;

/* Returns once the poller has seen this task run (or after a generous
 * bound: the poller then fails on its own check). */
static json_t *wait_to_be_seen(ct_task_t *self, void *arg) {
  (void)self;
  probe_t *probe = arg;
  double give_up = ct_now() + WAIT_BOUND_S;
  while (!atomic_load(&probe->seen) && ct_now() < give_up)
    sched_yield();
  return NULL;
}

/* Poll t from its submission to its end; t runs wait_to_be_seen(probe). */
static void poll_until_completed(ct_task_t *t, probe_t *probe) {
  double queued = ct_task_time_queued(t);
  CHECK(queued > 0);
  double give_up = ct_now() + WAIT_BOUND_S;
  for (;;) {
    ct_task_status_t status = ct_task_status(t);
    double started = ct_task_time_started(t); /* read after the status */
    if (status == CT_TASK_STARTED || status == CT_TASK_COMPLETED)
      CHECK(started > 0);
    if (started != 0)
      CHECK(started >= queued);
    if (status == CT_TASK_STARTED)
      atomic_store(&probe->seen, true);
    if (status == CT_TASK_COMPLETED)
      break;
    CHECK(status == CT_TASK_QUEUED || status == CT_TASK_STARTED);
    CHECK(ct_now() < give_up);
  }
  CHECK(atomic_load(&probe->seen));
}

TEST(a_pool_task_is_never_seen_started_without_its_start_time) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  for (int i = 0; i < ROUNDS; i++) {
    probe_t probe = {false};
    ct_task_t *t = submit(sup, wait_to_be_seen, &probe, CT_PRIORITY_NORMAL);
    poll_until_completed(t, &probe);
    CHECK_OK(ct_task_wait(t, -1)); /* the callback side is done with probe */
    ct_task_unref(t);
  }
  stop_and_free(sup);
}

int main(void) {
  RUN(a_pool_task_is_never_seen_started_without_its_start_time);
  return check_done();
}
