/** @file
 * ctasker — the process pool: named functions run in pre-forked children,
 * with JSON arguments and JSON results.
 *
 * 1. Register the functions children may run, by name, with
 *    ct_process_register(), before the pool is created: children are copies
 *    of the process as it was when the pool was created.
 * 2. Create the supervisor's pool with ct_process_pool_create() (before or
 *    after ct_supervisor_start()). At creation a single-threaded fork server
 *    is forked; it forks the children, so no child inherits a lock another
 *    thread of yours held. Children keep stdin/stdout/stderr and close every
 *    other inherited descriptor; their channel to the pool is close-on-exec,
 *    so a program a child execs does not inherit it.
 * 3. Submit with ct_process_task(). The task completes like a thread task:
 *    status, result, callback, ct_wait_completed(), registry, statistics.
 *
 * Failures are error results (result.h), never crashes of the caller:
 *   UnknownTask      no function of that name was registered before the pool
 *                    was created (ct_process_register() refuses names while
 *                    a pool exists);
 *   ProcessCrashed   the child died (args: [pid, "signal" | "exit", number];
 *                    seen when it dies, even if a process it started still
 *                    holds its pipe) or stopped talking (closed its pipe);
 *   ProtocolError    the child wrote something that is not a valid frame;
 *   TimeoutError     the task ran past its timeout (ct_task_opts_t.timeout)
 *                    or else the pool's task_timeout (the child is killed);
 *   NotSerializable  the result could not be encoded, or a frame exceeded
 *                    the pool's max_frame;
 *   ProcessPoolUnavailable  no child was left to run the task, and the
 *                    fork server died and no new one could be started
 *                    (fork() or descriptors failing), or it lives but
 *                    failed to fork 3 children in a row (RLIMIT_NPROC,
 *                    memory); also logged;
 *   MemoryError      the task failed and its error above could not be
 *                    allocated (out of memory);
 *   CancelledError   ct_task_cancel() on the running task: it returns
 *                    CT_EBUSY, the child is killed at once (SIGKILL, as at a
 *                    timeout: no grace, no clean-up in the child) and the
 *                    task completes (COMPLETED, callback as below) with
 *                    this error, unless its result or another failure came
 *                    first: exactly one outcome. A queued or delayed task is
 *                    CANCELED by ct_task_cancel() without a child, as any.
 * A child that failed is killed if needed, reaped and replaced by a fresh one
 * (not once the pool stops with nothing queued: it needs no child then).
 * The pool kills only its own children, never a process that took over a
 * pid one of them had: through the fork server, which knows each child
 * by pid and slot until it reaps it; after the fork server died, through
 * the pidfd it handed over with each child (Linux 5.3 and later; without
 * pidfds, by pid).
 * A fork server that dies, or leaves a request to fork or reap a child
 * unanswered for 10 s (stopped, or hung: it is killed, and logged), is
 * started again at once, then retried with a
 * growing delay (up to 5 s) while that fails; its children finish their
 * running tasks (task_timeout still applies) and are replaced when they end
 * (one that closes its pipe but lives on is killed). At a stop, a fork
 * server that has not ended 12 s after it was told to is killed.
 * A child whose pipe cannot be received (the host is out of descriptors) is
 * ended and forked again later; queued tasks wait for it.
 *
 * Priorities and reservations follow the thread pool's rule (supervisor.h)
 * over size + reserve_normal + reserve_high children, with one difference: a
 * CRITICAL task never takes a child beyond that number (children are
 * pre-forked, not added on demand); it starts first, as soon as one is free.
 *
 * Completion callbacks run on the supervisor's loop thread, except for a
 * task submitted from another loop of the same supervisor (ct_loop_create()):
 * its callback runs on that loop, and waiters see the task done only after
 * it returned. A task submitted from another supervisor's loop completes on
 * this supervisor's loop (the other one may be freed first).
 *
 * Signals and fork: ctasker never installs a SIGCHLD handler and never calls
 * waitpid(-1): it reaps the fork server (its only direct child) by pid, and
 * the fork server reaps the pool's children (as they end: SIGCHLD there is
 * the fork server's own). A host program that reaps any
 * child (waitpid(-1)) may take the fork server's status; the pool then just
 * skips that reaping. A host that forks after the pool exists: the new
 * process inherits copies of the pool's descriptors (close-on-exec, so exec
 * drops them); it must not use the supervisor; pool children it still holds
 * descriptors of may outlive the pool's stop until it exits or execs.
 *
 * The fork server and the children run with default signal handlers in a
 * process group of their own (the fork server leads it): what a terminal
 * sends to its foreground group (Ctrl-C's SIGINT, SIGQUIT, Ctrl-Z's
 * SIGTSTP) reaches the host alone, which decides what it means (stopping
 * the pool, or letting running tasks end); when the host exits, the fork
 * server sees its socket close and ends every child. Being outside the
 * terminal's foreground group, a process function that reads the terminal
 * is stopped (SIGTTIN), as a background job would be. Signals sent to the
 * host's process group from elsewhere do not reach them either: send them
 * to the pool's group, or let the host stop the pool. A child ends with _exit(): what a function leaves
 * in stdio buffers without fflush() is lost, and the parent's own unflushed
 * output is not written again by children.
 */
