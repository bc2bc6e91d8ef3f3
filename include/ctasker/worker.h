/** @file
 * ctasker — workers: long-lived units of work with a life cycle.
 *
 * One worker type, four kinds that differ only in what triggers a run:
 *   CT_WORKER_BACKGROUND  runs back to back on a thread of its own until
 *                         stopped;
 *   CT_WORKER_QUEUE       runs once per item put with ct_queue_worker_put(),
 *                         in FIFO order or, with opts.priority_queue, in item
 *                         priority order (lower first, FIFO among equals);
 *   CT_WORKER_EVENT       runs once per ct_event_worker_trigger() (triggers
 *                         that arrive before the run starts merge into it);
 *   CT_WORKER_INTERVAL    runs on a timer: `interval` (start to start, on a
 *                         fixed grid, never overlapping) or `delay` (end to
 *                         start), plus `delay_before` before every run.
 *
 * Every run of a queue, event or interval worker is a task submitted
 * through the supervisor's run queue at the worker's priority, so
 * reservations, statistics and shutdown apply as for any task. Idle queue,
 * event and interval workers hold no thread (an
 * interval run on the pool is queued 2 ms before it is due and waits on its
 * pool thread for the exact time, so a timer wake-up and a thread wake-up
 * do not both stand between the deadline and the run). A background
 * worker runs "in a separate thread instantly", as atasker's does: each
 * start gets a thread of its own, outside the pool and its caps (signals
 * blocked, named after the worker, cut to 15 bytes), so background workers
 * never take the pool's threads from tasks and other workers; its runs are
 * no tasks (run->task_id is 0, the priority is not used, the supervisor's
 * task counters and watchdog do not see them), and a supervisor stop waits
 * for its thread to end. With opts.loop a
 * worker runs on an event loop thread instead (see loop.h): its run function
 * must then not block, and a background worker is re-queued after each run
 * instead of keeping the loop.
 *
 * Life cycle: INIT -> RUNNING -> STOPPING -> STOPPED, or FORCE_STOPPED when
 * a bounded stop gave up waiting for the current run. A stopped worker may
 * be started again. Stop is graceful: the current run finishes; a queue
 * worker's pending items are run (CT_WORKER_DRAIN) or handed back through
 * opts.on_drop (CT_WORKER_DROP), so no item is lost silently. Likewise a run
 * asked for by a ct_event_worker_trigger() that returned 0 before the stop
 * is made with CT_WORKER_DRAIN, dropped with CT_WORKER_DROP; an interval
 * worker's timer runs end with the stop.
 *
 * Process workers (atasker's multiprocessing executors): a queue, event or
 * interval worker created with opts.process and no run function. Each run
 * is one process task (process.h) that calls the registered function in a
 * pool child of the worker's supervisor; its JSON arguments are an object
 *   {"worker": name, "args": start args or null, "item": queue item,
 *    "priority": item priority, "scheduled": interval due time}
 * ("item" and "priority" for queue workers, "scheduled" for interval
 * workers), and the child function's task_id is the id of the run's task.
 * For a process worker the start args (ct_worker_start_opts_t.args) are a
 * json_t * or NULL, borrowed: keep them alive while the worker runs. Queue
 * items are JSON, put with ct_queue_worker_put_json(). The run's result
 * comes back to opts.process_result on the supervisor's loop thread; its
 * return value may stop the worker. Without the hook, error results go to
 * on_error (or the log) like failed runs. At most one run is in flight; the
 * run counts as executing from its submission to its result, so a trigger
 * meanwhile adds a run only if forced. A background worker cannot run in a
 * process (CT_ENOTSUP): it would hold a child forever.
 *
 * When the supervisor stops, every worker still running is stopped first,
 * as by ct_worker_stop(w, CT_WORKER_DROP, 0). Free every worker before the
 * supervisor (ct_supervisor_free() returns CT_EBUSY while workers exist).
 */
