/* The thread executor: each run task of a worker is one
 * ct_background_task() at the worker's priority, on a pool thread or on
 * the worker's loop, making up to ops->batch runs (one on a loop, which
 * must not be held up). Its completion callback, also called when a
 * supervisor stop cancels it, ends the run task.
 */
#include "workers/worker-internal.h"

static json_t *run_task(ct_task_t *self, void *arg) {
  ct_worker_t *w = arg;
  ct_worker_t *outer = ct__worker_current;
  ct__worker_current = w; /* the runs, and the on_drop calls for what they
                             hand back: this task holds `inflight`, so a
                             waiting stop from them would wait for itself */
  ct__worker_run_batch(w, self, w->loop ? 1 : w->ops->batch);
  ct__worker_hand_back_and_report(w);
  ct__worker_current = outer;
  return NULL;
}

/* The run task is terminal (completed, or canceled by a supervisor stop). */
static void run_done(ct_task_t *t, void *data) {
  ct_worker_t *w = data;
  pthread_mutex_lock(&w->lock);
  w->inflight = false;
  ct__worker_run_ended(w, ct_task_status(t) == CT_TASK_CANCELED);
}

static int thread_submit(ct_worker_t *w) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.name = w->name;
  o.priority = w->priority;
  o.on_done = run_done;
  o.done_data = w;
  o.loop = w->loop; /* the executor: a pool thread, or a loop */
  ct__worker_ref(w);
  int rc = ct_background_task(w->sup, run_task, w, &o, NULL);
  if (rc == 0)
    w->inflight = true;
  else
    atomic_fetch_sub(&w->refs, 1); /* the owner still holds one */
  return rc;
}

/* An extra loop that was asked to stop, or has ended, refuses every run
 * from now on: a worker started there would be RUNNING and never run. */
static int thread_check_start(ct_worker_t *w) {
  ct__loop_t *loop = w->loop;
  if (!loop)
    return 0;
  pthread_mutex_lock(&loop->inbox_lock);
  bool ended = loop->closed || atomic_load(&loop->quit_posted);
  pthread_mutex_unlock(&loop->inbox_lock);
  return ended ? CT_ESHUTDOWN : 0;
}

const ct__worker_exec_t ct__thread_exec = {.check_start = thread_check_start,
                                           .submit = thread_submit};
