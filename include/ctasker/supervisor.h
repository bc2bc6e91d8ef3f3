/** @file
 * ctasker — the supervisor: a prioritized thread pool, a task registry, a
 * libev loop thread for delays and the timeout watchdog, and statistics.
 *
 * Life: ct_supervisor_new() -> ct_supervisor_start() -> submit work ->
 * ct_supervisor_stop() -> ct_supervisor_free(). A stopped supervisor is not
 * restarted; make a new one.
 *
 * Threads and reservations (atasker's rule, exactly). Let R be the number of
 * tasks running now, of any priority. A queued task of priority p starts
 * only when it is the first in the queue (lowest priority number, then
 * earliest submitted) and:
 *   p == CT_PRIORITY_CRITICAL (0)   always: if no thread is idle, a thread is
 *                                   added beyond every cap, at once;
 *   1   <= p <= 50  (HIGH class)    R < pool_size + reserve_normal + reserve_high;
 *   51  <= p <= 100 (NORMAL class)  R < pool_size + reserve_normal;
 *   101 <= p <= 255 (LOW class)     R < pool_size.
 * So a waiting task of a lower class never starts before a waiting task of a
 * higher class, tasks never wait outside the queue (a task is taken off the
 * queue only by the thread that runs it at once), and LOW work can never take
 * the threads reserved for NORMAL and HIGH work.
 * The HIGH cap is the most threads ordinary work uses ("max threads").
 * Threads start on demand; at least min_threads stay, and a thread above
 * min_threads that has been idle for `keepalive` seconds exits. When a
 * thread cannot be created (RLIMIT_NPROC, memory), accepted tasks wait: the
 * failure is logged and the start is retried from the loop thread, with a
 * pause growing from 10 ms to 1 s, while a task could start; nothing is
 * dropped.
 */
#ifndef CTASKER_SUPERVISOR_H
#define CTASKER_SUPERVISOR_H

#include <jansson.h>

#include "common.h"
#include "task.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_supervisor ct_supervisor_t; /**< A supervisor: opaque, owned by its creator. */

/** Which threshold a timeout report is about. */
enum ct_timeout_level { CT_TIMEOUT_WARNING = 1, CT_TIMEOUT_CRITICAL = 2 };

/** Reports a task that has been queued or running longer than a threshold;
 * called once per task and threshold, on the supervisor's loop thread. The
 * watchdog looks at the thread pool's tasks: not at tasks on loops (their
 * loop thread would have to stop to be looked at), nor at process tasks,
 * which have timeouts of their own (process.h).
 * `task` is borrowed. `started` says whether it was running or still queued.
 * A Locker (locker.h) that could not be taken in time reports here too, as
 * CT_TIMEOUT_CRITICAL with a NULL task and `started` true, on the thread
 * that tried to take it. */
typedef void (*ct_timeout_fn)(ct_supervisor_t *sup, ct_task_t *task, int level,
                              bool started, void *data);

/** Supervisor options: start from CT_SUPERVISOR_OPTS_INIT. */
typedef struct ct_supervisor_opts {
  size_t size;          /**< sizeof(ct_supervisor_opts_t), set by CT_SUPERVISOR_OPTS_INIT */
  int pool_size;        /**< threads for any priority; 0: number of CPUs (at least 2) */
  int reserve_normal;   /**< extra threads only NORMAL, HIGH and CRITICAL tasks use */
  int reserve_high;     /**< extra threads only HIGH and CRITICAL tasks use */
  int min_threads;      /**< threads kept when idle; at most the HIGH cap,
                           pool_size + reserve_normal + reserve_high */
  double keepalive;     /**< seconds an idle thread above min_threads lives; 0: 10;
                           INFINITY: for ever */
  double timeout_warning;  /**< seconds queued or running before a warning; 0 or
                              INFINITY: off */
  double timeout_critical; /**< seconds before a critical report; 0 or INFINITY: off */
  ct_timeout_fn on_timeout; /**< NULL: reports go to the log callback */
  void *timeout_data;   /**< given to on_timeout */
  ct_log_fn log;        /**< NULL: no logging */
  void *log_data;       /**< given to log */
  double idle_spin;     /**< seconds (at most 0.001) a pool thread that finds no
                           work may spin before it sleeps, when no other thread
                           runs or spins; default 20e-6; 0: it sleeps at once.
                           A spin makes a task submitted right after the last
                           one start within a microsecond, without a wake-up,
                           but the spinning thread is then woken later after a
                           pause; so the spin adapts: it shortens, down to
                           none, while work comes after pauses longer than
                           idle_spin, and lengthens again once work comes
                           within it. */
  bool stats_timing;    /**< record every task's queue wait and run time for
                           the percentiles of ct_stats_t (wait_p50..run_p99)
                           and "timing" in ct_supervisor_stats_json(): two
                           clock reads and two atomic adds per task that ran;
                           false (default): no clock is read for it */
} ct_supervisor_opts_t;

