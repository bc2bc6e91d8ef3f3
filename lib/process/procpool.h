/* The supervisor's process pool (parent side). See ctasker/process.h for
 * the contract and procpool.c for the design. */
#ifndef CT_LIB_PROCPOOL_H
#define CT_LIB_PROCPOOL_H

#include "ctasker/process.h"
#include "ctasker/supervisor.h"

typedef struct ct__procpool ct__procpool_t;

/* Internal entry point for executors (worker process executors): submit a
 * call of the process function `name` with `args` (borrowed). The task
 * completes like any process task: opts->on_done is the completion hook,
 * run on the supervisor's loop thread, or on the submitting loop when
 * called from another loop of the same supervisor (a loop of another
 * supervisor may be freed first). Same returns as ct_process_task(). */
int ct__procpool_submit(ct_supervisor_t *sup, const char *name, const json_t *args,
                        const ct_task_opts_t *opts, ct_task_t **out);

/* Supervisor hooks. All accept a NULL pool. */

/* Under the supervisor's state_lock, as the supervisor begins stopping:
 * refuse new tasks; with cancel_queued, CAS every queued task to CANCELED
 * and return them as a list (through ->link, one reference each) for the
 * caller to finish; then let the loop wind the pool down. */
ct_task_t *ct__procpool_stop_begin(ct__procpool_t *pool, bool cancel_queued);

/* ct__procpool_stop_begin(), its list appended to `list`. */
ct_task_t *ct__procpool_stop_append(ct_task_t *list, ct__procpool_t *pool, bool cancel_queued);

/* True once the pool has stopped: children and fork server reaped. */
bool ct__procpool_stopped(ct__procpool_t *pool);

/* CAS a QUEUED process task to CANCELED (ct_task_cancel). */
bool ct__procpool_cancel_queued(ct__procpool_t *pool, ct_task_t *t);

/* Add the pool's counters into *out (submitted, queued, running, ...). */
void ct__procpool_add_stats(ct__procpool_t *pool, ct_stats_t *out);

/* The pool's settings and counters as a new JSON object, or NULL. */
json_t *ct__procpool_stats_json(ct__procpool_t *pool);

/* Free the pool. If its loop never ran, first end the fork server (and so
 * the children) and reap it. Called by ct_supervisor_free(). */
void ct__procpool_free(ct__procpool_t *pool);

#endif