#ifndef CTASKER_WORKER_H
#define CTASKER_WORKER_H

#include <jansson.h>

#include "common.h"
#include "supervisor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_worker ct_worker_t; /**< A worker: opaque, owned by its creator. */
typedef struct ct_loop ct_loop_t;     /**< An event loop (loop.h). */

/** The four kinds of worker (see above). */
typedef enum ct_worker_kind {
  CT_WORKER_BACKGROUND = 1,
  CT_WORKER_QUEUE = 2,
  CT_WORKER_EVENT = 3,
  CT_WORKER_INTERVAL = 4
} ct_worker_kind_t;

/** A worker's life cycle (see above). */
typedef enum ct_worker_state {
  CT_WORKER_INIT = 0,
  CT_WORKER_RUNNING = 1,
  CT_WORKER_STOPPING = 2,       /**< the current run finishes, then STOPPED */
  CT_WORKER_STOPPED = 3,
  CT_WORKER_FORCE_STOPPED = 4   /**< a bounded stop gave up on the current run:
                                   it may still be executing; its end is
                                   ignored (C cannot kill a thread) */
} ct_worker_state_t;

/** What one run receives. Valid during the call only. */
typedef struct ct_worker_run {
  ct_worker_t *worker; /**< the worker running */
  const char *name;    /**< the worker's name for this start */
  void *data;          /**< the worker's user data */
  void *args;          /**< the start arguments (ct_worker_start_opts_t.args) */
  uint64_t task_id;    /**< id of the task this run executes as (0 for a
                          background worker's, on a thread of its own) */
  void *item;          /**< queue workers: the item (now owned by the run) */
  int item_priority;   /**< queue workers: the priority it was put with */
  double scheduled;    /**< interval workers: the time (ct_now() base) this run
                          was due; 0 for a manual trigger and other kinds */
  json_t *error;       /**< set through ct_worker_fail() */
  int exit_code;       /**< with CT_WORKER_FAIL_STOP: the end's code (0: 1) */
} ct_worker_run_t;

/** What a run returns. */
enum ct_worker_outcome {
  CT_WORKER_CONTINUE = 0, /**< keep going */
  CT_WORKER_STOP = 1,     /**< stop this worker (pending queue items are
                             handed back), as atasker's `return False` */
  CT_WORKER_FAILED = -1,  /**< this run failed: on_error is called with
                             run->error (a generic WorkerError if unset) and
                             the worker keeps going */
  CT_WORKER_FAIL_STOP = -2 /**< this run failed as CT_WORKER_FAILED (on_error
                             runs first), then the worker stops as with
                             CT_WORKER_STOP, its end reason
                             CT_WORKER_END_FAILED; see ct_worker_fail_stop() */
};

/** Why a worker's last start ended (ct_worker_last_end(), on_stop). */
typedef enum ct_worker_end_reason {
  CT_WORKER_END_NONE = 0,   /**< it has not ended since its last start */
  CT_WORKER_END_NORMAL = 1, /**< stopped: ct_worker_stop(), a run returning
                               CT_WORKER_STOP, its group, its supervisor's
                               stop; code 0 */
  CT_WORKER_END_FORCED = 2, /**< a bounded stop gave up on the current run
                               (FORCE_STOPPED); code CT_ETIMEDOUT */
  CT_WORKER_END_FAILED = 3  /**< a run returned CT_WORKER_FAIL_STOP (code: its
                               run->exit_code, 1 if it left it 0), or the
                               worker could not queue a run or, an interval
                               worker, set its next run (code: that error) */
} ct_worker_end_reason_t;

/** A worker's run function: returns a ct_worker_outcome. */
typedef int (*ct_worker_fn)(ct_worker_run_t *run);

/** Called once per failed run with the error (borrowed), on the thread that
 * ran it, as part of the run: a ct_worker_stop() that must wait returns
 * CT_EDEADLK from here, as from the run itself. */
