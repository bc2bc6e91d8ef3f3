/* The common worker struct and the table of operations each kind fills.
 *
 * A kind's struct embeds struct ct_worker first. Every operation below is
 * called with the worker's lock held unless it says otherwise; none may
 * block or call user code.
 */
#ifndef CT_LIB_WORKER_INTERNAL_H
#define CT_LIB_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "ctasker/worker.h"
#include "supervisor/supervisor-internal.h"

typedef struct ct__worker_ops {
  const char *kind_name;
  size_t size;            /* the kind's struct, base first */
  size_t batch;           /* runs one pool task may make in a row */
  /* At new, lock not held: check and copy the kind's options. */
  int (*setup)(ct_worker_t *w, const ct_worker_opts_t *o);
  /* A start: check and apply the start-time overrides. Returns 0 or CT_EINVAL. */
  int (*configure)(ct_worker_t *w, const ct_worker_start_opts_t *o);
  /* The state just became RUNNING. Returns 0 or a CT_E* code (start fails). */
  int (*start)(ct_worker_t *w);
  /* Whether a run should start now (the state allows one). */
  bool (*has_work)(ct_worker_t *w);
  /* A run starts: consume its trigger or item into *run. */
  void (*take)(ct_worker_t *w, ct_worker_run_t *run);
  /* Optional, after take: wait until the run is due (the lock may be
   * released meanwhile). Returns false if the worker stopped while it
   * waited: the run is then skipped. */
  bool (*await_due)(ct_worker_t *w, ct_worker_run_t *run);
  /* A run ended at `ended` (the worker's task is still in flight). */
  void (*after_run)(ct_worker_t *w, double ended);
  /* The state just left RUNNING. */
  void (*stop)(ct_worker_t *w);
  /* Whether nothing of this kind is left on another thread (a timer). */
  bool (*idle)(ct_worker_t *w);
  /* Lock NOT held: while the worker is dropping and not running, hand
   * its pending items back (on_drop), one at a time. */
  void (*hand_back)(ct_worker_t *w);
  /* Lock held, optional: put back what take() consumed for a run that
   * could not be submitted (the process executor), so nothing is lost. */
  void (*untake)(ct_worker_t *w, ct_worker_run_t *run);
  /* Number of pending items. */
  size_t (*pending)(ct_worker_t *w);
  /* At free, lock not held: release the kind's resources; also when
   * ct_worker_new() fails after setup was called (setup may have failed
   * part way), never when it fails before. */
  void (*destroy)(ct_worker_t *w);
} ct__worker_ops_t;

/* Where runs execute. Both functions are called with the worker's lock held. */
typedef struct ct__worker_exec {
  /* At start: whether runs can execute now. Returns 0 or a CT_E* code. */
  int (*check_start)(ct_worker_t *w);
  /* Submit one run task (the worker may run, has work, nothing in flight).
   * Returns 0 (the executor set `inflight`) or a CT_E* code. */
  int (*submit)(ct_worker_t *w);
} ct__worker_exec_t;

/* A worker's end hook: its state became STOPPED or FORCE_STOPPED. */
typedef void (*ct__worker_end_fn)(struct ct_worker *w);

struct ct_worker {
  const ct__worker_ops_t *ops;
  const ct__worker_exec_t *exec;
  ct_supervisor_t *sup;
  ct_worker_kind_t kind;
  ct_worker_fn fn;
  atomic_uint refs;        /* the owner's, one per task or loop message in flight */
  ct__sup_part_t part;     /* attached to its supervisor (part.c) */

  pthread_mutex_t lock;    /* guards everything below (but what says
                              otherwise); taken before the supervisor's
                              parts lock, the pools', the handle table's
                              grow lock and a loop's (docs/threading.md),
                              never after */
  pthread_cond_t cond;     /* broadcast when the state leaves RUNNING,
                              becomes final and its end is reported */
  atomic_int state;
  char *base_name;         /* as created */
  char *_Atomic name;      /* this start's: base_name or one of `names`;
                              read without the lock by ct_worker_name() */
  char **names;            /* every override name a start has used, kept
                              until the worker is freed, so that a name
                              once returned stays valid while it lives */
  size_t n_names;
  int base_priority, priority;
  void *base_data, *data, *args;
  ct_worker_error_fn on_error;
  void *error_data;
  ct_loop_t *loop;         /* executor loop, or NULL for pool threads */
  bool inflight;           /* a run task is queued or running */
  bool in_run;             /* the run function is executing */
  bool wanted;             /* event/interval: a run was asked for */
  bool dropping;           /* pending items go back, not run */
  bool freed;              /* the owner has released it: no new start */
  atomic_bool end_unreported; /* final state not yet told to on_end */
  /* Set by a group (group.c), or NULL: told of each final state by
   * ct__worker_hand_back_and_report(), no lock held. */
  _Atomic(ct__worker_end_fn) on_end;
  struct ct_worker_group *group; /* under the groups lock (group.c) */
  uint64_t runs, failures, dropped;
  double last_run;
  /* Life cycle hooks and how the last start ended. */
  ct_worker_start_fn on_start;
  ct_worker_stop_fn on_stop;
  void *hook_data;
  bool starting;           /* on_start runs: no run is queued, no stop ends */
  int end_reason, end_code; /* how this start is ending: a
                               ct_worker_end_reason (NONE: not decided) */
  json_t *end_error;       /* its failed run's error, or NULL */
  int last_reason, last_code; /* how the last start ended, kept across a
                                 restart until the next end */
  json_t *last_error;
  uint64_t ends, ends_reported; /* final states reached; those whose
                                   on_stop has returned */
  atomic_uint_fast64_t start_seq; /* order of its last start among all
                                     workers' (0: never); read by group.c */
  /* Process workers (process-exec.c); NULL/unset for the others. */
  char *process;                      /* the process function's name */
  ct_worker_result_fn process_result;
  void *result_data;
  /* Event and interval workers (signal.c): a trigger asked for from a
   * signal handler, passed on from the supervisor's loop thread. */
  atomic_uint signal_bits; /* A: CT__SIGNAL_* */
};