/** The default supervisor options, with size set. */
#define CT_SUPERVISOR_OPTS_INIT                                                \
  {sizeof(ct_supervisor_opts_t), 0, 0, 0, 0, 0.0, 0.0, 0.0, NULL, NULL, NULL, NULL, 20e-6, false}

/** Create a supervisor (not started). opts may be NULL for defaults.
 * Returns 0 and *out, or CT_EINVAL for bad options (negative sizes or
 * times, NaN times, a pool size or reservation above 65536, min_threads above the HIGH
 * cap, idle_spin above 0.001, an opts.size this library does not know;
 * each bad field is named in a line to opts.log, except a bad size, which
 * leaves the struct's log callback untrusted),
 * CT_ENOMEM, CT_EMFILE (no file descriptor for the loop's wake-up).
 * Thread-safety: any thread. */
CT_EXPORT int ct_supervisor_new(const ct_supervisor_opts_t *opts, ct_supervisor_t **out);

/** Start the loop thread and min_threads pool threads.
 * Returns 0, CT_EBUSY if already running, CT_ESHUTDOWN if it was stopped,
 * CT_EAGAIN if a thread could not be created. Thread-safety: any thread. */
CT_EXPORT int ct_supervisor_start(ct_supervisor_t *sup);

/** What ct_supervisor_stop() does with queued tasks. */
enum ct_stop_mode {
  CT_STOP_DRAIN = 0,  /**< queued tasks still run (waiting for a thread if none
                          can be created) */
  CT_STOP_CANCEL = 1  /**< queued tasks are canceled (callbacks run on this thread) */
};

/** Stop: nothing new is accepted (CT_ESHUTDOWN); running tasks finish;
 * queued tasks are drained or canceled by `mode`; delayed tasks are canceled
 * in both modes (their start lies past the stop); extra loops run what they
 * hold (loop.h). Then the threads exit.
 * timeout in seconds: < 0 waits until everything has stopped, 0 does not
 * wait, > 0 waits at most that long (INFINITY or 1e9 and more: no bound;
 * NaN: CT_EINVAL; see common.h). Returns 0 once stopped (or, with
 * timeout 0, once the stop is under way), CT_ETIMEDOUT if the bound passed
 * first (the stop goes on; call again to wait more). A DRAIN stop while no
 * pool thread can be created waits until one can; a CANCEL stop needs no
 * thread and always completes once running tasks end. Stopping again, or
 * stopping a supervisor never started, is harmless and returns 0 (or waits
 * as asked); a CANCEL stop after a DRAIN stop that is still under way
 * cancels the tasks still queued, for threads and for the process pool
 * alike. CT_EDEADLK if it must wait but is called from one of the
 * supervisor's own threads. A stop still under way after 10 s says what
 * it waits for (the pool's queued and running tasks and threads, the
 * process pool, extra loops, workers' threads) in a warning to opts.log,
 * then again after 20, 40 s and so on (at most every 10 minutes).
 * Thread-safety: any thread. */
CT_EXPORT int ct_supervisor_stop(ct_supervisor_t *sup, int mode, double timeout);

/** Free a supervisor that was never started or has stopped completely.
 * Returns 0, or CT_EBUSY (nothing is freed) if it is running or still
 * stopping. ct_supervisor_free(NULL) returns 0. */
CT_EXPORT int ct_supervisor_free(ct_supervisor_t *sup);

/** The process-wide default supervisor, used wherever a ct_supervisor_t *
 * argument is NULL (atasker's task_supervisor). ct_default_start() creates,
 * starts and installs it (CT_EBUSY if one is installed); ct_default_stop()
 * uninstalls, stops (waiting as ct_supervisor_stop does) and frees it.
 * Stop it only once no other thread submits to it any more. */
CT_EXPORT int ct_default_start(const ct_supervisor_opts_t *opts);
CT_EXPORT int ct_default_stop(int mode, double timeout); /**< see ct_default_start() */
CT_EXPORT ct_supervisor_t *ct_supervisor_default(void); /**< borrowed, or NULL */

