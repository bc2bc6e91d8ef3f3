/** @file
 * ctasker — named tasks across machines on Redis Streams.
 *
 * A broker handle talks to one Redis server (given by URL) about one queue
 * of one namespace. Tasks are named: a producer submits a name and JSON
 * keyword arguments, and workers that registered that name run it (a handle
 * may be a producer, a worker, or both). A
 * submitted task goes to one stream per priority class (CRITICAL, HIGH,
 * NORMAL, LOW, the supervisor's classes) and has a task record, holding its
 * status and, once run, its result, until the result TTL passes. The keys,
 * stream fields and record fields are the wire format of docs/wire-format.md.
 *
 * The handle owns an extra loop of the supervisor (see loop.h) with one
 * hiredis connection on it. Every deadline is ctasker's own timer: the
 * connect, and each command, whose reply must come within command_timeout
 * (a command that overruns it fails with CT_ETIMEDOUT and the connection is
 * dropped and made again, since the replies behind it are late too). A
 * connection that breaks is made again with a pause growing from 0.1 s to
 * 5 s; a command issued meanwhile waits for it until its own deadline.
 * Every connection failure goes to the log callback with its reason.
 *
 * Calls wait for their reply on the calling thread, so they may be made from
 * any thread but the handle's own loop thread (CT_EDEADLK there). Their
 * asynchronous forms (ct_broker_submit_async(), ct_broker_get_async(),
 * ct_broker_call_async()) never wait: they may be made from any thread, a
 * loop's included, and answer through a callback on a loop.
 *
 * Built without the `redis` feature (hiredis), every call returns
 * CT_ENOTSUP.
 */
#ifndef CTASKER_BROKER_H
#define CTASKER_BROKER_H

#include <jansson.h>

#include "common.h"
#include "loop.h"
#include "supervisor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_broker ct_broker_t; /**< A broker handle: opaque, owned by its creator. */

/** Bytes of a task id: a UUID string (36 characters) and its NUL. */
#define CT_BROKER_ID_SIZE 37

/** Broker options: start from CT_BROKER_OPTS_INIT. */
typedef struct ct_broker_opts {
  size_t size;            /**< sizeof(ct_broker_opts_t), set by CT_BROKER_OPTS_INIT */
  const char *url;        /**< `redis://[user:password@]host[:port][/db]` (user and
                             password percent-encoded, an IPv6 host in brackets,
                             port 6379 by default) or
                             `unix://[user:password@]/path/to/socket[?db=N]`; copied */
  const char *ns;         /**< namespace, the first part of every key; NULL: "ctasker" */
  const char *queue;      /**< queue name (aio-task's routing key); NULL: "default" */
  double connect_timeout; /**< seconds to connect, AUTH and SELECT included; 0: 5;
                             INFINITY or over a day: a day (a deadline must fire) */
  double command_timeout; /**< seconds for the reply to any one command; 0: 5;
                             INFINITY or over a day: a day */
  ct_log_fn log;          /**< connection failures and reconnections; NULL: none */
  void *log_data;         /**< given to log */
} ct_broker_opts_t;

/** The default broker options, with size set (url must still be given). */
#define CT_BROKER_OPTS_INIT {sizeof(ct_broker_opts_t), NULL, NULL, NULL, 0.0, 0.0, NULL, NULL}

/** Create a broker handle on a running supervisor (NULL: the default one)
 * and connect it: returns once connected (AUTH and SELECT from the URL
 * done), or with an error after one attempt within connect_timeout.
 * Returns 0 and *out (owned: free it with ct_broker_free()); CT_EINVAL for a
 * bad URL, namespace or queue (empty, or holding `{`, `}` or a space), a
 * negative or NaN timeout, an opts.size this library does not know; each
 * bad field but the size is named in a line to opts.log);
 * CT_ETIMEDOUT if the server could not be reached, refused the connection,
 * AUTH or SELECT within connect_timeout (the reason is logged);
 * CT_ESHUTDOWN if the supervisor is not running; CT_ENOMEM; CT_EAGAIN or
 * CT_EMFILE (no loop thread); CT_ENOTSUP without the redis feature.
 * Thread-safety: any thread. */