typedef void (*ct_worker_error_fn)(ct_worker_t *w, const json_t *error, void *data);

/** Called once for every queue item that is dropped instead of run (stop
 * with CT_WORKER_DROP, a run returning CT_WORKER_STOP, a force-stop, the
 * supervisor's stop); the item is handed back to the callee. It may call
 * into its worker (items keep coming back in one loop, the stack does not
 * grow per item); on the thread of the worker's run, a ct_worker_stop()
 * that must wait returns CT_EDEADLK, as from the run. */
typedef void (*ct_worker_drop_fn)(ct_worker_t *w, void *item, void *data);

/** Process workers: called once per run with the run's result (borrowed:
 * the child's result, or an error result such as ProcessCrashed,
 * TimeoutError, UnknownTask, NotSerializable, or CancelledError for a run a
 * supervisor stop canceled) and the parent's task (borrowed). Returns
 * CT_WORKER_CONTINUE, CT_WORKER_STOP (stop the worker, as a run returning
 * it), CT_WORKER_FAILED (on_error is then called with the result if it is
 * an error, else with a generic WorkerError) or CT_WORKER_FAIL_STOP (as
 * CT_WORKER_FAILED, then the worker stops with reason failed, code 1). Runs on the supervisor's loop
 * thread (see docs/threading.md): it must not block. */
typedef int (*ct_worker_result_fn)(ct_worker_t *w, ct_task_t *task, const json_t *result,
                                   void *data);

/** Called once per start, on the thread that calls ct_worker_start(),
 * after the worker became RUNNING and before its first run is queued (runs
 * asked for meanwhile wait for it to return; so does the end of a stop, and
 * on_stop for a stop forced meanwhile). A stop or wait from it that would
 * wait for the worker's end returns CT_EDEADLK, as from a run. */
typedef void (*ct_worker_start_fn)(ct_worker_t *w, void *data);

/** Called once per end of a start (STOPPED or FORCE_STOPPED), after its
 * last run returned (for a forced end: after the bounded stop gave up; that
 * run may still execute) and its dropped items were handed back, with the
 * reason and code (as ct_worker_last_end()), on the thread that ended the
 * worker, no lock held. From here ct_worker_stop() and ct_worker_wait() on
 * this worker do not wait. A restart from another thread does not wait for
 * it (its end is then told once, after the restart's on_start may have run);
 * restart after ct_worker_wait() to keep the order. */
typedef void (*ct_worker_stop_fn)(ct_worker_t *w, ct_worker_end_reason_t reason, int code,
                                  void *data);

/** Worker options: start from CT_WORKER_OPTS_INIT. */
typedef struct ct_worker_opts {
  size_t size;                 /**< sizeof(ct_worker_opts_t), set by CT_WORKER_OPTS_INIT */
  const char *name;            /**< copied; NULL: the run function's symbol
                                  name if it has one, else "worker-N";
                                  UTF-8 (else CT_EINVAL: it is shown in JSON) */
  int priority;                /**< CT_PRIORITY_CRITICAL..CT_PRIORITY_MAX */
  void *data;                  /**< user data, given to every run */
  ct_worker_error_fn on_error; /**< NULL: failures go to the supervisor's log */
  void *error_data;            /**< given to on_error */
  /* Queue workers. */
  bool priority_queue;         /**< order items by priority, not FIFO */
  size_t max_queue;            /**< pending items at most; 0: unbounded */
  ct_worker_drop_fn on_drop;   /**< NULL: dropped items are only counted */
  void *drop_data;             /**< given to on_drop */
  /* Interval workers: exactly one of interval and delay is > 0. */
  double interval;             /**< seconds from start to start */
  double delay;                /**< seconds from the end of a run to the next start */
  double delay_before;         /**< seconds to wait before every run; >= 0 */
  /** Where runs execute: NULL, a pool thread; else this event loop. */
  ct_loop_t *loop;
  /* Process workers (see "Process workers" below). */
  const char *process;              /**< copied; the registered process function
                                       each run calls in a pool child */
  ct_worker_result_fn process_result; /**< NULL: error results go to on_error */
  void *result_data;                /**< given to process_result */
  /* Life cycle hooks (see ct_worker_start_fn, ct_worker_stop_fn). */
  ct_worker_start_fn on_start;      /**< NULL: none */
  ct_worker_stop_fn on_stop;        /**< NULL: none */
  void *hook_data;                  /**< given to on_start and on_stop */
} ct_worker_opts_t;