/** Options of one task: start from CT_TASK_OPTS_INIT. */
typedef struct ct_task_opts {
  size_t size;             /**< sizeof(ct_task_opts_t), set by CT_TASK_OPTS_INIT */
  const char *name;        /**< copied; NULL: no name */
  int priority;            /**< CT_PRIORITY_CRITICAL..CT_PRIORITY_MAX */
  double delay;            /**< seconds before it may start (status DELAYED); 0: none */
  ct_task_done_fn on_done; /**< completion callback, or NULL */
  void *done_data;         /**< given to on_done */
  struct ct_loop *loop;    /**< run on this event loop's thread instead of a pool
                              thread (a non-blocking fn; see loop.h): the
                              supervisor's own loop or one of its extra loops;
                              NULL: pool */
  double timeout;          /**< seconds its function may run, counted from its
                              start; 0 or INFINITY: no bound. A thread or loop
                              task still running at the deadline completes
                              with a TimeoutError result (callback, waiters)
                              and its cancel flag is set; see ct_background_task()
                              for what its thread still holds. A process task
                              takes it as its own task_timeout (the child is
                              killed): 0 keeps the pool's, INFINITY lifts it. */
  void (*arg_free)(void *arg); /**< NULL, or called with the task's arg exactly
                              once, when the task is terminal and its function
                              (if it ran) has returned: done, failed, canceled
                              or timed out. Not for process tasks (their args
                              are JSON, copied at submission: CT_EINVAL). */
} ct_task_opts_t;

/** The default task options, with size set. */
#define CT_TASK_OPTS_INIT {sizeof(ct_task_opts_t), NULL, CT_PRIORITY_NORMAL, 0.0, NULL, NULL, NULL, 0.0, NULL}

/** Submit fn(task, arg) to run on a pool thread (or on opts->loop). opts may be NULL (NORMAL
 * priority, no name, no delay, no callback). A loop task may have a delay:
 * it is posted to its loop once the delay has passed, and canceled (with a
 * log line) if its loop has ended by then; CT_ESHUTDOWN if its loop has
 * ended already. If out is not NULL it receives
 * a new reference to the task, which is then also findable by id with
 * ct_supervisor_get_task() until it is terminal; with out NULL
 * (fire-and-forget) nothing is registered and no clock is read.
 *
 * arg: opts->arg_free, if set, frees it once the task is terminal and its
 * function has returned, after on_done has returned, and before waiters
 * wake unless the task timed out: on the thread that made the task
 * terminal, or, after a timeout, on the later of the loop thread that
 * called on_done and the thread whose function returned. If this call
 * returns an error, arg_free is never called: arg is still the caller's.
 * Without arg_free, arg is the caller's to free once the task is terminal
 * and, if it timed out, its function has returned.
 *
 * Timeouts (opts->timeout): a thread cannot be killed. A task past its
 * deadline is COMPLETED with TimeoutError at once (on_done runs on the
 * supervisor's loop thread, waiters wake), but until its function returns
 * it still holds its thread: a pool thread stays busy (it counts in
 * `running` and against the caps and reservations, and a supervisor's stop
 * waits for it), an extra loop runs nothing else; arg stays alive and
 * the executor keeps its reference to the task. ct_stats_t.overrun counts
 * such tasks. A function that polls ct_task_cancel_requested() returns
 * soon; its late return is discarded (the result it returns is freed) and
 * counted in late_returns, and only then is the task counted, once, as
 * failed. A loop task's deadline is kept by the supervisor's own loop, so
 * a loop task with a timeout must run on an extra loop (CT_ENOTSUP on the
 * supervisor's own: the function would block the loop that ends it).
 *
 * Returns 0; CT_EINVAL for a NULL fn, a NULL sup with no default, a loop of
 * another supervisor, a priority out of range, a negative, NaN or infinite
 * delay (a huge finite delay is kept: the task waits until canceled or
 * stopped), a negative or NaN timeout; CT_ENOTSUP for a timeout on the
 * supervisor's own loop; CT_ESHUTDOWN if the
 * supervisor is not running (one never started also logs "not started");
 * CT_ENOMEM. On error nothing was queued and
 * on_done is never called. Thread-safety: any thread, including task
 * functions and callbacks. */
CT_EXPORT int ct_background_task(ct_supervisor_t *sup, ct_task_fn fn, void *arg,
                                 const ct_task_opts_t *opts, ct_task_t **out);

