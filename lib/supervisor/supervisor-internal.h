/* The supervisor struct, shared by the files of lib/supervisor/. */
#ifndef CT_LIB_SUPERVISOR_INTERNAL_H
#define CT_LIB_SUPERVISOR_INTERNAL_H

#include <stdatomic.h>

#include "base/list.h"
#include "base/opts.h"
#include "ctasker/supervisor.h"
#include "exec/loop.h"
#include "core/handles.h"
#include "exec/threadpool.h"

enum ct__sup_state { CT__SUP_INIT, CT__SUP_RUNNING, CT__SUP_STOPPING, CT__SUP_STOPPED };

/* Shards of the count of submissions in flight (see `submitting`); the
 * shard is in bits 56..61 of an untracked task's id. */
#define CT__SUBMIT_SHARDS 16
#define CT__SUBMIT_SHARD_SHIFT 56
#define CT__SUBMIT_FLIGHT_BITS 16 /* see `submitting` */
#define CT__SUBMIT_BEGUN_ONE (UINT64_C(1) << CT__SUBMIT_FLIGHT_BITS)

struct ct__procpool;
struct ct__sup_part;

/* What the supervisor may do with a part attached to it (parts.c). No
 * supervisor lock is held when a hook is called. */
typedef struct ct__sup_part_ops {
  /* The supervisor stops: stop the part, without waiting. */
  void (*stop)(struct ct__sup_part *part);
  /* The part's statistics, a new JSON value (NULL: out of memory). */
  json_t *(*stats_json)(struct ct__sup_part *part);
  /* Keep the part alive across a hook call, and let go of it. */
  void (*hold)(struct ct__sup_part *part);
  void (*release)(struct ct__sup_part *part);
  /* Optional, under parts_lock (no lock, no user code): whether the part
   * was signaled (ct__sup_signal()) since on_signal last ran. */
  bool (*has_signal)(struct ct__sup_part *part);
  /* Optional, on the supervisor's loop thread, no lock held: act on it. */
  void (*on_signal)(struct ct__sup_part *part);
} ct__sup_part_ops_t;

/* Embedded in the part (a worker). */
typedef struct ct__sup_part {
  const ct__sup_part_ops_t *ops;
  ct__list_t node; /* P: in the supervisor's parts */
  bool stopped;    /* P: the supervisor's stop has handled it */
  struct ct__sup_part *signal_next; /* L: in a round of parts_signaled() */
} ct__sup_part_t;

/* Guards, as in docs/threading.md's lock table:
 *   I: set before the supervisor is started, then read-only.
 *   S: state_lock.   P: parts_lock.   N: loops_lock.
 *   A: atomic, read and written by any thread.
 *   L: the loop thread only (set up before it starts).
 * The pool, loop and handle table lock themselves. */
struct ct_supervisor {
  ct_supervisor_opts_t opts; /* I */
  ct__task_owner_t owner;    /* I: every task's; its forget hook leaves the handle table */
  ct__pool_t pool;
  ct__loop_t loop;
  ct__handles_t handles;     /* tasks with a handle, by id */

  pthread_mutex_t state_lock;
  pthread_cond_t state_cond;  /* S: broadcast when state becomes STOPPED */
  atomic_int state;           /* S for changes, A for reads */

  atomic_uint_fast64_t refused;  /* A: submissions counted in `submitting` that failed */
  atomic_uint_fast64_t delayed, canceled_delayed; /* A */
  atomic_uint_fast64_t overrun, late_returns; /* A: timed-out functions (deadline.c) */
  ct__loop_counts_t loop_counts; /* A: tasks run on loops, which no pool counts */

  atomic_int cancels_in_flight; /* A: a stop or ct_task_cancel() is finishing canceled tasks */
  /* A, counted on the submitting thread's shard (its own cache line, so
   * producers do not share one), both in one word, so that a submission
   * counts itself with one atomic add: in its low CT__SUBMIT_FLIGHT_BITS,
   * submissions between their state check and the hand-over (the loop
   * ends only when every shard has none); above them, submissions begun,
   * whose count on the shard makes the id of a task without a handle
   * (those refused before or after their task was made are in `refused`). */
  struct {
    _Alignas(64) atomic_uint_fast64_t count;
  } submitting[CT__SUBMIT_SHARDS];

  /* S to set (once), A to read: the process pool (process.c), or NULL. */
  _Atomic(struct ct__procpool *) procpool;

