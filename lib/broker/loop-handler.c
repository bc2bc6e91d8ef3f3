/* Loop handlers: a task name served by a function that runs on a ctasker
 * loop (the default one or a named one) rather than on a pool thread, for
 * non-blocking work that may complete at once or later, from a watcher of
 * its own on that loop.
 *
 * A loop handler is a thread handler (ct_broker_register()) whose data
 * names the loop and the function, as a process handler is: the worker
 * runs it as any task (its slot, lease renewal, run deadline, result
 * stored before the entry is acknowledged, retries), and the pool thread
 * that runs it posts the call to the loop and waits for the run's
 * completion (ct_broker_run_complete()). While it waits it watches its own
 * cancel flag (a lost lease, a run timeout): then it marks the run
 * canceled, posts the notice to the loop (ct_broker_run_on_cancel()) and
 * ends the run as canceled at once; what the handler completes it with
 * later is dropped. It also asks, every second, whether the loop still
 * takes calls: a loop that has ended (ct_loop_stop(), a supervisor's stop)
 * never runs the handler's watchers again, so once its thread is gone the
 * run ends with a LoopUnavailable error instead of waiting for ever.
 *
 * Why a pool thread waits, rather than the loop alone carrying the run:
 * the worker hands a run's outcome to its store from the thread that ran
 * the task, once the task function returns, and the supervisor counts,
 * drains and cancels it as a task; going through that path unchanged
 * keeps every guarantee of a thread handler. The cost is a pool thread
 * per run in flight, which the worker's concurrency bounds.
 *
 * A run (ct_broker_run_t) is shared by the waiting pool thread and the
 * loop, and counted: one reference for each side (the loop's, taken by
 * the posted start and then the handler, is dropped by the completion),
 * one for a cancel notice posted and not yet run. Its lock guards refs, completed, abandoned, canceled, result and
 * on_cancel; the run owns a copy of the kwargs, so that a handler may read
 * them until it completes, even after the worker has given up on it, and
 * drops it on the loop thread as it completes, before the result changes
 * threads (a result may share values with the kwargs).
 *
 * The settings live as long as the handle: each is linked into b->loops
 * (under b->lock) and freed by ct_broker_free(), after the worker's tasks
 * have ended. A run copies what it needs of them, since a call posted to
 * a loop may run after that.
 */
#include <stdlib.h>
#include <time.h>

#include "broker-internal.h"
#include "ctasker/loop.h"
#include "ctasker/result.h"
#include "ctasker/task.h"

#define WATCH_EVERY 0.05 /* seconds between looks at the cancel flag */
#define PING_EVERY 20    /* looks between asks whether the loop still runs: 1 s */

struct ct__bloop {
  ct__bloop_t *next;
  ct_loop_t *loop;
  ct_broker_loop_fn fn;
  void *data;
};

struct ct_broker_run {
  pthread_mutex_t lock;
  pthread_cond_t cond;     /* the waiting pool thread: completed */
  int refs;                /* lock */
  bool completed;          /* lock: ct_broker_run_complete() was called */
  bool abandoned;          /* lock: the pool thread no longer waits for it */
  bool canceled;           /* lock: asked to cancel */
  json_t *result;          /* lock: the completion's, until the waiter takes it */
  ct_broker_cancel_fn on_cancel; /* lock */
  void *cancel_data;       /* lock */
  ct_loop_t *loop;
  ct_broker_loop_fn fn;
  void *data;
  json_t *kwargs;          /* the run's own copy, the loop's until the completion */
};

static void run_release(ct_broker_run_t *run, int n) {
  pthread_mutex_lock(&run->lock);
  run->refs -= n;
  bool last = run->refs == 0;
  pthread_mutex_unlock(&run->lock);
  if (!last)
    return;
  json_decref(run->result);
  json_decref(run->kwargs);
  pthread_cond_destroy(&run->cond);
  pthread_mutex_destroy(&run->lock);
  free(run);
}

