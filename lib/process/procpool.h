/* The process pool engine (parent side). See ctasker/process.h for the
 * contract users see and procpool.c for the design. It knows tasks, the run
 * queue and the loop it is given, and nothing of supervisors: the layer
 * above fills in its config and makes the public calls
 * (supervisor/process.c). */
#ifndef CT_LIB_PROCPOOL_H
#define CT_LIB_PROCPOOL_H

#include "base/opts.h"
#include "core/task-internal.h"
#include "ctasker/process.h"
#include "exec/loop.h"

typedef struct ct__procpool ct__procpool_t;

/* What the layer above gives the pool. */
typedef struct ct__procpool_cfg {
  /* The loop whose thread owns the pool's sockets, timers and children;
   * it must outlive the pool. */
  ct__loop_t *loop;
  ct_log_fn log; /* NULL: no logging */
  void *log_data;
  /* On the loop thread, no lock held, once the pool has stopped (children
   * and fork server reaped). */
  void (*on_stopped)(void *data);
  void *data;
} ct__procpool_cfg_t;

/* Copy the caller's options (NULL: defaults) and check them through c
 * (base/opts.h: each bad field is logged). Returns 0 or CT_EINVAL. */
int ct__procpool_read_options(ct__opts_check_t *c, const ct_process_pool_opts_t *in,
                              ct_process_pool_opts_t *o);

/* A new pool with checked options, not started; NULL if out of memory. */
ct__procpool_t *ct__procpool_new(const ct_process_pool_opts_t *o, const ct__procpool_cfg_t *cfg);

/* Start the fork server and have cfg.loop set the pool up (its thread may
 * not run yet). Returns 0 or a CT_E* code (nothing left running; the pool
 * is still the caller's to free). */
int ct__procpool_start(ct__procpool_t *pool);

/* Prepare a task with its id set to call the process function `name` with
 * `args` (borrowed): the request is encoded now and waits in the task. The
 * task is finished on the pool's loop, or on `reply_loop` if not NULL (a
 * loop that lives as long as the pool). `timeout`: seconds it may run in
 * its child; 0: the pool's task_timeout; CT__SECONDS_FOREVER or more: no
 * bound. Returns 0, or CT_EINVAL (args too big or not encodable), CT_ENOMEM
 * (nothing prepared). */
int ct__procpool_prepare(ct__procpool_t *pool, ct_task_t *t, const char *name,
                         const json_t *args, ct__loop_t *reply_loop, double timeout);

/* Free the call a prepared task carries that never reached the pool's
 * queue (a delayed task canceled, a refused submission). */
void ct__procpool_release_call(ct_task_t *t);

/* ct__procpool_prepare(), then queue the QUEUED task. Returns 0 (the pool
 * holds the caller's reference) or an error of either step, CT_ESHUTDOWN
 * when the pool is stopping (nothing kept). */
int ct__procpool_submit(ct__procpool_t *pool, ct_task_t *t, const char *name,
                        const json_t *args, ct__loop_t *reply_loop, double timeout);

/* Queue a prepared DELAYED task whose delay has passed: DELAYED -> QUEUED
 * under the pool's lock, so a cancel finds it either still DELAYED or in
 * the queue. Returns 0 (the pool holds the caller's reference), CT_ESHUTDOWN
 * (the pool is stopping: the task is still DELAYED) or CT_EALREADY (it was
 * canceled). */
int ct__procpool_enqueue_delayed(ct__procpool_t *pool, ct_task_t *t);

/* The calls below accept a NULL pool. */

/* Refuse new tasks; with cancel_queued, CAS every queued task to CANCELED
 * and return them as a list (through ->link, one reference each) for the
 * caller to finish; then let the loop wind the pool down. */
ct_task_t *ct__procpool_stop_begin(ct__procpool_t *pool, bool cancel_queued);

/* ct__procpool_stop_begin(), its list appended to `list`. */
ct_task_t *ct__procpool_stop_append(ct_task_t *list, ct__procpool_t *pool, bool cancel_queued);

/* Wait until the pool has stopped, at most `timeout` seconds (valid;
 * negative: no bound). Not on the pool's loop thread. Returns 0 or
 * CT_ETIMEDOUT. The pool must not be NULL. */
int ct__procpool_wait_stopped(ct__procpool_t *pool, double timeout);

/* True once the pool has stopped: children and fork server reaped. */
bool ct__procpool_stopped(ct__procpool_t *pool);

/* CAS a QUEUED process task to CANCELED (ct_task_cancel). */
bool ct__procpool_cancel_queued(ct__procpool_t *pool, ct_task_t *t);

/* A STARTED process task's cancel flag has just been set (ct_task_cancel):
 * have the loop kill its child and finish it with a CancelledError result,
 * unless it ends first. Any thread; allocates nothing, so it cannot fail. */
void ct__procpool_kill_canceled(ct__procpool_t *pool);

/* The pool's task counters, read together (all 0 for a NULL pool). */
typedef struct ct__procpool_counts {
  uint64_t queued, running, completed, failed, canceled;
} ct__procpool_counts_t;

void ct__procpool_counts(ct__procpool_t *pool, ct__procpool_counts_t *out);

/* On the pool's loop thread: what the pool is doing, in a line for a log
 * (a stop that waits long says it): its state, tasks, fork server and
 * children by state. */
void ct__procpool_describe(ct__procpool_t *pool, char *buf, size_t size);

/* The pool's settings and counters as a new JSON object, or NULL. */
json_t *ct__procpool_stats_json(ct__procpool_t *pool);

/* Free the pool. If its loop never ran, first end the fork server (and so
 * the children) and reap it. */
void ct__procpool_free(ct__procpool_t *pool);

#endif