CT_EXPORT int ct_broker_new(ct_supervisor_t *sup, const ct_broker_opts_t *opts,
                            ct_broker_t **out);

/** Close the connection, end the handle's loop and free the handle. Free it
 * before the supervisor is freed (stopping the supervisor first is fine),
 * once no other thread uses it; asynchronous calls still in flight are
 * answered CT_ESHUTDOWN (their callbacks posted to their loops) as it
 * ends the handle's loop. ct_broker_free(NULL) does nothing.
 * Thread-safety: any thread but the handle's own loop thread. */
CT_EXPORT void ct_broker_free(ct_broker_t *broker);

/** Options of one submission: start from CT_BROKER_SUBMIT_OPTS_INIT. */
typedef struct ct_broker_submit_opts {
  size_t size;       /**< sizeof(ct_broker_submit_opts_t), set by CT_BROKER_SUBMIT_OPTS_INIT */
  int priority;      /**< CT_PRIORITY_CRITICAL..CT_PRIORITY_MAX; its class (as the
                        supervisor's: 0, 1..50, 51..100, 101..255) picks the stream */
  double result_ttl; /**< seconds the task record and result are kept after the task
                        ends, and at most while it waits; 0: 86400 (a day); from
                        1e9 (over 30 years) on: 1e9 */
  double delay;      /**< seconds before the task may run (status DELAYED until
                        then); 0: none. At most one of delay and eta */
  double eta;        /**< Unix time (seconds) before which the task does not run
                        (status DELAYED until then; a time past runs it now);
                        0: none */
  const char *key;   /**< idempotency key (1-200 bytes of UTF-8, no control characters),
                        or NULL: while a task submitted with the same key is
                        known (up to its result_ttl after that submission),
                        its id is returned and nothing is enqueued */
  int max_attempts;  /**< runs a task that fails may have in all (an error
                        result; a lost or timed out run counts too); 0: 1,
                        no retry */
  double backoff;    /**< seconds before the first retry, doubled for each
                        further one, with jitter (a random 50-100 %); 0: 1 */
  double backoff_max; /**< longest pause before a retry, in seconds; 0: 3600 */
  double timeout;    /**< seconds one run may take: past it the run is asked to
                        cancel (ct_task_cancel_requested()) and fails with a
                        TimeoutError, retried as any failure; 0: none */
  size_t max_payload; /**< most bytes of kwargs as compact JSON text; a larger
                         submission is refused (CT_EINVAL); 0: 1 MiB */
} ct_broker_submit_opts_t;

/** The default submission options (NORMAL priority, a day's TTL, no delay,
 * no key, one attempt, no run timeout), with size set. */
#define CT_BROKER_SUBMIT_OPTS_INIT                                                       \
  {sizeof(ct_broker_submit_opts_t), CT_PRIORITY_NORMAL, 0.0, 0.0, 0.0, NULL, 0, 0.0, 0.0, \
   0.0, 0}

/** Submit the task `name` with keyword arguments `kwargs` (a JSON object,
 * borrowed; NULL: {}). opts may be NULL for the defaults. On success the
 * task id, a UUID string, is written to id[0..CT_BROKER_ID_SIZE).
 * The name must be one some worker has registered in this queue: otherwise
 * nothing is written and CT_ENOENT is returned. The check and the writes
 * (task record and stream entry) are one script, so a task is never half
 * submitted. A task with a delay or an ETA still ahead waits in the
 * queue's delayed set (status DELAYED) until any worker of the queue, idle
 * or freeing a slot, moves it into its stream once it is due; its record
 * is kept for the wait and result_ttl. With a key that a task submitted
 * earlier still holds, nothing is written and that task's id is returned
 * (0), whatever the other options say.
 * Returns 0; CT_EINVAL (NULL or empty name, a name over 200 bytes, not
 * UTF-8 or with control characters, kwargs not an object, over max_payload
 * bytes or holding a key or string that is not UTF-8 (made with jansson's
 * *_nocheck calls), a priority out of range, a negative, NaN or infinite
 * TTL, delay, eta, backoff, backoff_max or timeout, a delay or eta over 1e9
 * seconds (about 31 years) ahead, both delay and eta, a bad key, a
 * negative max_attempts, an opts.size this library does not know; a bad
 * option is named in a line to the handle's log); CT_ENOENT; CT_ETIMEDOUT (no reply within
 * command_timeout: the task may or may not have been submitted);
 * CT_ESHUTDOWN (the supervisor has stopped, and the handle's loop with it);
 * CT_ENOMEM.
 * Thread-safety: any thread but the handle's loop thread. */
