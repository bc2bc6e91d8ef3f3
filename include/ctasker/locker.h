/** @file
 * ctasker — Locker: a lock whose acquire waits at most a bound (atasker's
 * Locker).
 *
 * A lock that cannot be taken in time is a bug (a thread that never lets
 * go, a deadlock): instead of hanging, ct_locker_acquire() gives up at its
 * bound, returns CT_ETIMEDOUT and reports it as critical through its
 * supervisor's timeout callback (opts.on_timeout, with a NULL task; see
 * supervisor.h), or, without one, as an error line through its log
 * callback. The bound defaults to the supervisor's timeout_critical, as
 * atasker's does. Recursive by default (atasker's relative=True): the
 * thread holding it may acquire it again, and releases it as many times.
 */
#ifndef CTASKER_LOCKER_H
#define CTASKER_LOCKER_H

#include "common.h"
#include "supervisor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_locker ct_locker_t; /**< A Locker: opaque, owned by its creator. */

/** Locker options: start from CT_LOCKER_OPTS_INIT. */
typedef struct ct_locker_opts {
  size_t size;      /**< sizeof(ct_locker_opts_t), set by CT_LOCKER_OPTS_INIT */
  const char *name; /**< copied; NULL: "locker"; named in reports */
  double timeout;   /**< seconds an acquire waits at most; 0: the supervisor's
                       timeout_critical; INFINITY (or 1e9 and more): no bound */
  bool recursive;   /**< the holder may acquire it again (default true) */
} ct_locker_opts_t;

/** The default Locker options, with size set. */
#define CT_LOCKER_OPTS_INIT {sizeof(ct_locker_opts_t), NULL, 0.0, true}

/** Create a Locker that reports to `sup` (NULL: the default supervisor).
 * opts may be NULL. The caller owns *out and frees it with
 * ct_locker_free(), before the supervisor. Returns 0; CT_EINVAL for a
 * NULL out, no supervisor, an unknown opts.size, a negative or NaN
 * timeout, or a timeout of 0 while the supervisor has no timeout_critical
 * (a Locker needs a bound); CT_ENOMEM. Thread-safety: any thread. */
CT_EXPORT int ct_locker_new(ct_supervisor_t *sup, const ct_locker_opts_t *opts,
                            ct_locker_t **out);

/** Take the lock, waiting at most its bound. Returns 0 (held: release it
 * with ct_locker_release()); CT_ETIMEDOUT if another thread held it for
 * the whole bound: not taken, and reported once as critical on this
 * thread, no lock held (the supervisor's on_timeout(sup, NULL,
 * CT_TIMEOUT_CRITICAL, true, data), else an error log line naming the
 * Locker); CT_EDEADLK if this thread holds a non-recursive Locker already
 * (it would wait for itself; not reported); CT_EINVAL for NULL.
 * Thread-safety: any thread. */
CT_EXPORT int ct_locker_acquire(ct_locker_t *l);

/** Let go of the lock once (a recursive Locker taken n times is free after
 * n releases). Returns 0; CT_EINVAL for NULL or if this thread does not
 * hold it. Thread-safety: the holding thread. */
CT_EXPORT int ct_locker_release(ct_locker_t *l);

/** Free a Locker nobody holds. Returns 0; CT_EBUSY if a thread holds it
 * (nothing is freed). ct_locker_free(NULL) returns 0. Thread-safety: any
 * thread, once no other call uses it. */
CT_EXPORT int ct_locker_free(ct_locker_t *l);

#ifdef __cplusplus
}
#endif
#endif
