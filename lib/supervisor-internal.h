/* The supervisor struct, shared by supervisor.c, delay.c and watchdog.c. */
#ifndef CT_LIB_SUPERVISOR_INTERNAL_H
#define CT_LIB_SUPERVISOR_INTERNAL_H

#include <stdatomic.h>

#include "ctasker/supervisor.h"
#include "loop.h"
#include "registry.h"
#include "threadpool.h"

enum ct__sup_state { CT__SUP_INIT, CT__SUP_RUNNING, CT__SUP_STOPPING, CT__SUP_STOPPED };

struct ct__delay;
struct ct__procpool;

struct ct_supervisor {
  ct_supervisor_opts_t opts;
  ct__pool_t pool;
  ct__loop_t loop;
  ct__registry_t registry;

  pthread_mutex_t state_lock; /* guards state and the loop join; taken before
                                 the pool lock, never after it */
  pthread_cond_t state_cond;  /* broadcast when state becomes STOPPED */
  atomic_int state;

  atomic_uint_fast64_t next_id;  /* ids of accepted and refused submissions */
  atomic_uint_fast64_t refused;  /* submissions that got an id but an error */
  atomic_uint_fast64_t delayed, canceled_delayed;
  /* Tasks run on loops (aloop.c), which no pool counts. */
  atomic_uint_fast64_t loop_completed, loop_failed, loop_canceled;

  atomic_int cancels_in_flight; /* stop() is still finishing canceled tasks */
  atomic_int submitting;        /* submissions between their state check and
                                   the hand-over: the loop ends only at 0 */

  /* The process pool (procpool.c), set once under state_lock, or NULL. */
  _Atomic(struct ct__procpool *) procpool;

  /* Owned by the loop thread. */
  ct__loop_kick_t stop_check; /* any thread: "look whether the stop is done" */
  struct ct__delay *delays; /* active delay timers */
  bool stop_seen;
  ev_timer watchdog;
  ct__loop_kick_t spawn_failed; /* any thread: the pool could not start a thread */
  ev_timer spawn_retry;     /* then ct__pool_retry_spawn() after spawn_backoff s */
  double spawn_backoff;

  /* Workers (worker-list.c): a list under workers_lock, a leaf lock taken
   * after a worker's lock. workers_closed: the supervisor is stopping. */
  pthread_mutex_t workers_lock;
  struct ct_worker *workers;
  bool workers_closed;

  /* Extra loops (aloop.c), under aloops_lock (a leaf). */
  pthread_mutex_t aloops_lock;
  struct ct_loop *aloops;
  int aloops_live; /* their threads that have not ended yet */
  struct ct_loop *default_loop; /* NULL: the supervisor's own */
};

/* Log through the user's callback, printf-style. */
void ct__sup_log(ct_supervisor_t *sup, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill in a task's options from the caller's (NULL: defaults). Returns 0,
 * CT_EINVAL (unknown size, priority out of range, bad delay) or CT_ENOTSUP
 * (a delay for a task on a loop). */
int ct__settle_task_options(const ct_task_opts_t *in, ct_task_opts_t *o);

/* A new task for `sup` (one reference, QUEUED, a fresh id) from settled
 * options; it gets the extra part if tracked (a handle will be handed out)
 * or if the options or the watchdog need it. NULL if out of memory. */
ct_task_t *ct__supervisor_new_task(ct_supervisor_t *sup, ct_task_fn fn, void *arg,
                                   const ct_task_opts_t *o, bool tracked);

/* With out non-NULL: register the task and hand *out a reference. The task
 * is not findable by id yet: a task found and canceled before its executor
 * holds it would be counted and finished by an executor that never had it.
 * Returns 0 or CT_ENOMEM (nothing registered). */
int ct__supervisor_track(ct_supervisor_t *sup, ct_task_t *t, ct_task_t **out);

/* After a successful hand-over: make a tracked task findable by id (out as
 * given to ct__supervisor_track; no-op when NULL). The executor may have
 * finished it already; it then stays unfindable. */
void ct__supervisor_publish(ct_task_t **out);

/* Undo a submission that was refused after ct__supervisor_new_task():
 * nothing ran, no callback; counted as refused; *out released. */
void ct__supervisor_abandon(ct_supervisor_t *sup, ct_task_t *t, ct_task_t **out);

/* Drop a terminal task from the registry (called by the task finisher). */
void ct__supervisor_forget(ct_supervisor_t *sup, ct_task_t *t);

/* delay.c: hand a DELAYED task (one reference) to the loop's timers. */
int ct__delay_start(ct_supervisor_t *sup, ct_task_t *t, double delay);
/* delay.c: a DELAYED task was canceled by another thread; free its timer. */
void ct__delay_forget(ct_supervisor_t *sup, ct_task_t *t);
/* delay.c, loop thread: cancel every delayed task (supervisor stop). */
void ct__delay_cancel_all(ct_supervisor_t *sup);

/* aloop.c: set up / free the extra loops; ask them to end (supervisor stop). */
int ct__aloops_init(ct_supervisor_t *sup);
void ct__aloops_destroy(ct_supervisor_t *sup);
void ct__aloops_stop_all(ct_supervisor_t *sup);
/* aloop.c: whether every extra loop's thread has run what it held and
 * ended (a stop completes only then). */
bool ct__aloops_ended(ct_supervisor_t *sup);
/* Whether `loop` is the supervisor's own loop or one of its extra loops:
 * the only loops its tasks and workers may run on. */
bool ct__loop_is_own(const ct_supervisor_t *sup, const ct__loop_t *loop);
/* aloop.c: run a QUEUED task on a loop thread (the loop takes the reference). */
int ct__loop_exec(ct__loop_t *loop, ct_task_t *t);

/* watchdog.c, loop thread: start / stop the timeout watchdog. */
void ct__watchdog_start(ct_supervisor_t *sup);
void ct__watchdog_stop(ct_supervisor_t *sup);

#endif