CT_EXPORT int ct_broker_submit(ct_broker_t *broker, const char *name, const json_t *kwargs,
                               const ct_broker_submit_opts_t *opts,
                               char id[CT_BROKER_ID_SIZE]);

/** Submit n tasks at once, in one script call (one round trip, one script
 * run in Redis: far cheaper per task than n ct_broker_submit() calls):
 * task i is the task names[i] with kwargs[i] (borrowed; kwargs may be
 * NULL, and so may kwargs[i]: {}), all with the options opts (NULL: the
 * defaults), which may not carry a key (a key names one task). Each task
 * is checked and written on its own, as by ct_broker_submit(), all or
 * nothing: rcs[i] is 0 and ids[i] its id, or rcs[i] says why task i was
 * not submitted and nothing of it was written: CT_EINVAL (its name or
 * kwargs are bad, or its kwargs are over max_payload bytes), CT_ENOENT (no
 * worker registered its name), CT_ENOMEM. The tasks go into their stream
 * in the order given.
 * Returns 0 if every task was submitted; otherwise rcs[i] of the first
 * that was not; CT_EINVAL with every rcs[i] (if rcs is not NULL) set to it
 * (NULL broker, names, ids or rcs with n > 0, bad options as for
 * ct_broker_submit(), a key), or with rcs untouched for n over 1024; and,
 * for the call as a whole, with every task that was sent
 * given the same code: CT_ETIMEDOUT (no reply within command_timeout: the
 * tasks may or may not have been submitted), CT_EINVAL (the server refused
 * the script: a key of the queue is of another type, or it is out of
 * memory; the tasks before the one it failed on may have been submitted),
 * CT_ESHUTDOWN, CT_ENOMEM. n = 0 does nothing and returns 0.
 * Thread-safety: any thread but the handle's loop thread. */
CT_EXPORT int ct_broker_submit_many(ct_broker_t *broker, size_t n, const char *const names[],
                                    const json_t *const kwargs[],
                                    const ct_broker_submit_opts_t *opts,
                                    char (*ids)[CT_BROKER_ID_SIZE], int rcs[]);

/** Run the task `name` on some worker and wait for its result (RPC), at
 * most `timeout` seconds, a deadline the entry carries: a worker that takes
 * the task after it has passed does not run it (the record then says
 * EXPIRED with a TimeoutError). Arguments and opts as for
 * ct_broker_submit(). The wait is a blocking read (BLPOP) on a connection
 * of the call's own, which the calling thread reads and writes itself,
 * kept for the handle's next call: no polling. Once the handle has seen the
 * name registered, the submission goes on that connection too, with the
 * read behind it in the same write.
 * A call may not carry a key (CT_EINVAL): it is answered once, to its caller.
 * Returns 0 and *result, a new reference to the result or to the exception
 * JSON (ct_result_is_error() tells; a task moved to the dead letters
 * answers with its DeliveryLimit exception); CT_ETIMEDOUT when the deadline passed
 * first (the task may still run, or have run; also when a worker found the
 * deadline passed and did not run it, its record EXPIRED); CT_EINVAL (as for submit,
 * a NULL result, a timeout not > 0: INFINITY waits for ever); CT_ENOENT
 * (no worker registered the name); CT_ESHUTDOWN (the handle's supervisor
 * has stopped, also while the call waits); CT_EDEADLK (on the handle's loop
 * thread); CT_ENOMEM. *result is NULL on error. Every command of the call is bounded by what is left of its
 * timeout (and the command timeout), so a server that stalls holds it past
 * its deadline by a fraction of a second at most.
 * Thread-safety: any thread but the handle's loop thread; calls from
 * several threads wait at once, each on its own connection. */