  ct__loop_kick_t stop_check; /* A to kick: "look whether the stop is done" */
  ct__list_t delays;        /* L: active delay timers (delay.c) */
  bool stop_seen;           /* L */
  ev_timer stop_report;     /* L: what a long stop waits for (stop-check.c) */
  double stop_report_after, stop_waited; /* L */
  ev_timer watchdog;        /* L */
  ct__loop_kick_t spawn_failed; /* A to kick: the pool could not start a thread */
  ev_timer spawn_retry;     /* L: then ct__pool_retry_spawn() after spawn_backoff s */
  double spawn_backoff;     /* L */

  /* Parts attached from above (parts.c). */
  pthread_mutex_t parts_lock;
  ct__list_t parts;  /* P */
  bool parts_closed; /* P: the supervisor is stopping its parts */

  /* Named extra loops (loops.c). */
  pthread_mutex_t loops_lock;
  ct__list_t extra_loops;       /* N: linked through ct_loop.in_owner */
  struct ct_loop *default_loop; /* N: NULL: the supervisor's own */
  int loops_live;               /* N: extra loops whose threads have not ended */
  bool loops_closed;            /* N: a stop has asked them to end: no new one */

  /* Threads of its parts' own (threads.c). */
  atomic_int own_threads; /* A: started and not yet ended; a stop waits for 0 */
  ct__loop_kick_t part_signal; /* A to kick: a part was signaled (parts.c) */
};