/** A new reference to the task with this id while the supervisor still knows
 * it (a task submitted with a handle, from the moment its submission has
 * handed it to the pool, loop, delay timer or process pool, until it is
 * terminal: a task is never found half-submitted). The id of a task that
 * has become terminal, or of no task, answers CT_ENOENT; a tracked task's
 * id names a slot of the handle table and its generation, so an old id
 * never finds the task that uses the slot next (a generation repeats only
 * after 2^30 tasks in one slot). Lookups take no shared lock.
 * Returns 0 and *out, CT_ENOENT, or CT_EINVAL. Thread-safety: any thread. */
CT_EXPORT int ct_supervisor_get_task(ct_supervisor_t *sup, uint64_t id, ct_task_t **out);

/** Number of tasks the registry holds now. */
CT_EXPORT size_t ct_supervisor_registry_size(ct_supervisor_t *sup);

/** A supervisor's counters (ct_supervisor_stats()). Every accepted task,
 * whatever runs it (pool thread, loop, process child, worker run), counts
 * once in `submitted` and, once terminal, once in completed, failed or
 * canceled (a timed-out thread or loop task once its function has
 * returned): at rest submitted == completed + failed + canceled.
 *
 * The struct grows at its end as the library gains counters: set `size`
 * (start from CT_STATS_INIT) and the library fills only the fields that fit
 * in it, so a program built against an older, smaller struct keeps working
 * and nothing past its end is written. */
typedef struct ct_stats {
  size_t size;         /**< sizeof(ct_stats_t), set by CT_STATS_INIT (see
                          ct_supervisor_stats()) */
  uint64_t submitted;  /**< accepted tasks, thread, loop and process (total) */
  uint64_t queued;     /**< in the run queue now */
  uint64_t delayed;    /**< waiting for their delay now */
  uint64_t running;    /**< running now */
  uint64_t completed;  /**< finished without error (total) */
  uint64_t failed;     /**< finished with an error result (total) */
  uint64_t canceled;   /**< canceled (total) */
  uint64_t threads;    /**< pool threads alive now */
  uint64_t threads_idle; /**< pool threads waiting for work now */
  /* The fields above are the smallest struct accepted. */
  uint64_t registered; /**< tasks the registry holds now (with a handle, not
                          yet terminal: ct_supervisor_registry_size()) */
  uint64_t loop_tasks; /**< tasks accepted to run on a loop (total; also in
                          submitted, and once terminal in completed, failed
                          or canceled) */
  uint64_t loop_active; /**< loop tasks queued or running now (not in queued
                           or running, which count pools only) */
  /* With ct_supervisor_opts_t.stats_timing (else all 0): percentiles over
   * every task that ran (pool, loop, process child, worker run) since the
   * supervisor was created, in seconds; each is the upper edge of a
   * histogram bucket (within 25% above the true value, never below;
   * anything under a microsecond reads as 1e-6). */
  uint64_t timed;  /**< tasks measured (total) */
  double wait_p50; /**< time from queued (or the end of its delay) to start */
  double wait_p90; /**< see wait_p50 */
  double wait_p99; /**< see wait_p50 */
  double run_p50;  /**< time from start to completion */
  double run_p90;  /**< see run_p50 */
  double run_p99;  /**< see run_p50 */
  uint64_t overrun;    /**< thread and loop tasks timed out whose functions
                          still run now (a thread task's also counts in running) */
  uint64_t late_returns; /**< functions of timed-out tasks that have returned
                            since, their results discarded (total) */
} ct_stats_t;

/** A ct_stats_t to fill: size set, every counter 0. */
#define CT_STATS_INIT                                                          \
  {sizeof(ct_stats_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0}

/** A consistent snapshot of the counters into *out, whose `size` the caller
 * set (CT_STATS_INIT): the fields that fit in `size` bytes are written,
 * nothing past them; a size larger than this library's struct gets every
 * field it knows, and out->size is then lowered to the bytes written (the
 * fields past it keep what the caller put there).
 * Returns 0, or CT_EINVAL for a NULL out or a size smaller than the first
 * published struct (up to threads_idle; nothing is written then).
 * Thread-safety: any thread. */
CT_EXPORT int ct_supervisor_stats(ct_supervisor_t *sup, ct_stats_t *out);

/** The same counters and the pool's settings as a new JSON object, e.g.
 * {"state":"running","tasks":{"submitted":..,"registered":..},
 * "loops":{"tasks":..,"active":..},"pool":{"size":..}}.
 * Returns a new reference, or NULL on bad input / out of memory. */
CT_EXPORT json_t *ct_supervisor_stats_json(ct_supervisor_t *sup);

#ifdef __cplusplus
}
#endif
#endif