CT_EXPORT int ct_broker_call(ct_broker_t *broker, const char *name, const json_t *kwargs,
                             const ct_broker_submit_opts_t *opts, double timeout,
                             json_t **result);

/** A task's status as its record says. */
typedef enum ct_broker_status {
  CT_BROKER_QUEUED = 0,    /**< in its stream, not yet run */
  CT_BROKER_RUNNING = 1,   /**< a worker runs it, and has for 0.1 s at least (a
                              shorter run's record goes from QUEUED to its end) */
  CT_BROKER_COMPLETED = 2, /**< terminal: finished with a result */
  CT_BROKER_FAILED = 3,    /**< terminal: finished with an exception */
  CT_BROKER_DEAD = 4,      /**< terminal: moved to the dead letters */
  CT_BROKER_DELAYED = 5,   /**< waiting for its delay or ETA to pass */
  CT_BROKER_RETRYING = 6,  /**< a run failed; waiting for its backoff to pass */
  CT_BROKER_EXPIRED = 7    /**< terminal: an RPC whose caller's deadline passed
                              before it could run */
} ct_broker_status_t;

/** What ct_broker_get() reports. Times are Unix times in seconds (they
 * cross machines, so not ct_now()'s clock), 0 if that has not happened. */
typedef struct ct_broker_info {
  ct_broker_status_t status; /**< now */
  int attempts;              /**< the number of its last run seen (running, retried
                                or ended); 0 before */
  double created;            /**< submitted */
  double started;            /**< the last run started */
  double finished;           /**< ended */
  json_t *result;            /**< the result or the exception JSON, a new reference
                                (json_decref() it); NULL until terminal */
} ct_broker_info_t;

/** The status of the task `id` and, once terminal, its result.
 * Returns 0 and *out; CT_ENOENT if no such task is known (never submitted,
 * or its result TTL has passed); CT_EINVAL (NULL argument, an id that is not
 * a UUID string as ct_broker_submit() makes them, or a record that is not in
 * the wire format: the reason is logged); CT_ETIMEDOUT; CT_ESHUTDOWN;
 * CT_ENOMEM. Thread-safety: any thread but the handle's loop thread. */
CT_EXPORT int ct_broker_get(ct_broker_t *broker, const char *id, ct_broker_info_t *out);

/** The answer of ct_broker_submit_async(): rc as ct_broker_submit()
 * returns it and, if 0, the task id (valid during the callback: copy it to
 * keep it), else NULL. Runs on the loop the call named. */
typedef void (*ct_broker_submit_cb)(int rc, const char *id, void *data);

/** The answer of ct_broker_get_async(): rc as ct_broker_get() returns it
 * and, if 0, the task's info, else NULL. info and its result are valid
 * during the callback (json_incref() the result to keep it). Runs on the
 * loop the call named. */
typedef void (*ct_broker_get_cb)(int rc, const ct_broker_info_t *info, void *data);

/** The answer of ct_broker_call_async(): rc as ct_broker_call() returns it
 * and, if 0, the result or the exception JSON (ct_result_is_error()
 * tells), valid during the callback (json_incref() it to keep it), else
 * NULL. Runs on the loop the call named. */
typedef void (*ct_broker_call_cb)(int rc, json_t *result, void *data);

/** ct_broker_submit() that does not wait: the submission is checked now
 * (every error ct_broker_submit() finds without Redis is returned here, the
 * same, and cb is never called), kwargs are copied before it returns, and
 * cb(rc, id, data) runs later on `loop` (NULL: the supervisor's default
 * loop, ct_loop_get()) with what ct_broker_submit() would have returned:
 * 0 and the id, CT_ENOENT, CT_ETIMEDOUT (no reply within command_timeout),
 * CT_ENOMEM, or CT_ESHUTDOWN if the handle is freed or its supervisor
 * stops first.
 * Returns 0: cb runs exactly once, on `loop`'s thread (or, if that loop has
 * ended by then, at once on the handle's own loop thread); CT_EINVAL (NULL
 * broker or cb, and as ct_broker_submit()); CT_ESHUTDOWN (the handle's loop
 * has ended); CT_ENOMEM.
 * Thread-safety: any thread, loop threads included (the handle's own
 * too). */
