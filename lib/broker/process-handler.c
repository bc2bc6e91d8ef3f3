/* Process handlers: a task name served by a registered process function
 * (process.h), run in the supervisor's process pool with a hard timeout.
 *
 * A process handler is a thread handler (ct_broker_register()) whose data
 * names the function and its timeout: it submits the process task and
 * waits for it on the pool thread the worker runs it on, so that the
 * worker's slots, leases, results, retries and statistics treat it as any
 * other task. The child's result (or its ProcessCrashed, TimeoutError or
 * UnknownTask exception) is the task's outcome. While it waits, the
 * handler watches its own cancel flag (a lost lease, a run timeout): then
 * it cancels the process task, which has the pool kill its child, and
 * ends the run as canceled once that task has ended (at once after the
 * kill), so a canceled run leaves no child working on and holds no slot
 * of the pool's past its end.
 *
 * The settings live as long as the handle: each is linked into b->procs
 * (under b->lock) and freed by ct_broker_free(), after the worker's tasks
 * have ended.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "broker-internal.h"
#include "ctasker/process.h"
#include "ctasker/result.h"
#include "ctasker/task.h"

#define WATCH_EVERY 0.05 /* seconds between looks at the cancel flag */

struct ct__bproc {
  ct__bproc_t *next;
  ct_supervisor_t *sup;
  double timeout;
  char function[];
};

static json_t *run_process(ct_task_t *self, const json_t *kwargs, void *data) {
  const ct__bproc_t *p = data;
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.timeout = p->timeout;
  ct_task_t *t = NULL;
  int rc = ct_process_task(p->sup, p->function, kwargs, &o, &t);
  if (rc != 0)
    return ct_error_new("ProcessPoolUnavailable", "process function %s cannot start: %s",
                        p->function, ct_strerror(rc));
  bool canceled = false;
  while (ct_task_wait(t, WATCH_EVERY) == CT_ETIMEDOUT)
    if (!canceled && ct_task_cancel_requested(self)) {
      ct_task_cancel(t); /* running: its child is killed, and t ends */
      canceled = true;
    }
  /* A copy, not a reference: the pool's loop thread may drop its own
   * reference to the task (and so to this result) at any time, and
   * jansson's reference counts are not to be shared between threads
   * without an order between them. */
  json_t *r = canceled ? ct_error_new("CancelledError", "process function %s: the run was canceled",
                                      p->function)
                       : json_deep_copy(ct_task_result(t));
  ct_task_unref(t);
  return r ? r : ct_error_new("MemoryError", "no memory for the result of %s", p->function);
}

int ct_broker_register_process(ct_broker_t *b, const char *name, const char *function,
                               double timeout) {
  if (!b || !function || !*function || !(timeout > 0))
    return CT_EINVAL;
  size_t len = strlen(function);
  ct__bproc_t *p = malloc(sizeof *p + len + 1);
  if (!p)
    return CT_ENOMEM;
  p->sup = b->sup;
  p->timeout = timeout;
  memcpy(p->function, function, len + 1);
  int rc = ct_broker_register(b, name, run_process, p);
  if (rc != 0) {
    free(p);
    return rc;
  }
  pthread_mutex_lock(&b->lock);
  p->next = b->procs;
  b->procs = p;
  pthread_mutex_unlock(&b->lock);
  return 0;
}

void ct__bprocs_free(ct__bproc_t *p) {
  while (p) {
    ct__bproc_t *next = p->next;
    free(p);
    p = next;
  }
}
