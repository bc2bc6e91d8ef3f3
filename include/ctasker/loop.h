/** @file
 * ctasker — event loops: the supervisor's own and named extra ones.
 *
 * Every loop is a libev loop running in its own thread. Other threads never
 * touch it directly: ct_loop_call() runs a function on the loop thread, and
 * that function may use the `struct ev_loop *` it receives to start or stop
 * its own watchers (only there: the pointer is valid on that thread only).
 *
 * Non-blocking work can run on a loop instead of a pool thread (atasker's
 * async executors): set ct_task_opts_t.loop for a one-off task or
 * ct_worker_opts_t.loop for a worker. Such tasks run in the order they were
 * submitted (priorities do not reorder them) and are not counted in the
 * thread pool's statistics. They take a delay (posted when it has passed)
 * and, on an extra loop, a timeout (the supervisor's own loop keeps the
 * deadline, so a task blocking that loop could not be ended by it).
 *
 * Extra loops ("aloops") belong to a supervisor: created by name, found by
 * name, one of them (or the supervisor's own) is the default, and they are
 * asked to end when the supervisor stops (whose stop completes only once
 * they have run what they hold and ended) and freed with it. An extra loop
 * that has ended (ct_loop_stop()) has already given back its descriptors;
 * its name stays taken until the supervisor is freed.
 */
#ifndef CTASKER_LOOP_H
#define CTASKER_LOOP_H

#include "common.h"
#include "supervisor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_loop ct_loop_t; /**< An event loop: opaque, owned by its supervisor. */
struct ev_loop;

/** Runs on the loop thread. `ev` is the loop's libev loop: attach or detach
 * watchers here; it must not be kept for use on another thread. */
typedef void (*ct_loop_fn)(ct_loop_t *loop, struct ev_loop *ev, void *data);

/** The supervisor's own loop (borrowed, valid until the supervisor is
 * freed), or NULL for a NULL sup with no default supervisor.
 * Thread-safety: any thread. */
CT_EXPORT ct_loop_t *ct_supervisor_loop(ct_supervisor_t *sup);

/** Create and start an extra loop named `name` (copied) with its own thread.
 * *out is borrowed: the supervisor owns the loop and frees it.
 * Returns 0; CT_EINVAL for NULL or empty name; CT_EBUSY if the name is
 * taken; CT_ESHUTDOWN if the supervisor is not running, from the moment a
 * stop has begun (a loop made later would hold that stop for ever; one
 * never started also logs "not started"); CT_ENOMEM,
 * CT_EAGAIN (no thread), CT_EMFILE (no file descriptor).
 * Thread-safety: any thread. */
CT_EXPORT int ct_loop_create(ct_supervisor_t *sup, const char *name, ct_loop_t **out);

/** The loop named `name`, or the default loop for a NULL name (the
 * supervisor's own unless ct_loop_set_default() chose another).
 * Returns 0 and *out (borrowed); CT_ENOENT for an unknown name; CT_EINVAL.
 * Thread-safety: any thread. */
CT_EXPORT int ct_loop_get(ct_supervisor_t *sup, const char *name, ct_loop_t **out);

/** Make `loop` (one of sup's loops) the default; NULL restores the
 * supervisor's own. Returns 0 or CT_EINVAL. Thread-safety: any thread. */
CT_EXPORT int ct_loop_set_default(ct_supervisor_t *sup, ct_loop_t *loop);

/** The loop's name ("" for the supervisor's own). Thread-safety: any thread. */
CT_EXPORT const char *ct_loop_name(const ct_loop_t *loop);

/** Stop an extra loop: calls and tasks already posted still run, later ones
 * are refused (CT_ESHUTDOWN); then its thread ends. timeout as elsewhere:
 * < 0 waits for the thread, 0 does not wait (> 0 is treated as < 0), NaN
 * is CT_EINVAL.
 * Returns 0; CT_EINVAL for the supervisor's own loop (it stops with the
 * supervisor); CT_EDEADLK if asked to wait on the loop's own thread.
 * Thread-safety: any thread. */
CT_EXPORT int ct_loop_stop(ct_loop_t *loop, double timeout);

/** Run fn(loop, ev, data) on the loop thread, after what was posted before.
 * A call to the own loop of a supervisor not started yet waits for its
 * start; if the supervisor is stopped without having started, fn is never
 * called.
 * Returns 0; CT_ESHUTDOWN if the loop has ended (fn is then never called),
 * or its supervisor was stopped without having started; CT_EINVAL;
 * CT_ENOMEM. Thread-safety: any thread, including the loop's. */
CT_EXPORT int ct_loop_call(ct_loop_t *loop, ct_loop_fn fn, void *data);

#ifdef __cplusplus
}
#endif
#endif