CT_EXPORT int ct_broker_submit_async(ct_broker_t *broker, const char *name,
                                     const json_t *kwargs,
                                     const ct_broker_submit_opts_t *opts, ct_loop_t *loop,
                                     ct_broker_submit_cb cb, void *data);

/** ct_broker_get() that does not wait: cb(rc, info, data) runs later on
 * `loop` (NULL: the default loop) with what ct_broker_get() would have
 * returned, or CT_ESHUTDOWN if the handle is freed or its supervisor
 * stops first. Returns 0: cb runs exactly once, as for
 * ct_broker_submit_async(); CT_EINVAL (NULL broker or cb, an id that is
 * not a task id); CT_ESHUTDOWN; CT_ENOMEM (cb is then never called).
 * Thread-safety: any thread, loop threads included. */
CT_EXPORT int ct_broker_get_async(ct_broker_t *broker, const char *id, ct_loop_t *loop,
                                  ct_broker_get_cb cb, void *data);

/** ct_broker_call() that does not wait: the task is submitted with the
 * same deadline (a worker that takes it after `timeout` seconds does not
 * run it), and cb(rc, result, data) runs later on `loop` (NULL: the
 * default loop) with the result or the exception JSON (0), CT_ETIMEDOUT
 * when the deadline passes first (at the deadline, even if Redis stalls:
 * the timer is the handle's own; or earlier, when a worker's answer says it
 * found the deadline passed and did not run the task), CT_ENOENT, CT_ENOMEM, or CT_ESHUTDOWN if
 * the handle is freed or its supervisor stops first. The calls of a handle
 * wait on connections of its own, made as needed, each with one blocking
 * read (BLPOP) on the done lists of up to 256 calls waiting: many calls in
 * flight cost a connection (and its loop thread) per 256, not one each,
 * and an answer costs Redis the same whatever the number in flight.
 * Order: answers that are all waiting when the calls' blocking read looks
 * are taken oldest first, by the order in which the server took the
 * submissions: the calls' order, except that a submission sent again
 * because the server had lost the submit script (a restart, SCRIPT FLUSH)
 * lands behind those sent meanwhile. An answer that comes while the read
 * blocks is taken as it comes; one read from the task's record (a dead
 * letter, a late duplicate) comes a round trip later, maybe after younger
 * ones; calls on different connections (over 256 waiting) and callbacks
 * on different loops have no order between them.
 * Returns 0: cb runs exactly once, as for ct_broker_submit_async();
 * CT_EINVAL (NULL broker or cb, a timeout not > 0: INFINITY waits for
 * ever, and as ct_broker_call()); CT_ESHUTDOWN; CT_ENOMEM (cb is then
 * never called). Thread-safety: any thread, loop threads included. */
CT_EXPORT int ct_broker_call_async(ct_broker_t *broker, const char *name,
                                   const json_t *kwargs, const ct_broker_submit_opts_t *opts,
                                   double timeout, ct_loop_t *loop, ct_broker_call_cb cb,
                                   void *data);

/** A task handler: runs the task `name` it was registered for, on a pool
 * thread of the supervisor, with `kwargs` (borrowed: valid during the
 * call) and `self`, the supervisor task that runs it (ct_task_cancel_requested()
 * works as for any task). Returns the result as ct_task_fn does: a new
 * reference, NULL for JSON null, or an error made with ct_error_new(),
 * which is stored as the task's exception (status FAILED) once it has no
 * run left (see max_attempts, CT_BROKER_REJECT, CT_BROKER_RETRY). A result
 * that cannot be written as JSON is stored as a NotSerializable exception. */