/* Log through the user's callback, printf-style. */
void ct__sup_log(ct_supervisor_t *sup, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* refuse.c: the refusal of `what` (e.g. "ct_background_task") because the
 * supervisor is not running: returns CT_ESHUTDOWN, and logs that it was
 * never started if so (a stop needs no line). */
int ct__sup_refuse_not_running(ct_supervisor_t *sup, const char *what);
/* refuse.c: the refusal of `what` for want of a process pool: logs it and
 * returns CT_ENOENT. */
int ct__sup_refuse_no_procpool(ct_supervisor_t *sup, const char *what);

/* A check of an options struct of `type` given to the public call `fn`,
 * whose refusals go to sup's log (base/opts.h; sup may be NULL: nowhere). */
static inline ct__opts_check_t ct__sup_opts_check(const ct_supervisor_t *sup, const char *type,
                                                  const char *fn) {
  ct__opts_check_t c = {type, fn, sup ? sup->opts.log : NULL, sup ? sup->opts.log_data : NULL, 0};
  return c;
}

/* Fill in a task's options from the caller's (NULL: defaults) for the
 * public call `fn`. Returns 0, CT_EINVAL (unknown size, priority out of
 * range, bad delay; logged through sup's log, sup may be NULL) or
 * CT_ENOTSUP (a delay for a task on a loop). */
int ct__read_task_options(ct_supervisor_t *sup, const char *fn, const ct_task_opts_t *in,
                          ct_task_opts_t *o);

/* Count a submission begun on the calling thread's shard, for a caller
 * that does not count it in flight (see `submitting`); returns the id its
 * task gets. If the submission fails, count it in `refused`. */
uint64_t ct__supervisor_begin(ct_supervisor_t *sup);

/* A new task for `sup` (one reference, QUEUED, the id its submission was
 * given: shard and count, which no handle table id ever is) from read
 * options; it gets the extra part if tracked (a handle will be handed out)
 * or if the options or the watchdog need it. NULL if out of memory. */
ct_task_t *ct__supervisor_new_task(ct_supervisor_t *sup, ct_task_fn fn, void *arg,
                                   const ct_task_opts_t *o, bool tracked, uint64_t id);

/* With out non-NULL: register the task and hand *out a reference. The task
 * is not findable by id yet: a task found and canceled before its executor
 * holds it would be counted and finished by an executor that never had it.
 * Returns 0 or CT_ENOMEM (nothing registered). */
int ct__supervisor_track(ct_supervisor_t *sup, ct_task_t *t, ct_task_t **out);

/* After a successful hand-over: make a tracked task findable by id (out as
 * given to ct__supervisor_track; no-op when NULL). The executor may have
 * finished it already; it then stays unfindable. */
void ct__supervisor_publish(ct_supervisor_t *sup, ct_task_t **out);

/* Undo a submission that was refused after ct__supervisor_new_task():
 * nothing ran, no callback; counted as refused; *out released. */
void ct__supervisor_abandon(ct_supervisor_t *sup, ct_task_t *t, ct_task_t **out);

/* process.c: submit a call of the process function `name` with `args`
 * (borrowed) to the supervisor's process pool, as ct_process_task() does
 * (the same returns); for executors (a process worker's runs). */
int ct__sup_process_task(ct_supervisor_t *sup, const char *name, const json_t *args,
                         const ct_task_opts_t *opts, ct_task_t **out);

/* delay.c: hand a DELAYED task (one reference) to the loop's timers; once
 * its delay has passed it goes to `loop` if not NULL, else to the process
 * pool if it is a process task (its call prepared), else to the pool. */
int ct__delay_start(ct_supervisor_t *sup, ct_task_t *t, double delay, ct__loop_t *loop);
/* delay.c: a DELAYED task was canceled by another thread; free its timer. */
void ct__delay_forget(ct_supervisor_t *sup, ct_task_t *t);
/* delay.c, loop thread: cancel every delayed task (supervisor stop). */
void ct__delay_cancel_all(ct_supervisor_t *sup);

/* stop-check.c: set up the stop_check kick and the report timer (before
 * the loop starts); stop the timer (as the loop ends). */
void ct__stop_check_init(ct_supervisor_t *sup);
void ct__stop_check_end(ct_supervisor_t *sup);

/* loops.c: set up / free the extra loops; ask them to end and refuse new
 * ones (supervisor stop). */
int ct__loops_init(ct_supervisor_t *sup);
void ct__loops_destroy(ct_supervisor_t *sup);
void ct__loops_stop_all(ct_supervisor_t *sup);
/* loops.c: whether every extra loop's thread has run what it held and
 * ended (a stop completes only then). */
bool ct__loops_ended(ct_supervisor_t *sup);
/* Whether `loop` is the supervisor's own loop or one of its extra loops:
 * the only loops its tasks and workers may run on. */
bool ct__loop_is_own(const ct_supervisor_t *sup, const ct__loop_t *loop);

/* parts.c. Attach a part (it stays until detached; the supervisor cannot be
 * freed meanwhile); detach it. Any thread. */
void ct__sup_attach(ct_supervisor_t *sup, ct__sup_part_t *part, const ct__sup_part_ops_t *ops);
void ct__sup_detach(ct_supervisor_t *sup, ct__sup_part_t *part);
/* Take parts_lock and say whether the supervisor runs and has not begun
 * stopping its parts; a part that starts work does so before
 * ct__sup_parts_unlock(), so the stop, which closes the list first, sees
 * it started. */
bool ct__sup_parts_lock_open(ct_supervisor_t *sup);
void ct__sup_parts_unlock(ct_supervisor_t *sup);
/* parts.c, for supervisor.c. */
int ct__sup_parts_init(ct_supervisor_t *sup);
void ct__sup_parts_destroy(ct_supervisor_t *sup);
/* Stop every part (its stop hook) and close the list to new starts. */
void ct__sup_parts_stop_all(ct_supervisor_t *sup);
/* Async-signal-safe (atomics and a write(2)): have every signaled part's
 * on_signal hook run soon on the loop thread. Any thread, a signal handler
 * included, while a part is attached. */
void ct__sup_signal(ct_supervisor_t *sup);
/* The part_signal kick's handler (loop thread). */
void ct__sup_parts_signaled(ct__loop_t *loop, ct__loop_kick_t *kick);
/* Whether any part is attached. */
bool ct__sup_parts_attached(ct_supervisor_t *sup);
/* A new JSON array of every part's statistics, or NULL. */
json_t *ct__sup_parts_json(ct_supervisor_t *sup);

/* threads.c. Run fn(arg) on a thread of its own, outside the pool and its
 * caps (signals blocked, named `name`, cut to 15 bytes, detached); the
 * supervisor's stop completes only once fn has returned. Any thread; the
 * caller is a part attached to `sup`. Returns 0; CT_ESHUTDOWN if the
 * supervisor is not running; CT_EAGAIN (logged) if no thread can be
 * started; CT_ENOMEM. On error fn is never called. */
int ct__sup_thread_start(ct_supervisor_t *sup, const char *name, void (*fn)(void *arg),
                         void *arg);
/* Whether the calling thread is one of `sup`'s own threads (threads.c). */
bool ct__sup_thread_is_own(const ct_supervisor_t *sup);
/* deadline.c: per-task timeouts and arg_free. Whether a timeout bounds a
 * thread or loop task (> 0 and below CT__SECONDS_FOREVER). */
bool ct__deadline_bounded(double timeout);
/* The size of the record a task with opts->arg_free or a bounded timeout
 * carries (ct__task_new_more()), and filling it in. */
size_t ct__deadline_size(void);
void ct__deadline_init(ct_supervisor_t *sup, ct_task_t *t, const ct_task_opts_t *o);
/* The task owner's deadline hooks (task-internal.h). */
void ct__deadline_start(ct__task_owner_t *owner, ct_task_t *t);
void ct__deadline_end(ct__task_owner_t *owner, ct_task_t *t, bool late);

/* watchdog.c, loop thread: start / stop the timeout watchdog. */
void ct__watchdog_start(ct_supervisor_t *sup);
void ct__watchdog_stop(ct_supervisor_t *sup);

#endif
