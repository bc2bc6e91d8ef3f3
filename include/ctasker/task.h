/** @file
 * ctasker — tasks: one unit of work, its status, its result, waiting for it.
 *
 * A task is reference counted (atomically). ct_background_task() hands the
 * caller a new reference when asked for one; the supervisor keeps its own
 * until the task is terminal. Every task reaches exactly one terminal status
 * (COMPLETED or CANCELED) and its completion callback runs exactly once.
 *
 * Status codes are atasker's. A failed task is COMPLETED with an error
 * result (see result.h); ct_task_failed() asks directly.
 */
#ifndef CTASKER_TASK_H
#define CTASKER_TASK_H

#include <jansson.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_task ct_task_t; /**< A task: opaque, reference counted. */

/** Task status codes: atasker's numbers. */
typedef enum ct_task_status {
  CT_TASK_QUEUED = 0,      /**< waiting in the run queue for a thread */
  CT_TASK_DELAYED = 2,     /**< waiting for its start delay to pass */
  CT_TASK_STARTED = 100,   /**< its function is running */
  CT_TASK_COMPLETED = 200, /**< terminal: finished, with a result or an error */
  CT_TASK_CANCELED = -1    /**< terminal: canceled before it started */
} ct_task_status_t;

/** The function a task runs. `self` is the running task (borrowed: valid
 * during the call). Return a new reference to the result, NULL for a JSON
 * null result, or an error made with ct_error_new() to fail. */
typedef json_t *(*ct_task_fn)(ct_task_t *self, void *arg);

/** Called exactly once when the task is terminal. `task` is borrowed; take a
 * reference to keep it. Runs on the thread that made the task terminal: the
 * pool thread that ran it, or the thread that canceled it (the one calling
 * ct_task_cancel() or ct_supervisor_stop()), or the supervisor's loop thread
 * when the task's timeout ended it (ct_task_opts_t.timeout). The task's arg
 * is still valid here; its arg_free, if any, runs after this returns. It
 * must not block for long. */
typedef void (*ct_task_done_fn)(ct_task_t *task, void *data);

/** Take / drop a reference. ct_task_unref(NULL) does nothing.
 * Thread-safety: any thread. */
CT_EXPORT ct_task_t *ct_task_ref(ct_task_t *task);
CT_EXPORT void ct_task_unref(ct_task_t *task); /**< Drop a reference (see ct_task_ref()). */

/** Read-only attributes. Thread-safety: any thread. Every getter accepts
 * NULL: id 0, name "", priority -1, arg NULL, status CT_TASK_CANCELED (so
 * ct_task_is_terminal() is true), timestamps 0, result NULL, not failed,
 * cancel not requested.
 * A status read publishes what goes with it: once a thread reads a task
 * STARTED it reads its start time, and once it reads it terminal, its
 * result and completion time. So a task being canceled on another thread
 * still reads QUEUED until that thread has given it its result (its
 * ct_task_cancel() may meanwhile return CT_EALREADY). */
CT_EXPORT uint64_t ct_task_id(const ct_task_t *task);          /**< > 0, unique per supervisor */
CT_EXPORT const char *ct_task_name(const ct_task_t *task);     /**< borrowed; "" if none */
CT_EXPORT int ct_task_priority(const ct_task_t *task);          /**< as submitted */
CT_EXPORT void *ct_task_arg(const ct_task_t *task);            /**< the argument it was given */
CT_EXPORT ct_task_status_t ct_task_status(const ct_task_t *task); /**< now */
CT_EXPORT bool ct_task_is_terminal(const ct_task_t *task);     /**< COMPLETED or CANCELED */

/** Monotonic timestamps (ct_now() base) of queueing, start and completion,
 * or 0 if that has not happened yet (a delayed task is queued when its
 * delay has passed; one canceled before keeps 0). Tasks submitted without
 * a handle, a callback or a supervisor timeout carry no timestamps (all 0):
 * the cheap path does not read the clock. A pool task's start time is when
 * its thread set out for it: for a thread going straight on from one task
 * to the next, the last one's completion time (one clock read for both),
 * never before the task was queued; the pool's start times follow the
 * order in which its tasks started. A task's times are in order (queued
 * <= started <= completed); each is within some tens of nanoseconds of
 * what ct_now() read at that moment would have said. */
CT_EXPORT double ct_task_time_queued(const ct_task_t *task);
CT_EXPORT double ct_task_time_started(const ct_task_t *task);   /**< see ct_task_time_queued() */
CT_EXPORT double ct_task_time_completed(const ct_task_t *task); /**< see ct_task_time_queued() */