typedef json_t *(*ct_broker_handler_fn)(ct_task_t *self, const json_t *kwargs, void *data);

/** The exception class of a handler outcome that fails the task at once,
 * without a retry whatever max_attempts says (aio-pika's RejectMessage):
 * `return ct_error_new(CT_BROKER_REJECT, "why");` */
#define CT_BROKER_REJECT "Reject"

/** The exception class of a handler outcome that puts the task back at
 * once, without the backoff (aio-pika's NackMessage with requeue), while
 * it has runs left under max_attempts; on its last run it fails as any
 * error: `return ct_error_new(CT_BROKER_RETRY, "why");` */
#define CT_BROKER_RETRY "Retry"

/** Register `fn` (with `data`) as the handler of the task `name` (copied)
 * in this handle's queue. Registration closes when the worker starts.
 * Returns 0; CT_EINVAL (NULL broker or fn, a bad name as for
 * ct_broker_submit()); CT_EBUSY if the name is registered already or the
 * worker has started; CT_ENOMEM. Thread-safety: any thread. */
CT_EXPORT int ct_broker_register(ct_broker_t *broker, const char *name, ct_broker_handler_fn fn,
                                 void *data);

/** Register the process function `function` (registered with
 * ct_process_register(), process.h) as the handler of the task `name`:
 * each run calls it in a child of the supervisor's process pool (create
 * the pool with ct_process_pool_create() before the worker starts) with
 * the task's kwargs, and its result is the task's; a child that crashes or
 * runs past `timeout` seconds (a hard timeout: the child is killed;
 * INFINITY: none) gives
 * a ProcessCrashed or TimeoutError exception, retried per the task's
 * policy as any error. A run canceled while its child works (its lease was
 * lost, or its run timeout passed) has its child killed (ct_task_cancel()
 * on its process task, process.h) and ends as canceled once the child's
 * task has ended, at once after the kill: no child works on for a run
 * that was given up. Registration closes when the worker starts.
 * Returns 0; CT_EINVAL (NULL broker or function, an empty function, a
 * timeout not > 0, a bad name as for ct_broker_register()); CT_EBUSY (the
 * name is registered already, or the worker has started); CT_ENOMEM;
 * CT_ENOTSUP without the redis feature. Thread-safety: any thread. */
CT_EXPORT int ct_broker_register_process(ct_broker_t *broker, const char *name,
                                         const char *function, double timeout);

typedef struct ct_broker_run ct_broker_run_t; /**< One run of a loop handler: opaque, the
                                                  handler's until it completes it. */

struct ev_loop;

/** A loop handler (ct_broker_register_loop()): starts one run of the task
 * `name` it was registered for, on its loop's thread, with `ev`, that
 * loop's libev loop (for the handler's own watchers, on this thread only,
 * as in a ct_loop_fn), and `kwargs` (the run's own copy, borrowed: valid
 * until the run is completed). It must not block. It ends the run by
 * calling ct_broker_run_complete() exactly once, on that loop's thread:
 * before it returns (a result at once), or later
 * from a watcher of its own on that loop (waiting for I/O without holding
 * the loop). The outcome is a thread handler's: a result, an error made
 * with ct_error_new() (CT_BROKER_REJECT, CT_BROKER_RETRY as there), a
 * result that cannot be written as JSON stored as NotSerializable. */
typedef void (*ct_broker_loop_fn)(ct_broker_run_t *run, struct ev_loop *ev,
                                  const json_t *kwargs, void *data);

/** Called on a loop handler's loop thread, with its libev loop, when its
 * run is asked to cancel (ct_broker_run_on_cancel()). */
typedef void (*ct_broker_cancel_fn)(ct_broker_run_t *run, struct ev_loop *ev, void *data);