#ifndef CTASKER_PROCESS_H
#define CTASKER_PROCESS_H

#include <jansson.h>

#include "common.h"
#include "supervisor.h"
#include "task.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A function run in a pool child. `task_id` is the id of the parent's task;
 * `args` is borrowed (never NULL: JSON null when none were given); `data` is
 * the pointer given at registration (as copied into the child). Return a new
 * reference to the result, NULL for JSON null, or ct_error_new() to fail. */
typedef json_t *(*ct_process_fn)(uint64_t task_id, json_t *args, void *data);

/** Register fn under `name` (copied; at most 255 bytes) for pools created
 * later. Register every function before the first pool is created: while
 * any process pool exists (from ct_process_pool_create() until its
 * supervisor is freed), registration is closed, since that pool's children
 * could never run the function (its tasks would end as UnknownTask).
 * Returns 0, CT_EINVAL (NULL or empty or too long name, one not UTF-8, NULL fn),
 * CT_ENOTSUP if a process pool exists (nothing is registered), CT_EBUSY if
 * the name is taken, CT_ENOMEM. Thread-safety: any thread. */
CT_EXPORT int ct_process_register(const char *name, ct_process_fn fn, void *data);

/** Process pool options: start from CT_PROCESS_POOL_OPTS_INIT. */
typedef struct ct_process_pool_opts {
  size_t size;         /**< sizeof(ct_process_pool_opts_t), set by the INIT macro */
  int pool_size;       /**< children for any priority; must be > 0 */
  int reserve_normal;  /**< extra children only NORMAL, HIGH, CRITICAL tasks use */
  int reserve_high;    /**< extra children only HIGH and CRITICAL tasks use */
  size_t max_frame;    /**< largest request or result in bytes of JSON; 0: 16 MiB */
  double task_timeout; /**< seconds a task may run in its child; 0 or INFINITY:
                          no limit (a task's own timeout overrides it) */
} ct_process_pool_opts_t;

/** The default process pool options (2 children), with size set. */
#define CT_PROCESS_POOL_OPTS_INIT {sizeof(ct_process_pool_opts_t), 2, 0, 0, 0, 0.0}

/** Create the supervisor's process pool: fork the fork server, which forks
 * pool_size + reserve_normal + reserve_high children. A supervisor has at
 * most one pool in its life. opts may be NULL (2 children).
 * Returns 0; CT_EINVAL (sup NULL without a default, pool_size <= 0, negative
 * reserves or timeout, opts.size unknown; each bad field is named in a
 * line to the supervisor's log callback); CT_EBUSY if the supervisor
 * already has a pool; CT_ESHUTDOWN if it is stopping or stopped; CT_EAGAIN
 * if the fork server could not be forked; CT_EMFILE if no descriptor was
 * left for its socket; CT_ENOMEM.
 * Thread-safety: any thread but the supervisor's loop thread. */
CT_EXPORT int ct_process_pool_create(ct_supervisor_t *sup, const ct_process_pool_opts_t *opts);

/** Stop the pool gracefully: nothing new is accepted (CT_ESHUTDOWN), queued
 * and running process tasks finish, then the children and the fork server
 * exit and are reaped. timeout as in ct_supervisor_stop(). Returns 0 once
 * stopped (or under way, with timeout 0), CT_ETIMEDOUT, CT_ENOENT if there
 * is no pool, CT_EDEADLK if it must wait but is called on the loop thread.
 * On a supervisor that is not running (never started) it only refuses new
 * tasks and returns 0: ct_supervisor_free() ends the processes.
 * The supervisor's stop does the same. Thread-safety: any thread. */
CT_EXPORT int ct_process_pool_stop(ct_supervisor_t *sup, double timeout);

/** Run the registered function `name` with `args` in a pool child. args is
 * borrowed and encoded at once, delay or not (NULL means JSON null); opts
 * as for ct_background_task(): name, priority, on_done, done_data; delay
 * (the task waits DELAYED, then is queued; if the pool has stopped by then
 * it is canceled, with a log line); timeout, which overrides the pool's
 * task_timeout for this task (0 keeps the pool's, INFINITY lifts it; the
 * child is killed); not arg_free (a process task has no arg: CT_EINVAL);
 * loop is not used. out as for ct_background_task().
 * Returns 0; CT_EINVAL (NULL name, an arg_free, bad priority, delay or
 * timeout, args that cannot be encoded or exceed max_frame); CT_ENOENT if
 * no pool was created (logged as such); CT_ESHUTDOWN if the supervisor or
 * the pool is not running (a supervisor never started is logged as "not
 * started"); CT_ENOMEM.
 * An unknown name is not an error here: the task completes with an
 * UnknownTask error result. On error nothing was queued and on_done is
 * never called. Thread-safety: any thread. */
CT_EXPORT int ct_process_task(ct_supervisor_t *sup, const char *name, const json_t *args,
                              const ct_task_opts_t *opts, ct_task_t **out);

#ifdef __cplusplus
}
#endif
#endif
