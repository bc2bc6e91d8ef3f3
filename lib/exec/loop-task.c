/* Running a task on a loop: the task travels in an inbox message and runs
 * on the loop thread, in posting order, as a pool thread would run it.
 *
 * No pool sees these tasks, so they are counted here, in counters the
 * caller owns (a supervisor's, shared by all its loops). A task canceled
 * while its message waits is dropped when the message runs; the cancel
 * counted itself.
 */
#include <stdlib.h>

#include "exec/loop.h"

typedef struct {
  ct__loop_msg_t msg;
  ct_task_t *task;
  ct__loop_counts_t *counts;
} ct__exec_msg_t;

static void run_task_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__exec_msg_t *m = (ct__exec_msg_t *)msg;
  ct_task_t *t = m->task;
  ct__loop_counts_t *counts = m->counts;
  free(m);
  if (!ct__task_try_start(t)) {
    ct_task_unref(t); /* canceled while it waited in the inbox */
    return;
  }
  bool failed = ct__task_run_and_release(t, NULL);
  atomic_fetch_add(failed ? &counts->failed : &counts->completed, 1);
}

/* Post the task; nothing is taken on failure. */
static int post_task(ct__loop_t *loop, ct_task_t *t, ct__loop_counts_t *counts) {
  ct__exec_msg_t *m = malloc(sizeof *m);
  if (!m)
    return CT_ENOMEM;
  m->msg.run = run_task_on_loop;
  m->task = t;
  m->counts = counts;
  atomic_fetch_or(&t->flags, CT__F_ON_LOOP);
  int rc = ct__loop_post(loop, &m->msg);
  if (rc != 0)
    free(m);
  return rc;
}

int ct__loop_exec(ct__loop_t *loop, ct_task_t *t, ct__loop_counts_t *counts) {
  atomic_fetch_add(&counts->accepted, 1);
  int rc = post_task(loop, t, counts);
  if (rc != 0)
    atomic_fetch_sub(&counts->accepted, 1);
  return rc;
}

int ct__loop_exec_delayed(ct__loop_t *loop, ct_task_t *t, ct__loop_counts_t *counts) {
  atomic_fetch_add(&counts->accepted, 1);
  if (!ct__task_try_queue_delayed(t)) {
    atomic_fetch_sub(&counts->accepted, 1);
    return CT_EALREADY;
  }
  t->link = NULL; /* it held the delay's record */
  return post_task(loop, t, counts);
}

bool ct__loop_cancel_queued(ct__loop_counts_t *counts, ct_task_t *t) {
  if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_CANCELED))
    return false;
  atomic_fetch_add(&counts->canceled, 1);
  return true;
}