/* The worker whose run task (its runs and the items it hands back) or
 * process_result hook this thread executes. */
extern _Thread_local ct_worker_t *ct__worker_current;

/* Lock held: leave RUNNING (and with `drop`, hand pending items back). */
void ct__worker_begin_stop(ct_worker_t *w, bool drop);

/* Lock NOT held: report a failed run of `w` to on_error or the log;
 * `error` is stolen (NULL: a generic WorkerError). With `keep`, returns a
 * copy of the error reported (for ct__worker_fail_stop()), else NULL. */
json_t *ct__worker_report(ct_worker_t *w, json_t *error, bool keep);

/* Lock held: a run failed and asked to stop: record the end as failed with
 * `code` and `error` (stolen), then stop as CT_WORKER_STOP does. */
void ct__worker_fail_stop(ct_worker_t *w, int code, json_t *error);

/* Lock held: the worker could not `what` (a verb phrase, "queue a run")
 * for the error rc: log it and fail-stop the worker with a WorkerError. */
void ct__worker_fail_stop_for(ct_worker_t *w, int rc, const char *what);

/* process-exec.c: at new, lock not held: check the process options and
 * set w->exec and the process fields. Returns 0 or a CT_E* code. */
int ct__worker_process_setup(ct_worker_t *w, const ct_worker_opts_t *o);

/* Take / drop a reference; the last one frees the worker. */
void ct__worker_ref(ct_worker_t *w);
void ct__worker_unref(ct_worker_t *w);

/* Lock held: submit a run task if the worker may and should run now.
 * Returns 0 or the submission's error (the worker is then stopping). */
int ct__worker_kick(ct_worker_t *w);

/* Lock held: the kind's background activity has ended (a timer disarmed):
 * finish a pending stop if nothing else is in flight. */
void ct__worker_end_stop_if_idle(ct_worker_t *w);

/* Post fn(w) to the supervisor's loop thread, holding a reference for it.
 * Returns 0 or CT_ESHUTDOWN / CT_ENOMEM (fn is then never called). */
int ct__worker_post(ct_worker_t *w, void (*fn)(ct_worker_t *w));

/* A message of ct__worker_post(), for a kind to keep in its worker. */
typedef struct ct__worker_msg {
  ct__loop_msg_t msg;
  ct_worker_t *w;
  void (*fn)(ct_worker_t *w);
} ct__worker_msg_t;

/* ct__worker_post() with a message the worker keeps (m), for a post that
 * must not fail for want of memory (a stop's). m must not be posted again
 * before fn has run. Returns 0 or CT_ESHUTDOWN (fn is then never called). */
int ct__worker_post_kept(ct_worker_t *w, ct__worker_msg_t *m, void (*fn)(ct_worker_t *w));

/* Lock NOT held: make up to `batch` runs while the worker may run (the
 * thread executor's run task, `self`). */
void ct__worker_run_batch(ct_worker_t *w, ct_task_t *self, size_t batch);

/* Lock held on entry, released on return: a run task of `w` has ended.
 * Stop the worker (handing pending items back) if `stop`, start the next
 * run, end a pending stop, and drop the run task's reference. */
void ct__worker_run_ended(ct_worker_t *w, bool stop);

/* Lock NOT held, after an operation that may have made the state final:
 * hand back dropped items, then report its end to its on_end hook. */
void ct__worker_hand_back_and_report(ct_worker_t *w);

/* group.c, for create.c: the owner frees w; take it out of its group. */
void ct__group_forget(ct_worker_t *w);

/* part.c: attach the worker to its supervisor as a part (its stop, its
 * statistics), or detach it (the owner frees it). */
void ct__worker_attach(ct_worker_t *w);
void ct__worker_detach(ct_worker_t *w);

/* signal.c: ct_event_worker_signal()'s marks, and the part hooks that
 * pass them on (part.c). */
enum { CT__SIGNAL_WANTED = 1u, CT__SIGNAL_FORCE = 2u };
bool ct__worker_has_signal(ct_worker_t *w);
void ct__worker_on_signal(ct_worker_t *w);
/* A stop begins, or a start: a mark the loop thread has not passed on yet
 * belongs to the start that ends (or ended): drop it, with the warning a
 * trigger after the stop gets. Any thread. */
void ct__worker_drop_signal(ct_worker_t *w);

extern const ct__worker_exec_t ct__thread_exec; /* thread-exec.c */
extern const ct__worker_ops_t ct__background_ops, ct__queue_ops, ct__event_ops,
    ct__interval_ops;

#endif