static ct_broker_run_t *run_new(const ct__bloop_t *h, const json_t *kwargs) {
  ct_broker_run_t *run = calloc(1, sizeof *run);
  if (!run)
    return NULL;
  run->kwargs = json_deep_copy(kwargs);
  if (!run->kwargs) {
    free(run);
    return NULL;
  }
  pthread_mutex_init(&run->lock, NULL);
  pthread_cond_init(&run->cond, NULL);
  run->refs = 2; /* the pool thread, the loop's side (the start's, then the handler's) */
  run->loop = h->loop;
  run->fn = h->fn;
  run->data = h->data;
  return run;
}

/* On the loop: call the handler, unless the run was given up before it
 * could start (it is then completed here, with nothing). The run is not
 * touched after the handler: it may have completed it. */
static void run_start(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ct_broker_run_t *run = data;
  pthread_mutex_lock(&run->lock);
  bool abandoned = run->abandoned;
  pthread_mutex_unlock(&run->lock);
  if (abandoned)
    ct_broker_run_complete(run, NULL);
  else
    run->fn(run, ev, run->kwargs, run->data);
}

/* On the loop: tell a run still going that it is asked to cancel. */
static void run_notify(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ct_broker_run_t *run = data;
  pthread_mutex_lock(&run->lock);
  ct_broker_cancel_fn fn = run->completed ? NULL : run->on_cancel;
  void *cancel_data = run->cancel_data;
  pthread_mutex_unlock(&run->lock);
  if (fn)
    fn(run, ev, cancel_data);
  run_release(run, 1);
}

/* Post fn(run) to the run's loop with a reference of its own. */
static int run_post(ct_broker_run_t *run, ct_loop_fn fn) {
  pthread_mutex_lock(&run->lock);
  run->refs++;
  pthread_mutex_unlock(&run->lock);
  int rc = ct_loop_call(run->loop, fn, run);
  if (rc != 0)
    run_release(run, 1);
  return rc;
}

static void no_op(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  (void)data;
}

/* Whether the loop has ended for good: it refuses calls, and its thread,
 * waited for, has run what it held. A loop that cannot be waited for (the
 * supervisor's own, which ends after the pool threads) has not. */
static bool loop_gone(ct_loop_t *loop) {
  int rc = ct_loop_call(loop, no_op, NULL);
  return rc == CT_ESHUTDOWN && ct_loop_stop(loop, -1) == 0;
}

/* The pool thread: let go of the run, done with it or giving up on it.
 * The loop's side is dropped here too if the loop has ended, since nothing
 * can complete the run any more. */
static void run_leave(ct_broker_run_t *run, bool loop_ended) {
  pthread_mutex_lock(&run->lock);
  run->abandoned = true;
  int drop = 1 + (loop_ended && !run->completed);
  run->completed = run->completed || loop_ended;
  pthread_mutex_unlock(&run->lock);
  run_release(run, drop);
}

/* The pool thread: ask the run to cancel, and give up on it. */
static json_t *run_cancel(ct_broker_run_t *run) {
  pthread_mutex_lock(&run->lock);
  run->canceled = true;
  pthread_mutex_unlock(&run->lock);
  bool ended = run_post(run, run_notify) == CT_ESHUTDOWN && loop_gone(run->loop);
  run_leave(run, ended);
  return ct_error_new("CancelledError", "the run was canceled");
}

static void deadline_in(struct timespec *ts, double seconds) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_nsec += (long)(seconds * 1e9);
  ts->tv_sec += ts->tv_nsec / 1000000000;
  ts->tv_nsec %= 1000000000;
}

/* How a wait for a run's completion ended. */
enum { COMPLETED, CANCELED, LOOP_ENDED };

/* The pool thread: wait for the completion, watching the cancel flag and
 * the loop. Returns how it ended, with the result if COMPLETED. */
