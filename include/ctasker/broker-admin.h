/** @file
 * ctasker — the Redis mode's operator API: what a queue holds, its dead
 * letters, its live workers, and what a worker has run.
 *
 * The reads are for dashboards and the `ctasker` command: each is one Lua
 * script whose cost grows with the number of priority classes, of entries
 * asked for, or of live workers, never with the number of tasks (no SCAN,
 * no KEYS, no walk over a stream), so that watching a busy queue cannot
 * block Redis. Results are JSON, so that new fields can be added without
 * changing a structure's layout. The keys are those of docs/wire-format.md.
 *
 * Built without the `redis` feature, every call returns CT_ENOTSUP.
 */
#ifndef CTASKER_BROKER_ADMIN_H
#define CTASKER_BROKER_ADMIN_H

#include "broker.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The status's name as the task record stores it ("queued", "running",
 * "completed", "failed", "dead", "delayed", "retrying", "expired"), or NULL
 * for a value out of range.
 * Thread-safety: any thread. */
CT_EXPORT const char *ct_broker_status_name(ct_broker_status_t status);

/** The handle's queue as it is now. *out is a new object:
 * `{"queue": name, "levels": [{"level": "critical", "ready": n, "pending": n,
 * "oldest_pending_age": seconds, "completed": n, "failed": n, "retried": n,
 * "expired": n}, ...], "delayed": n, "dead": n, "workers": n}`, the levels
 * highest class first. `ready`: entries
 * no worker has taken yet; `pending`: taken, not yet acknowledged (running,
 * or owned by a worker that died and not yet reclaimed);
 * `oldest_pending_age`: seconds since the oldest pending entry was
 * submitted (0 if none); `completed`, `failed`, `retried` (a retry
 * scheduled) and `expired` (an RPC whose caller had gone): runs the queue's
 * workers have ended so, counted since the queue was made (a worker adds
 * its counts within about a second of a run's end, and what is left when
 * it stops);
 * `delayed`: tasks waiting for a delay, an ETA or a retry's backoff;
 * `dead`: entries in the dead letters; `workers`: live workers.
 * Returns 0; CT_EINVAL (NULL argument); CT_ETIMEDOUT; CT_ESHUTDOWN;
 * CT_ENOMEM. Thread-safety: any thread but the handle's loop thread. */
CT_EXPORT int ct_broker_queue_stats(ct_broker_t *broker, json_t **out);

/** Up to `count` (1..1000) dead letters, oldest first, starting after the
 * dead-letter entry id `after` (NULL: from the first). *out is a new array
 * of objects, each as ct_broker_dead_get() gives one.
 * Returns 0; CT_EINVAL (NULL broker or out, count out of range, `after`
 * not a stream entry id); CT_ETIMEDOUT; CT_ESHUTDOWN; CT_ENOMEM.
 * Thread-safety: any thread but the handle's loop thread. */
CT_EXPORT int ct_broker_dead_list(ct_broker_t *broker, const char *after, size_t count,
                                  json_t **out);

/** The dead letter with entry id `entry`: *out is a new object with
 * `"dead_entry"` (its id in the dead letters), `"reason"`, `"stream"` (the
 * level it came from), `"entry"` (its id there), then the task's own fields
 * as the stream entry had them (`"id"`, `"name"`, `"kwargs"` as text,
 * `"enqueued"`...), when present.
 * Returns 0; CT_ENOENT (no such dead letter); CT_EINVAL; CT_ETIMEDOUT;
 * CT_ESHUTDOWN; CT_ENOMEM. Thread-safety: any thread but the handle's loop
 * thread. */
CT_EXPORT int ct_broker_dead_get(ct_broker_t *broker, const char *entry, json_t **out);

/** Submit the dead letter `entry` again, in one script: its task goes back
 * to the stream it came from with its own id, name and kwargs (not its RPC
 * deadline: that caller has gone), its record says `queued` again with its
 * result removed and its attempts kept, and the dead letter is deleted.
 * The task id is written to id[0..CT_BROKER_ID_SIZE).
 * Returns 0; CT_ENOENT (no such dead letter); CT_EINVAL (a NULL argument, or
 * a dead letter that a worker would bury again: malformed, as a worker
 * decodes its bytes, such as a name that is not UTF-8 or kwargs that are
 * not a JSON object, or without a valid level; logged); CT_ETIMEDOUT;
 * CT_ESHUTDOWN; CT_ENOMEM.
 * Thread-safety: any thread but the handle's loop thread. */