/** The default worker options, with size set. */
#define CT_WORKER_OPTS_INIT                                                    \
  {sizeof(ct_worker_opts_t), NULL, CT_PRIORITY_NORMAL, NULL, NULL, NULL,      \
   false, 0, NULL, NULL, 0.0, 0.0, 0.0, NULL, NULL, NULL, NULL, NULL, NULL,   \
   NULL}

/** Create a worker of `kind` (state INIT) on `sup` (NULL: the default
 * supervisor). The caller owns *out and frees it with ct_worker_free().
 * For a process worker give opts.process and a NULL fn.
 * Returns 0; CT_EINVAL for a NULL fn or out (or both fn and opts.process,
 * or opts.process with opts.loop), opts.loop of another supervisor, an
 * unknown kind, a priority out of range, an unknown opts.size, bad
 * interval timing (both or neither of interval and delay, negative, NaN or
 * infinite seconds; huge finite ones are kept; each bad field is named in
 * a line to the supervisor's log callback); CT_ENOENT if opts.process names
 * no registered process function (logged); CT_ENOTSUP for a
 * background process worker; CT_ENOMEM.
 * Thread-safety: any thread. */
CT_EXPORT int ct_worker_new(ct_supervisor_t *sup, ct_worker_kind_t kind, ct_worker_fn fn,
                            const ct_worker_opts_t *opts, ct_worker_t **out);

/** Start-time overrides (atasker's _name, _priority, _interval). */
typedef struct ct_worker_start_opts {
  size_t size;         /**< set by CT_WORKER_START_OPTS_INIT */
  void *args;          /**< given to every run of this start */
  const char *name;    /**< NULL: keep the worker's name; UTF-8 (else CT_EINVAL) */
  int priority;        /**< < 0: keep */
  bool set_data;       /**< replace the user data with `data` */
  void *data;          /**< the new user data, with set_data */
  double interval;     /**< interval workers, each < 0: keep; >= 0 replaces;
                          NaN: CT_EINVAL */
  double delay;        /**< as interval */
  double delay_before; /**< as interval */
} ct_worker_start_opts_t;

/** No overrides, with size set. */
#define CT_WORKER_START_OPTS_INIT                                              \
  {sizeof(ct_worker_start_opts_t), NULL, NULL, -1, false, NULL, -1.0, -1.0, -1.0}

/** Start (or restart) a worker. opts may be NULL.
 * Returns 0; CT_ENOENT for a process worker whose supervisor has no process
 * pool (ct_process_pool_create(); logged as such); CT_EBUSY if it is running or stopping, or force-stopped with
 * its last run still executing; CT_ESHUTDOWN if the supervisor is not
 * running (one never started also logs "not started"), or the worker's loop (opts.loop) has ended or was asked to stop;
 * CT_EINVAL for bad overrides (the worker is left as it was; each is named
 * in a line to the supervisor's log callback); CT_EAGAIN
 * if a background worker's thread cannot be started (logged; the worker
 * then ends as failed with that code, and on_start and on_stop have run);
 * CT_EMFILE
 * if an interval worker cannot have its timer for want of descriptors
 * (CT_EAGAIN for another reason; logged);
 * CT_ENOMEM. On error the worker is not running and may be started again.
 * Thread-safety: any thread. */
