/* A delayed task canceled just as its delay passes, while it is handed to
 * its executor (the pool or a loop): the counters must not count it out
 * before they counted it in. Once the task turned QUEUED before its
 * executor counted it, and a cancel that came in between (it found the
 * task QUEUED, so it asked the executor, which counted it out): the pool's
 * `queued` and the loops' `loop_active` showed 2^64 - 1 until the hand-over
 * ended.
 *
 * The moment is reached at will: the hand-over calls,
 * ct__pool_submit_delayed() and ct__loop_exec_delayed(), are routed
 * through the wrappers below by the linker (--wrap, see tests/meson.build),
 * which, for the task under test, hold the supervisor's loop thread at a
 * gate while the test cancels the task and reads the counters.
 */
#include <stdatomic.h>

#include "exec/loop.h"
#include "exec/threadpool.h"
#include "gate.h"

bool __real_ct__pool_submit_delayed(ct__pool_t *p, ct_task_t *t);
bool __wrap_ct__pool_submit_delayed(ct__pool_t *p, ct_task_t *t);
int __real_ct__loop_exec_delayed(ct__loop_t *loop, ct_task_t *t, ct__loop_counts_t *counts);
int __wrap_ct__loop_exec_delayed(ct__loop_t *loop, ct_task_t *t, ct__loop_counts_t *counts);

static int marker; /* the argument of the task under test */
static gate_t handover;
static atomic_int handed_over; /* hand-overs of that task that have returned */

bool __wrap_ct__pool_submit_delayed(ct__pool_t *p, ct_task_t *t) {
  bool mine = t->arg == &marker;
  if (mine)
    gate_pass(&handover);
  bool queued = __real_ct__pool_submit_delayed(p, t);
  if (mine)
    atomic_fetch_add(&handed_over, 1);
  return queued;
}

int __wrap_ct__loop_exec_delayed(ct__loop_t *loop, ct_task_t *t, ct__loop_counts_t *counts) {
  bool mine = t->arg == &marker;
  if (mine)
    gate_pass(&handover);
  int rc = __real_ct__loop_exec_delayed(loop, t, counts);
  if (mine)
    atomic_fetch_add(&handed_over, 1);
  return rc;
}

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

static ct_stats_t stats(ct_supervisor_t *sup) {
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  return s;
}

/* The task is canceled once, nothing runs it, and every counter reads as
 * it should at the moment of the cancel and after the hand-over. */
static void cancel_during_the_handover(bool on_loop) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.delay = 0.001;
  if (on_loop)
    CHECK_OK(ct_loop_create(sup, "io", &o.loop));
  gate_init(&handover);
  atomic_store(&handed_over, 0);
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, nothing, &marker, &o, &t));
  gate_wait_arrived(&handover, 1);
  CHECK_OK(ct_task_cancel(t));
  ct_stats_t s = stats(sup);
  CHECK_EQ_INT(s.queued, 0);
  CHECK_EQ_INT(s.loop_active, 0);
  CHECK_EQ_INT(s.canceled, 1);
  gate_open(&handover);
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  WAIT_FOR(atomic_load(&handed_over) == 1);
  s = stats(sup);
  CHECK_EQ_INT(s.delayed, 0);
  CHECK_EQ_INT(s.queued, 0);
  CHECK_EQ_INT(s.loop_active, 0);
  CHECK_EQ_INT(s.canceled, 1);
  CHECK_EQ_INT(s.completed + s.failed, 0);
  ct_task_unref(t);
  stop_and_free(sup);
  gate_destroy(&handover);
}

TEST(a_delayed_pool_task_canceled_as_it_is_handed_over_is_never_counted_below_zero) {
  cancel_during_the_handover(false);
}

TEST(a_delayed_loop_task_canceled_as_it_is_handed_over_is_never_counted_below_zero) {
  cancel_during_the_handover(true);
}

int main(void) {
  RUN(a_delayed_pool_task_canceled_as_it_is_handed_over_is_never_counted_below_zero);
  RUN(a_delayed_loop_task_canceled_as_it_is_handed_over_is_never_counted_below_zero);
  return check_done();
}
