/* Background workers: run back to back while RUNNING.
 *
 * Without a loop, each start runs on a thread of its own (the supervisor's
 * threads.c: outside the pool and its caps, signals blocked, named after
 * the worker), as atasker starts a background worker "in a separate thread
 * instantly": background workers never hold a pool thread, so they cannot
 * starve the tasks and the other workers' runs. The thread is this
 * executor's run task: it holds `inflight` from its start to its end, makes
 * every run of the start and ends when the worker leaves RUNNING. A thread
 * that cannot be started fails the start (its error, logged).
 *
 * On a loop each run is its own message (thread-exec.c), so the loop keeps
 * serving its other events.
 */
#include <stdint.h>

#include "workers/worker-internal.h"

static bool background_has_work(ct_worker_t *w) {
  return atomic_load(&w->state) == CT_WORKER_RUNNING;
}

static void background_take(ct_worker_t *w, ct_worker_run_t *run) {
  (void)w;
  (void)run;
}

/* The worker's own thread: every run of this start, then the end of its
 * "run task", as thread-exec.c's completion callback does it. */
static void own_thread_main(void *arg) {
  ct_worker_t *w = arg;
  ct__worker_current = w; /* a waiting stop from a run would wait for itself */
  ct__worker_run_batch(w, NULL, SIZE_MAX);
  ct__worker_hand_back_and_report(w);
  pthread_mutex_lock(&w->lock);
  w->inflight = false;
  ct__worker_run_ended(w, false);
  ct__worker_current = NULL;
}

static int own_thread_submit(ct_worker_t *w) {
  ct__worker_ref(w); /* the thread's, dropped by ct__worker_run_ended() */
  int rc = ct__sup_thread_start(w->sup, w->name, own_thread_main, w);
  if (rc == 0)
    w->inflight = true;
  else
    atomic_fetch_sub(&w->refs, 1); /* the owner still holds one */
  return rc;
}

static const ct__worker_exec_t own_thread_exec = {.submit = own_thread_submit};

static int background_setup(ct_worker_t *w, const ct_worker_opts_t *o) {
  if (!o->loop && !o->process)
    w->exec = &own_thread_exec;
  return 0;
}

const ct__worker_ops_t ct__background_ops = {
    .kind_name = "background",
    .size = sizeof(struct ct_worker),
    .batch = SIZE_MAX,
    .setup = background_setup,
    .has_work = background_has_work,
    .take = background_take,
};