CT_EXPORT int ct_worker_start(ct_worker_t *w, const ct_worker_start_opts_t *opts);

/** What ct_worker_stop() does with a queue worker's pending items. */
enum ct_worker_stop_flags {
  CT_WORKER_DRAIN = 0, /**< queue workers run their pending items first */
  CT_WORKER_DROP = 1   /**< pending items are handed back through on_drop */
};

/** Stop a worker gracefully: nothing new is accepted, no new run starts
 * (except pending items with CT_WORKER_DRAIN), the current run finishes.
 * A worker on pool threads whose run task is queued behind other tasks
 * counts as running until a pool thread takes that task (which then ends
 * at once): the stop waits for it, and a bound can pass meanwhile.
 * timeout in seconds: < 0 waits until STOPPED; 0 does not wait; > 0 waits at
 * most that long, then makes the worker FORCE_STOPPED (pending items are
 * handed back) and returns CT_ETIMEDOUT; INFINITY or 1e9 and more wait as
 * < 0 does; NaN is CT_EINVAL.
 * Returns 0 once stopped and its on_stop hook has returned (or under way,
 * for timeout 0; also for a worker not running); CT_ETIMEDOUT as above (also
 * if on_stop, running on another thread, outlasts the bound); CT_EDEADLK if
 * it must wait but is called from the worker's own run or its on_start (the
 * stop is under way all the same);
 * CT_EINVAL. Thread-safety: any thread, including the worker's run. */
CT_EXPORT int ct_worker_stop(ct_worker_t *w, int flags, double timeout);

/** Free a worker that is not running. A force-stopped worker whose last run
 * still executes is released when that run ends.
 * Returns 0, CT_EBUSY if it is running or stopping (nothing is freed).
 * ct_worker_free(NULL) returns 0. Thread-safety: any thread but its own run. */
CT_EXPORT int ct_worker_free(ct_worker_t *w);

/** Queue an item for a queue worker (the item is the caller's until it is
 * run or handed back). priority is used with opts.priority_queue.
 * Returns 0; CT_ENOBUFS if max_queue items are pending; CT_ESHUTDOWN if the
 * worker is not running (never started, stopping or stopped); CT_EINVAL for
 * another kind, a process worker (use ct_queue_worker_put_json()) or a
 * priority out of range; CT_ENOMEM. On error the item stays the caller's.
 * Thread-safety: any thread. */
CT_EXPORT int ct_queue_worker_put(ct_worker_t *w, void *item, int priority);

/** Queue a JSON item for a process queue worker. On success the worker
 * steals the reference: the item goes to the child in the run's arguments,
 * or is handed back through on_drop as a json_t * the callee must
 * json_decref(). Returns as ct_queue_worker_put(), and CT_EINVAL for a NULL
 * item, an item that cannot be encoded as JSON, or a worker that is not a
 * process queue worker. On error the reference stays the caller's.
 * Thread-safety: any thread. */
CT_EXPORT int ct_queue_worker_put_json(ct_worker_t *w, json_t *item, int priority);

/** Ask an event (or interval) worker for a run. Triggers before the run
 * starts merge into it; a trigger while it runs is ignored unless `force`,
 * which queues exactly one more run. An interval worker runs at once and
 * keeps its grid. A run asked for here is made even if a CT_WORKER_DRAIN
 * stop comes before it starts (CT_WORKER_DROP drops it).
 * Returns 0; CT_ESHUTDOWN if not running; CT_EINVAL for another kind.
 * Thread-safety: any thread. */
CT_EXPORT int ct_event_worker_trigger(ct_worker_t *w, bool force);