CT_EXPORT int ct_broker_dead_retry(ct_broker_t *broker, const char *entry,
                                   char id[CT_BROKER_ID_SIZE]);

/** Delete the dead letter `entry`, or all of them when `entry` is NULL
 * (UNLINK: Redis frees the stream in the background). *removed (may be
 * NULL) is set to how many went. Task records are left to expire.
 * Returns 0 (also when there was nothing to delete); CT_EINVAL;
 * CT_ETIMEDOUT; CT_ESHUTDOWN; CT_ENOMEM. Thread-safety: any thread but the
 * handle's loop thread. */
CT_EXPORT int ct_broker_dead_purge(ct_broker_t *broker, const char *entry, long long *removed);

/** The queue's live workers: *out is a new array of their liveness records
 * (`"consumer"`, `"host"`, `"pid"`, `"names"`, `"concurrency"`,
 * `"in_flight"`, `"lease"`, and `"expires"`: Unix seconds), by consumer
 * name.
 * Returns 0; CT_EINVAL; CT_ETIMEDOUT; CT_ESHUTDOWN; CT_ENOMEM.
 * Thread-safety: any thread but the handle's loop thread. */
CT_EXPORT int ct_broker_workers(ct_broker_t *broker, json_t **out);

/** What a worker tells its observer (ct_broker_worker_observe()). */
typedef enum ct_broker_event_kind {
  CT_BROKER_EVENT_START = 0, /**< a task's handler is about to run */
  CT_BROKER_EVENT_END = 1,   /**< a task ended and its outcome was stored (or
                                could not be: then it stays pending) */
  CT_BROKER_EVENT_DEAD = 2   /**< this worker moved an entry to the dead letters
                                (delivered too often, or malformed), without
                                running it; told on the worker's fetch thread */
} ct_broker_event_kind_t;

/** One event of a worker's task. Strings are borrowed for the call. */
typedef struct ct_broker_event {
  ct_broker_event_kind_t kind; /**< start, end or dead */
  const char *name;            /**< the task name ("" for a dead entry that
                                  names none); always UTF-8: a dead entry's
                                  bytes that are not are each replaced by
                                  U+FFFD */
  const char *id;              /**< the task id ("" for a dead entry without a
                                  valid one) */
  const char *level;           /**< "critical", "high", "normal" or "low"
                                  ("delayed" for a malformed member of the
                                  delayed set, buried from there) */
  ct_broker_status_t status;   /**< START: RUNNING. END: COMPLETED or FAILED (stored),
                                  RETRYING (a retry is scheduled), EXPIRED (the
                                  caller's deadline had passed), or RUNNING (its
                                  lease was lost: another worker owns it now).
                                  DEAD: DEAD */
  double queue_wait;           /**< seconds from submission to this start
                                  (across machines: clocks may differ; never < 0) */
  double run_time;             /**< END: seconds the run took; START, DEAD: 0 */
} ct_broker_event_t;

/** Called before a task's handler on the pool thread that runs it, after
 * its outcome is stored on the worker's store thread (on the pool thread
 * for a retry or a lost lease, which store nothing), and on the worker's
 * fetch thread for an entry it buries; must be quick and thread-safe
 * (several tasks run at once). It should ignore kinds it does not know: more may come. */
typedef void (*ct_broker_observe_fn)(const ct_broker_event_t *event, void *data);

/** Have `fn` (with `data`) told of every task this handle's worker starts
 * and ends, and of every entry it moves to the dead letters, e.g. to keep
 * per-name metrics. Set it before
 * ct_broker_worker_start(); NULL removes it.
 * Returns 0; CT_EINVAL (NULL broker); CT_EBUSY once the worker has started;
 * CT_ENOTSUP without the redis feature. Thread-safety: any thread. */
CT_EXPORT int ct_broker_worker_observe(ct_broker_t *broker, ct_broker_observe_fn fn,
                                       void *data);

#ifdef __cplusplus
}
#endif
#endif