static int run_wait(ct_broker_run_t *run, ct_task_t *self, json_t **result) {
  pthread_mutex_lock(&run->lock);
  for (int looks = 1; !run->completed; looks++) {
    struct timespec ts;
    deadline_in(&ts, WATCH_EVERY);
    if (pthread_cond_timedwait(&run->cond, &run->lock, &ts) == 0 || run->completed)
      continue;
    pthread_mutex_unlock(&run->lock);
    if (ct_task_cancel_requested(self))
      return CANCELED;
    bool gone = looks % PING_EVERY == 0 && loop_gone(run->loop);
    pthread_mutex_lock(&run->lock);
    if (gone && !run->completed) { /* what the loop held last did not complete it */
      pthread_mutex_unlock(&run->lock);
      return LOOP_ENDED;
    }
  }
  *result = run->result;
  run->result = NULL;
  pthread_mutex_unlock(&run->lock);
  return COMPLETED;
}

static json_t *run_loop(ct_task_t *self, const json_t *kwargs, void *data) {
  const ct__bloop_t *h = data;
  ct_broker_run_t *run = run_new(h, kwargs);
  if (!run)
    return ct_error_new("MemoryError", "no memory for a run on loop \"%s\"",
                        ct_loop_name(h->loop));
  int rc = ct_loop_call(run->loop, run_start, run);
  if (rc != 0) {
    run_release(run, 2);
    return ct_error_new("LoopUnavailable", "loop \"%s\" cannot run the handler: %s",
                        ct_loop_name(h->loop), ct_strerror(rc));
  }
  json_t *result = NULL;
  int how = run_wait(run, self, &result);
  if (how == COMPLETED) {
    run_leave(run, false); /* the pool thread's reference */
    return result;
  }
  if (how == CANCELED)
    return run_cancel(run);
  run_leave(run, true);
  return ct_error_new("LoopUnavailable", "loop \"%s\" ended before the run completed",
                      ct_loop_name(h->loop));
}

void ct_broker_run_complete(ct_broker_run_t *run, json_t *result) {
  if (!run) {
    json_decref(result);
    return;
  }
  /* Before the result is handed over: values the result shares with the
   * kwargs then change hands with it, their counts touched in order. */
  json_decref(run->kwargs);
  run->kwargs = NULL;
  pthread_mutex_lock(&run->lock);
  bool first = !run->completed && !run->abandoned;
  run->completed = true;
  if (first)
    run->result = result;
  pthread_cond_signal(&run->cond);
  pthread_mutex_unlock(&run->lock);
  if (!first) /* given up on: the outcome has been decided without it */
    json_decref(result);
  run_release(run, 1);
}

bool ct_broker_run_canceled(ct_broker_run_t *run) {
  if (!run)
    return false;
  pthread_mutex_lock(&run->lock);
  bool canceled = run->canceled;
  pthread_mutex_unlock(&run->lock);
  return canceled;
}

void ct_broker_run_on_cancel(ct_broker_run_t *run, ct_broker_cancel_fn fn, void *data) {
  if (!run)
    return;
  pthread_mutex_lock(&run->lock);
  run->on_cancel = fn;
  run->cancel_data = data;
  pthread_mutex_unlock(&run->lock);
}

int ct_broker_register_loop(ct_broker_t *b, const char *name, const char *loop,
                            ct_broker_loop_fn fn, void *data) {
  if (!b || !fn)
    return CT_EINVAL;
  ct__bloop_t *h = calloc(1, sizeof *h);
  if (!h)
    return CT_ENOMEM;
  h->fn = fn;
  h->data = data;
  int rc = ct_loop_get(b->sup, loop, &h->loop);
  if (rc == 0)
    rc = ct_broker_register(b, name, run_loop, h);
  if (rc != 0) {
    free(h);
    return rc;
  }
  pthread_mutex_lock(&b->lock);
  h->next = b->loops;
  b->loops = h;
  pthread_mutex_unlock(&b->lock);
  return 0;
}

void ct__bloops_free(ct__bloop_t *h) {
  while (h) {
    ct__bloop_t *next = h->next;
    free(h);
    h = next;
  }
}