/** Ask an event (or interval) worker for a run from a signal handler: the
 * one ctasker call that is async-signal-safe (docs/threading.md). It only
 * marks the worker and wakes the supervisor's loop thread (atomics and a
 * write(2) to an eventfd; errno is kept), which then makes the call
 * ct_event_worker_trigger(w, force) would: signals before that merge into
 * one trigger (forced if any was). A stop that comes before the loop
 * thread passes the mark on wins: the trigger is dropped and logged
 * (warning). Returns 0; CT_ESHUTDOWN if the worker is not running;
 * CT_EINVAL for NULL or another kind. The worker must not be freed while
 * a handler may still call this (block the signal, or uninstall the
 * handler, first).
 * Thread-safety: any thread; async-signal-safe. */
CT_EXPORT int ct_event_worker_signal(ct_worker_t *w, bool force);

/** Make a run fail with `error` (stolen; NULL: a generic WorkerError).
 * Returns CT_WORKER_FAILED, so a run can `return ct_worker_fail(run, e);`. */
CT_EXPORT int ct_worker_fail(ct_worker_run_t *run, json_t *error);

/** Make a run fail and stop its worker: as ct_worker_fail(), and sets
 * run->exit_code to `code`. Returns CT_WORKER_FAIL_STOP, so a run can
 * `return ct_worker_fail_stop(run, e, 3);`. */
CT_EXPORT int ct_worker_fail_stop(ct_worker_run_t *run, json_t *error, int code);

/** Wait for the worker's end without stopping it: until it is STOPPED or
 * FORCE_STOPPED and its on_stop hook has returned. timeout in seconds: < 0
 * or INFINITY (1e9 and more) waits without bound, 0 does not wait, > 0
 * waits at most that long; NaN is CT_EINVAL. On return 0, *reason (if not
 * NULL) is the end's reason and *error (if not NULL) the error of the run
 * that ended it for CT_WORKER_END_FAILED, else NULL (also out of memory): a
 * new object, the caller's alone, to json_decref(). A worker never started returns 0 at once with
 * CT_WORKER_END_NONE.
 * Returns 0; CT_ETIMEDOUT at the bound (the worker is left running); CT_EDEADLK
 * if it must wait but is called from the worker's own run (on_error, on_drop,
 * process_result included) or its on_start; CT_EINVAL (outputs are then
 * untouched).
 * Thread-safety: any thread. */
CT_EXPORT int ct_worker_wait(ct_worker_t *w, double timeout, ct_worker_end_reason_t *reason,
                             json_t **error);

/** How the worker's last start ended: its reason (CT_WORKER_END_NONE while
 * it runs or before its first end), *code (if not NULL; 0 for NONE and
 * NORMAL) and *error (if not NULL: for CT_WORKER_END_FAILED the error of the
 * run that ended it, a new object, the caller's alone, to json_decref();
 * else NULL, also out of memory). Thread-safety: any thread. */
CT_EXPORT ct_worker_end_reason_t ct_worker_last_end(ct_worker_t *w, int *code, json_t **error);

/** Sleep in a run for `seconds`, waking early when the worker is asked to
 * stop (a background run waiting between steps). Returns 0 after the whole
 * sleep; CT_ESHUTDOWN at once or as soon as the worker is no longer RUNNING;
 * CT_EINVAL for a NULL worker or NaN or negative seconds (INFINITY: until
 * the stop). Blocks its thread: not for runs on an event loop.
 * Thread-safety: any thread (meant for the worker's own runs). */
CT_EXPORT int ct_worker_sleep(ct_worker_t *w, double seconds);

/** Read-only attributes. Thread-safety: any thread. */
/** The name of the current (or last) start. Borrowed: valid until the
 * worker is freed, even while other threads restart it with another name
 * (a worker keeps one copy of each distinct name it was started with until
 * it is freed). */
CT_EXPORT const char *ct_worker_name(const ct_worker_t *w);
CT_EXPORT ct_worker_kind_t ct_worker_kind(const ct_worker_t *w);   /**< as created */
CT_EXPORT ct_worker_state_t ct_worker_state(const ct_worker_t *w); /**< now */
/** True once the worker is no longer RUNNING: a long run polls it. */
CT_EXPORT bool ct_worker_stop_requested(const ct_worker_t *w);