/** Register `fn` (with `data`) as the handler of the task `name` in this
 * handle's queue, run on the loop named `loop` (see loop.h; NULL: the
 * supervisor's default loop, as it is now) rather than on a pool thread,
 * for non-blocking work. Each run counts as any task of the worker: it
 * holds one of the worker's slots (concurrency) from its fetch until it
 * completes, its lease is renewed, its result stored before its entry is
 * acknowledged (the first completion wins), a failure retried per the
 * task's policy; a pool thread of the supervisor waits for the
 * completion (so that the worker and the supervisor count the run as
 * they count any other) while the handler runs on the loop. A run whose
 * lease is lost, or whose run timeout passes, or that is canceled
 * otherwise, is asked to cancel: ct_broker_run_canceled() says so, and the
 * callback given to ct_broker_run_on_cancel() runs on the loop; the run
 * ends at once as canceled (a TimeoutError past its timeout) and what the
 * handler completes it with afterwards is dropped. A run whose loop ends
 * (ct_loop_stop(), the supervisor's stop) before it is completed, or that
 * cannot be posted to its loop, fails with a LoopUnavailable exception.
 * A stop of the worker waits for runs still to be completed, as for any
 * running task. Registration closes when the worker starts.
 * Returns 0; CT_EINVAL (NULL broker or fn, a bad name as for
 * ct_broker_register()); CT_ENOENT (no loop of that name); CT_EBUSY (the
 * name is registered already, or the worker has started); CT_ENOMEM;
 * CT_ENOTSUP without the redis feature. Thread-safety: any thread. */
CT_EXPORT int ct_broker_register_loop(ct_broker_t *broker, const char *name, const char *loop,
                                      ct_broker_loop_fn fn, void *data);

/** Complete a loop handler's run with `result` (stolen: a new reference,
 * NULL for JSON null, or an error made with ct_error_new()). Call it
 * exactly once per run, on the run's loop thread; `run` is invalid
 * afterwards. A run that was asked to cancel must still be completed
 * (its record is freed then): its result is dropped.
 * ct_broker_run_complete(NULL, r) drops r. Thread-safety: the run's loop
 * thread only. */
CT_EXPORT void ct_broker_run_complete(ct_broker_run_t *run, json_t *result);

/** True once the run has been asked to cancel (its lease was lost, its run
 * timeout passed, its supervisor task was canceled); false for NULL.
 * Thread-safety: any thread, while the run is not completed. */
CT_EXPORT bool ct_broker_run_canceled(ct_broker_run_t *run);

/** Have fn(run, ev, data) called on the run's loop thread if the run is asked
 * to cancel before it is completed (at most once; a later call replaces
 * the callback, NULL removes it). Set it in the handler itself: the notice
 * comes after the handler has returned, and a callback set after the
 * notice has come is not called (ct_broker_run_canceled() tells). The
 * callback typically stops the handler's watchers and completes the run.
 * Does nothing for NULL.
 * Thread-safety: the run's loop thread only. */
CT_EXPORT void ct_broker_run_on_cancel(ct_broker_run_t *run, ct_broker_cancel_fn fn,
                                       void *data);

/** Worker options: start from CT_BROKER_WORKER_OPTS_INIT. */
typedef struct ct_broker_worker_opts {
  size_t size;         /**< sizeof(ct_broker_worker_opts_t), set by CT_BROKER_WORKER_OPTS_INIT */
  int concurrency;     /**< most tasks run at once (and so fetched); 0: 4 */
  const char *consumer; /**< this worker's consumer name in the group, copied;
                           NULL: "<host>-<pid>-<n>" */
  double lease;        /**< seconds a task stays this worker's without a renewal;
                          renewed every lease / 3 while it runs; 0: 30 */
  int max_deliveries;  /**< a task delivered more often than this (its workers
                          died or went silent) goes to the dead letters; 0: 5 */
  bool allow_eviction; /**< start even if Redis's maxmemory-policy may evict
                          task data (anything but noeviction); false: refuse */
} ct_broker_worker_opts_t;

/** The default worker options, with size set. */
#define CT_BROKER_WORKER_OPTS_INIT {sizeof(ct_broker_worker_opts_t), 0, NULL, 0.0, 0, false}

