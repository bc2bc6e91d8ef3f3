/* The process executor: a worker's runs as process tasks in the
 * supervisor's process pool (atasker's multiprocessing executors).
 *
 * The worker keeps its kind (queue, event, interval); only where a run
 * executes changes. submit(), under the worker's lock, takes the run's item
 * or trigger at once, builds the run's JSON arguments and submits one
 * process task through ct__sup_process_task(); if that fails, the item goes
 * back to its place (ops->untake) and the common code stops the worker,
 * which hands it back. The run counts as executing (`in_run`) from then
 * until its result arrives in process_done(), on the supervisor's loop
 * thread (or the ctasker loop that submitted it), which calls the user's
 * process_result hook without the lock, then ends the run as the thread
 * executor's run_done does: clear inflight, kick the next run, end a
 * pending stop. So at most one run is in flight per worker.
 *
 * References: each process task in flight holds one on the worker.
 */
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "ctasker/result.h"
#include "process/process-registry.h"
#include "workers/worker-internal.h"

/* The run's arguments as a new object, or NULL (out of memory). The queue
 * item is borrowed: it stays the run's until the submission succeeded. */
static json_t *run_args(ct_worker_t *w, const ct_worker_run_t *run) {
  json_t *start_args = w->args ? (json_t *)w->args : json_null();
  json_t *args = json_pack("{s:s, s:O}", "worker", w->name, "args", start_args);
  int rc = args ? 0 : -1;
  if (rc == 0 && w->kind == CT_WORKER_QUEUE) {
    rc = json_object_set(args, "item", (json_t *)run->item);
    rc |= json_object_set_new(args, "priority", json_integer(run->item_priority));
  }
  if (rc == 0 && w->kind == CT_WORKER_INTERVAL)
    rc = json_object_set_new(args, "scheduled", json_real(run->scheduled));
  if (rc != 0) {
    json_decref(args);
    return NULL;
  }
  return args;
}

/* Loop thread, lock not held: the user's verdict on a run's result. */
static int judge(ct_worker_t *w, ct_task_t *t, bool failed) {
  if (!w->process_result)
    return failed ? CT_WORKER_FAILED : CT_WORKER_CONTINUE;
  ct_worker_t *outer = ct__worker_current;
  ct__worker_current = w; /* a stop that waits from the hook is a deadlock */
  int outcome = w->process_result(w, t, ct_task_result(t), w->result_data);
  ct__worker_current = outer;
  return outcome;
}

/* The run's process task is terminal: completed with the child's result or
 * an error result, or canceled by a supervisor stop. */
static void process_done(ct_task_t *t, void *data) {
  ct_worker_t *w = data;
  bool failed = ct_task_failed(t);
  int outcome = judge(w, t, failed);
  bool fail_stop = outcome == CT_WORKER_FAIL_STOP;
  json_t *kept = NULL;
  if (outcome == CT_WORKER_FAILED || fail_stop)
    kept = ct__worker_report(w, failed ? json_incref(ct_task_result(t)) : NULL, fail_stop);
  pthread_mutex_lock(&w->lock);
  w->inflight = w->in_run = false;
  if (failed || outcome == CT_WORKER_FAILED || fail_stop)
    w->failures++;
  if (w->ops->after_run)
    w->ops->after_run(w, ct__now());
  if (fail_stop)
    ct__worker_fail_stop(w, 1, kept);
  ct__worker_run_ended(w, outcome == CT_WORKER_STOP || ct_task_status(t) == CT_TASK_CANCELED);
}

static int submit_call(ct_worker_t *w, const json_t *args) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.name = w->name;
  o.priority = w->priority;
  o.on_done = process_done;
  o.done_data = w;
  ct__worker_ref(w);
  int rc = ct__sup_process_task(w->sup, w->process, args, &o, NULL);
  if (rc != 0)
    atomic_fetch_sub(&w->refs, 1); /* the owner still holds one */
  return rc;
}

static int process_submit(ct_worker_t *w) {
  ct_worker_run_t run = {.worker = w, .name = w->name, .data = w->data, .args = w->args};
  w->ops->take(w, &run);
  json_t *args = run_args(w, &run);
  int rc = args ? submit_call(w, args) : CT_ENOMEM;
  json_decref(args);
  if (rc != 0) {
    if (w->ops->untake)
      w->ops->untake(w, &run);
    return rc;
  }
  json_decref(run.item); /* encoded into the call: the child has its copy */
  w->inflight = w->in_run = true;
  w->runs++;
  w->last_run = ct__now();
  return 0;
}

static int process_check_start(ct_worker_t *w) {
  return atomic_load(&w->sup->procpool) ? 0
                                        : ct__sup_refuse_no_procpool(w->sup, "ct_worker_start");
}

static const ct__worker_exec_t process_exec = {
    .check_start = process_check_start,
    .submit = process_submit,
};

int ct__worker_process_setup(ct_worker_t *w, const ct_worker_opts_t *o) {
  void *data;
  if (w->kind == CT_WORKER_BACKGROUND)
    return CT_ENOTSUP;
  if (!ct__process_lookup(o->process, &data)) {
    ct__sup_log(w->sup, CT_LOG_ERROR,
                "ctasker: ct_worker_new: ct_worker_opts_t.process: no process function \"%s\" "
                "is registered (ct_process_register())",
                o->process);
    return CT_ENOENT;
  }
  if (!(w->process = strdup(o->process)))
    return CT_ENOMEM;
  w->exec = &process_exec;
  w->process_result = o->process_result;
  w->result_data = o->result_data;
  return 0;
}