/** A worker's counters (ct_worker_stats()). The struct grows at its end,
 * as ct_stats_t does: set `size` (start from CT_WORKER_STATS_INIT) and the
 * library fills only the fields that fit. */
typedef struct ct_worker_stats {
  size_t size;         /**< sizeof(ct_worker_stats_t), set by CT_WORKER_STATS_INIT */
  uint64_t runs;       /**< runs started (total) */
  uint64_t failures;   /**< runs that failed (total) */
  uint64_t dropped;    /**< queue items handed back (total) */
  size_t pending;      /**< queue items waiting now */
  double last_run;     /**< ct_now() of the last run's start, or 0 */
  ct_worker_state_t state; /**< its state at the snapshot */
  /* The fields above are the smallest struct accepted. */
  ct_worker_end_reason_t end_reason; /**< as ct_worker_last_end() */
  int end_code;                      /**< as ct_worker_last_end() */
} ct_worker_stats_t;

/** A ct_worker_stats_t to fill: size set, every counter 0. */
#define CT_WORKER_STATS_INIT                                                   \
  {sizeof(ct_worker_stats_t), 0, 0, 0, 0, 0.0, CT_WORKER_INIT, CT_WORKER_END_NONE, 0}

/** A snapshot of the worker's counters into *out, whose `size` the caller
 * set (CT_WORKER_STATS_INIT), filled as ct_supervisor_stats() fills a
 * ct_stats_t: only the fields that fit, out->size lowered to the bytes
 * written if it was larger than this library's struct. Returns 0, or
 * CT_EINVAL for NULL or a size smaller than the first published struct (up
 * to state; nothing is written then). Thread-safety: any thread. */
CT_EXPORT int ct_worker_stats(ct_worker_t *w, ct_worker_stats_t *out);

/** The same as a new JSON object {"name", "kind", "state", "runs",
 * "failures", "dropped", "pending", "last_run", "end_reason" ("none",
 * "normal", "forced" or "failed"), "end_code"}; NULL on bad input or out
 * of memory. Thread-safety: any thread. */
CT_EXPORT json_t *ct_worker_stats_json(ct_worker_t *w);

/** ---- Worker groups ----
 *
 * A group gathers workers that start and stop together (aio-fluid's
 * worker set). The group borrows its members: the caller still owns each
 * worker and frees it with ct_worker_free(), which takes it out of its
 * group; with opts.owns_members the group frees them when it is freed
 * (ct_worker_group_shutdown() stops and frees in one call). A worker belongs to one group at most. With opts.one_for_all, a
 * member that reaches STOPPED or FORCE_STOPPED (its run returned
 * CT_WORKER_STOP, it was stopped, its supervisor stopped) makes the group
 * stop every other member, as by ct_worker_stop(w, CT_WORKER_DROP, 0): on
 * the thread that finished the member's stop, without waiting.
 */
typedef struct ct_worker_group ct_worker_group_t;

/** Group options: start from CT_WORKER_GROUP_OPTS_INIT. */
typedef struct ct_worker_group_opts {
  size_t size;       /**< sizeof(ct_worker_group_opts_t), set by CT_WORKER_GROUP_OPTS_INIT */
  const char *name;  /**< copied; NULL: "group-N"; UTF-8 (else CT_EINVAL) */
  bool one_for_all;  /**< one member's end stops them all */
  bool owns_members; /**< the group owns its members: ct_worker_group_free()
                        and ct_worker_group_shutdown() free them too */
} ct_worker_group_opts_t;

/** The default group options, with size set. */
#define CT_WORKER_GROUP_OPTS_INIT {sizeof(ct_worker_group_opts_t), NULL, false, false}