/** Start serving the registered names: they are added to the queue's names
 * set (so that producers may submit them), and a fetch thread with its own
 * connection takes tasks from the streams, highest priority class first,
 * never more than there are free slots (concurrency minus tasks running),
 * and blocks in Redis while there is nothing to take. Each task runs
 * through the supervisor (ct_background_task(), at its class's priority):
 * the record says RUNNING with the run's number once the run has lasted
 * 0.1 s, then the result or the
 * exception is stored in the record (kept result_ttl seconds) before the
 * stream entry is acknowledged and deleted; a record already terminal is
 * not overwritten (the first completion wins). While a task runs, its
 * lease is renewed from the handle's loop thread, so a handler that hogs a
 * CPU cannot lose it; a task whose worker has been silent for a lease
 * (died, hung, cut off) is taken over by any worker of the queue, its
 * delivery count grows, and past max_deliveries it goes to the dead letters
 * with status DEAD and a DeliveryLimit exception. A task whose name has no
 * handler here fails with UnknownTask; a malformed entry goes to the
 * queue's dead-letter stream with the reason (capped at about 10000
 * entries), and the task it names, if any, is DEAD with a MalformedTask
 * exception (kwargs over the worker's 16 MiB limit make an entry
 * malformed). While it runs, the worker keeps a liveness record
 * (`worker:<consumer>`: host, pid, names, concurrency, tasks in flight,
 * lease), refreshed every lease / 3 and expiring after three leases, and a
 * place in the `workers` set scored by that expiry; both go when it stops.
 * Delayed tasks that are due are moved into their streams by the fetch
 * thread before each fetch; while idle it blocks until the earliest one is
 * due (at most 1 s), and a new delayed task wakes it to learn its time.
 * A run that fails (an error result, a TimeoutError past the task's
 * timeout) while the task has runs left under its max_attempts goes back
 * into the delayed set, due after its backoff (status RETRYING, the
 * entry acknowledged); a Reject fails at once, a Retry comes back without
 * the backoff. A run past its timeout, or whose entry another worker has
 * taken over (learnt at a renewal), has its cooperative cancel flag set
 * (ct_task_cancel_requested()); what a run whose lease was lost returns
 * is dropped, its new owner's run counts.
 * Returns 0; CT_ENOTSUP (logged) if the server's maxmemory-policy is not
 * noeviction, so that it could evict streams, records or results before
 * their time, and allow_eviction is false (a server that refuses CONFIG
 * GET is taken at its word: a warning is logged); CT_EINVAL (NULL broker,
 * no handler registered, bad opts: a
 * negative concurrency or max_deliveries, a lease that is not 0 or from
 * 0.1 s to a day; a bad option is named in a line to the handle's log);
 * CT_EBUSY if started already; CT_ETIMEDOUT (Redis did not answer);
 * CT_ESHUTDOWN; CT_ENOMEM; CT_EAGAIN (no thread).
 * Thread-safety: any thread but the handle's loop thread. */
CT_EXPORT int ct_broker_worker_start(ct_broker_t *broker, const ct_broker_worker_opts_t *opts);

/** Stop the worker: it fetches nothing more (what it has fetched is
 * running; what it has not is left in the streams for others), and waits
 * for its running tasks to end and their results to be stored (a blocking
 * read of the fetch thread is ended with CLIENT UNBLOCK, one command on the
 * handle's connection even with timeout 0). timeout in seconds: < 0 waits
 * until then, 0 does not wait, > 0 waits at most that long (NaN:
 * CT_EINVAL). Returns 0 once stopped (for timeout 0: the stop under way);
 * CT_EAGAIN once stopped if Redis did not take the outcome of a run that
 * ended during the stop (no answer, or a refusal; logged): its entry stays
 * pending, for a worker to run again after its lease (a run given up as
 * the supervisor stopped is not counted: it has no outcome); CT_ETIMEDOUT if
 * tasks still run (call again to wait more); CT_EINVAL if the worker never
 * started. ct_broker_free() stops it and waits.
 * Thread-safety: any thread but the worker's own tasks and the handle's
 * loop thread. */
CT_EXPORT int ct_broker_worker_stop(ct_broker_t *broker, double timeout);

#ifdef __cplusplus
}
#endif
#endif