/** The result, borrowed (valid while you hold a reference), or NULL while the
 * task is not terminal (a task that returned NULL has json null). */
CT_EXPORT json_t *ct_task_result(const ct_task_t *task);

/** True if the task is terminal with an error result (a canceled task has a
 * CancelledError result and so counts as failed). */
CT_EXPORT bool ct_task_failed(const ct_task_t *task);

/** Cancel a task.
 * Returns 0 if it was QUEUED or DELAYED: it is now CANCELED with a
 *   CancelledError result, its callback has run on this thread, and its
 *   function will never run;
 * CT_EBUSY if it is running: its cooperative cancel flag is now set (see
 *   ct_task_cancel_requested) and it goes on; but a process task
 *   (process.h) has its child killed: it completes soon after, on the
 *   pool's loop thread, with a CancelledError result, unless it ended first;
 * CT_EALREADY if it was already terminal or another thread is canceling
 *   it (a cancel, a stop); CT_EINVAL for NULL.
 * Thread-safety: any thread, including the task's own function. */
CT_EXPORT int ct_task_cancel(ct_task_t *task);

/** True once ct_task_cancel() was called on the task, or its timeout ended
 * it. A long-running task function polls it and returns early.
 * Thread-safety: any thread. */
CT_EXPORT bool ct_task_cancel_requested(const ct_task_t *task);

/** Wait until every task in tasks[0..n) is terminal and its completion
 * callback has returned. timeout in seconds: < 0 waits forever, 0 does not
 * wait (just checks), > 0 is one overall deadline for the whole list
 * (INFINITY or 1e9 and more: no deadline).
 * Sleeps in the kernel while it waits (no polling), woken only as its own
 * tasks finish.
 * Returns 0 when all are done, CT_ETIMEDOUT at the deadline, CT_EINVAL for a
 * NaN timeout, a NULL list or element (n == 0 returns 0 at once).
 * Thread-safety: any thread but a task's own pool thread waiting for tasks
 * that need that thread (that would deadlock, as with any pool). */
CT_EXPORT int ct_wait_completed(ct_task_t *const *tasks, size_t n, double timeout);

/** ct_wait_completed() for one task. */
CT_EXPORT int ct_task_wait(ct_task_t *task, double timeout);

/** Wait until any task of tasks[0..n) is terminal and its completion
 * callback has returned, and set *index to its position: with several
 * terminal, the lowest. NULL elements are skipped, so a caller takes the
 * tasks in completion order (as Python's as_completed) by clearing each
 * one it has taken:
 *   size_t i;
 *   while (ct_wait_any(tasks, n, 10, &i) == 0) {
 *     use(ct_task_result(tasks[i]));
 *     ct_task_unref(tasks[i]);
 *     tasks[i] = NULL;
 *   }
 * timeout as ct_wait_completed() (one deadline; 0 only checks). Sleeps on
 * a condition variable while it waits: no polling.
 * Returns 0 and *index; CT_ETIMEDOUT at the deadline (*index untouched);
 * CT_ENOENT if every element is NULL or n is 0 (nothing to wait for);
 * CT_EINVAL for a NaN timeout, a NULL list with n > 0 or a NULL index.
 * Thread-safety: as ct_wait_completed(). */
CT_EXPORT int ct_wait_any(ct_task_t *const *tasks, size_t n, double timeout, size_t *index);

/** ct_wait_completed(), then results[i] = ct_task_result(tasks[i]) for
 * every i, in input order: borrowed, valid while the caller holds its
 * reference to tasks[i]; a failed task's is its error result (see
 * ct_result_is_error_class()). At CT_ETIMEDOUT the array is filled all the
 * same, with NULL for each task not yet terminal. Returns as
 * ct_wait_completed(), and CT_EINVAL for a NULL results with n > 0 (on
 * CT_EINVAL the array is untouched). Thread-safety: as ct_wait_completed(). */
CT_EXPORT int ct_wait_results(ct_task_t *const *tasks, size_t n, double timeout,
                              json_t **results);

/** Release a list of handles: ct_task_unref() on each of tasks[0..n) and
 * set it to NULL (NULL elements are skipped; a NULL list does nothing).
 * Thread-safety: any thread. */
CT_EXPORT void ct_task_unref_list(ct_task_t **tasks, size_t n);

#ifdef __cplusplus
}
#endif
#endif