/** Create an empty group. opts may be NULL. The caller owns *out and frees
 * it with ct_worker_group_free(). Returns 0; CT_EINVAL for a NULL out or an
 * unknown opts.size (not logged: a group has no log callback); CT_ENOMEM.
 * Thread-safety: any thread. */
CT_EXPORT int ct_worker_group_new(const ct_worker_group_opts_t *opts, ct_worker_group_t **out);

/** Add a worker (in any state; it keeps its state) to the group; it is
 * borrowed, or owned by a group made with opts.owns_members. Returns 0; CT_EINVAL for NULL; CT_EBUSY if the worker already
 * belongs to a group (this one or another); CT_ENOMEM.
 * Thread-safety: any thread. */
CT_EXPORT int ct_worker_group_add(ct_worker_group_t *g, ct_worker_t *w);

/** Number of members. Thread-safety: any thread. */
CT_EXPORT size_t ct_worker_group_size(ct_worker_group_t *g);

/** Start every member (opts, possibly NULL, applies to each), in the order
 * they were added; all or nothing: if one cannot start, the members this
 * call started are stopped again (CT_WORKER_DROP, no wait) and its error is
 * returned (CT_ENOENT, for instance, for a process worker whose supervisor
 * has no process pool; a member freed meanwhile is skipped). Returns 0; CT_EINVAL for NULL or an empty group; CT_EBUSY if a
 * member is running or stopping (nothing is started); the error of
 * ct_worker_start(). Thread-safety: any thread. */
CT_EXPORT int ct_worker_group_start(ct_worker_group_t *g, const ct_worker_start_opts_t *opts);

/** Stop every member with `flags` as ct_worker_stop() does; first all of
 * them without waiting, then, for timeout != 0, wait for each: timeout < 0
 * waits until all are stopped, > 0 bounds the whole wait (members still
 * stopping then are force-stopped; INFINITY or 1e9 and more: no bound). Returns 0; CT_ETIMEDOUT if a member was
 * force-stopped; CT_EDEADLK if it must wait but is called from a member's
 * run (every member's stop is then under way, none is waited for, so a
 * run never waits for itself or for runs queued behind it); CT_EINVAL.
 * Thread-safety: any thread, including a member's run. */
CT_EXPORT int ct_worker_group_stop(ct_worker_group_t *g, int flags, double timeout);

/** A new JSON object {"name", "one_for_all", "running" (members RUNNING),
 * "workers": [each member's ct_worker_stats_json()]}; NULL on bad input or
 * out of memory. Thread-safety: any thread. */
CT_EXPORT json_t *ct_worker_group_status_json(ct_worker_group_t *g);

/** Free a group whose members are neither running nor stopping; the
 * members are released from the group, and freed (ct_worker_free()) if it
 * owns them (opts.owns_members). Returns 0;
 * CT_EBUSY if a member is running or stopping (nothing is freed).
 * ct_worker_group_free(NULL) returns 0. Thread-safety: any thread, but
 * no other call may use the group at the same time or after. */
CT_EXPORT int ct_worker_group_free(ct_worker_group_t *g);

/** Stop and free in one call: stop the members one at a time in reverse
 * order of their last start (the last started first; members never started
 * last), each with `flags` and waiting for its end before the next one is
 * stopped, the whole within `timeout` as ct_worker_group_stop(); then free
 * the group as ct_worker_group_free() (and its members if it owns them).
 * With one_for_all, the first member's end stops the rest at once.
 * Returns 0; CT_ETIMEDOUT if a member was force-stopped (all is freed all
 * the same); CT_EDEADLK if called from a member's run (nothing is stopped
 * or freed); CT_EINVAL; CT_ENOMEM (nothing is freed).
 * ct_worker_group_shutdown(NULL, ...) returns 0. Thread-safety: as
 * ct_worker_group_free(). */
CT_EXPORT int ct_worker_group_shutdown(ct_worker_group_t *g, int flags, double timeout);

#ifdef __cplusplus
}
#endif
#endif
