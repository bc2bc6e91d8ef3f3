/* Workers: the part every kind shares — life cycle, runs, stop, statistics.
 *
 * A worker owns its lock and, through its kind, what triggers a run (queue
 * items, a trigger flag, a timer). Lock order: worker lock -> supervisor
 * parts_lock | thread or process pool lock | handle table grow lock | loop
 * inbox lock (docs/threading.md). User code (run, on_error, on_drop) is never called
 * with the lock held.
 *
 * Work enters through ct__worker_kick(): when the worker may run, has work
 * and has no run task in flight, its executor submits one run task
 * (thread-exec.c: a task at the worker's priority, on its loop if it has
 * one; process-exec.c: a process task). That task makes up to ops->batch
 * runs; when it ends, ct__worker_run_ended() clears the way, kicks again
 * and ends a pending stop. So at most one run executes at a time, and a
 * worker with nothing to do holds no thread.
 *
 * Life cycle hooks: on_start runs on the starting thread with `starting`
 * set, so no run is queued and no stop ends before it returns. How a start
 * ends (normal, forced, failed) is decided when a failing run asks to stop
 * or a bounded stop gives up, and kept as the last end when the state
 * becomes final; on_stop is then told once, by the thread that hands back
 * the dropped items (ct__worker_hand_back_and_report()), and a waiting stop
 * or ct_worker_wait() returns only once it has returned (`ends_reported`).
 *
 * References: the owner holds one, each task in flight and each message
 * posted to a loop hold one; the last unref frees the worker.
 */
#include "workers/worker-internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/opts.h"
#include "ctasker/result.h"

_Thread_local ct_worker_t *ct__worker_current; /* whose run this thread executes */

static int state_of(const ct_worker_t *w) { return atomic_load(&w->state); }
static void set_state(ct_worker_t *w, int s) { atomic_store(&w->state, s); }

static atomic_uint_fast64_t start_seq; /* starts of all workers, for groups */

static bool is_final(int s) { return s == CT_WORKER_STOPPED || s == CT_WORKER_FORCE_STOPPED; }

/* Lock held: the state just became STOPPED or FORCE_STOPPED. A failed end
 * was recorded when its run asked to stop; anything else is normal unless
 * forced. */
static void became_final(ct_worker_t *w, int s) {
  set_state(w, s);
  if (s == CT_WORKER_FORCE_STOPPED) {
    w->end_reason = CT_WORKER_END_FORCED;
    w->end_code = CT_ETIMEDOUT;
  } else if (w->end_reason == CT_WORKER_END_NONE) {
    w->end_reason = CT_WORKER_END_NORMAL;
  }
  w->last_reason = w->end_reason;
  w->last_code = w->end_code;
  json_decref(w->last_error);
  w->last_error = w->end_error;
  w->end_error = NULL;
  w->ends++;
  atomic_store(&w->end_unreported, true);
  pthread_cond_broadcast(&w->cond);
}


void ct__worker_ref(ct_worker_t *w) { atomic_fetch_add(&w->refs, 1); }

void ct__worker_unref(ct_worker_t *w) {
  if (atomic_fetch_sub(&w->refs, 1) != 1)
    return;
  if (w->ops->destroy)
    w->ops->destroy(w);
  for (size_t i = 0; i < w->n_names; i++)
    free(w->names[i]);
  free(w->names);
  free(w->base_name);
  free(w->process);
  json_decref(w->end_error);
  json_decref(w->last_error);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  free(w);
}

/* Lock held: whether a run may start now. */
static bool may_run(ct_worker_t *w) {
  int s = state_of(w);
  bool allowed = s == CT_WORKER_RUNNING || (s == CT_WORKER_STOPPING && !w->dropping);
  return allowed && !w->starting && w->ops->has_work(w);
}

void ct__worker_end_stop_if_idle(ct_worker_t *w) {
  if (state_of(w) != CT_WORKER_STOPPING || w->inflight || w->starting ||
      (w->ops->idle && !w->ops->idle(w)))
    return;
  if (w->ops->pending && w->ops->pending(w) > 0)
    w->dropping = true; /* a drain that could not go on: hand the rest back */
  became_final(w, CT_WORKER_STOPPED);
}

void ct__worker_begin_stop(ct_worker_t *w, bool drop) {
  if (state_of(w) == CT_WORKER_RUNNING) {
    set_state(w, CT_WORKER_STOPPING);
    ct__worker_drop_signal(w); /* the stop wins over a mark not yet passed on */
    pthread_cond_broadcast(&w->cond); /* a ct_worker_sleep() wakes */
    if (w->ops->stop)
      w->ops->stop(w);
  }
  if (drop && state_of(w) == CT_WORKER_STOPPING) {
    w->dropping = true;
    w->wanted = false; /* dropped too; a drain makes the runs triggers asked for */
  }
  ct__worker_end_stop_if_idle(w);
}

/* The workers whose items this thread is handing back, innermost first. */
typedef struct ct__handing {
  const ct_worker_t *w;
  const struct ct__handing *outer;
} ct__handing_t;
static _Thread_local const ct__handing_t *handing;

static bool handing_back(const ct_worker_t *w) {
  for (const ct__handing_t *h = handing; h; h = h->outer)
    if (h->w == w)
      return true;
  return false;
}

/* Lock held: whether the last final state has been told to on_stop. */
static bool end_reported(const ct_worker_t *w) { return w->ends_reported == w->ends; }

/* Lock NOT held, after a final state: tell on_stop, then the group's hook,
 * then let the waiters of ct_worker_wait() and ct_worker_stop() go. Ends
 * that came before a report read them are told once, as the last. The
 * hooks are part of the worker (ct__worker_current): a wait from them
 * would wait for itself. */
static void report_end(ct_worker_t *w) {
  pthread_mutex_lock(&w->lock);
  bool told = end_reported(w);
  if (!told && w->starting) { /* a stop forced during on_start: the start */
    atomic_store(&w->end_unreported, true); /* tells it once on_start returned */
    told = true;
  }
  uint64_t ends = w->ends;
  ct_worker_end_reason_t reason = (ct_worker_end_reason_t)w->last_reason;
  int code = w->last_code;
  pthread_mutex_unlock(&w->lock);
  if (told)
    return;
  ct_worker_t *outer = ct__worker_current;
  ct__worker_current = w;
  if (w->on_stop)
    w->on_stop(w, reason, code, w->hook_data);
  ct__worker_current = outer;
  ct__worker_end_fn on_end = atomic_load(&w->on_end);
  if (on_end)
    on_end(w);
  pthread_mutex_lock(&w->lock);
  if (ends > w->ends_reported)
    w->ends_reported = ends;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

/* An on_drop that calls into its own worker comes back here: the loop
 * already running further up this thread's stack hands back the rest, so
 * the stack does not grow by one frame per item. */
void ct__worker_hand_back_and_report(ct_worker_t *w) {
  if (w->ops->hand_back && !handing_back(w)) {
    ct__handing_t h = {w, handing};
    handing = &h;
    w->ops->hand_back(w);
    handing = h.outer;
  }
  if (atomic_exchange(&w->end_unreported, false))
    report_end(w);
}

int ct__worker_kick(ct_worker_t *w) {
  if (w->inflight || !may_run(w))
    return 0;
  int rc = w->exec->submit(w);
  if (rc != 0)
    ct__worker_fail_stop_for(w, rc, "queue a run");
  return rc;
}

void ct__worker_fail_stop_for(ct_worker_t *w, int rc, const char *what) {
  ct__sup_log(w->sup, CT_LOG_ERROR, "ctasker: worker %s could not %s (%s); stopping it", w->name,
              what, ct_strerror(rc));
  ct__worker_fail_stop(w, rc,
                       ct_error_new("WorkerError", "worker %s could not %s: %s", w->name, what,
                                    ct_strerror(rc)));
}

void ct__worker_fail_stop(ct_worker_t *w, int code, json_t *error) {
  if (is_final(state_of(w)) || w->end_reason == CT_WORKER_END_FAILED) {
    json_decref(error); /* the end is decided: the first failure tells it */
  } else {
    w->end_reason = CT_WORKER_END_FAILED;
    w->end_code = code;
    w->end_error = error;
  }
  ct__worker_begin_stop(w, true);
}

json_t *ct__worker_report(ct_worker_t *w, json_t *error, bool keep) {
  if (!error)
    error = ct_error_new("WorkerError", "a run of worker %s failed", w->name);
  /* A copy, the worker's own: the error may be a task's result, shared with
   * other threads, and jansson's reference counts are not thread-safe. */
  json_t *kept = keep ? json_deep_copy(error) : NULL;
  ct_worker_t *outer = ct__worker_current;
  ct__worker_current = w; /* on_error is part of the run: a waiting stop
                             from it would wait for itself */
  if (w->on_error)
    w->on_error(w, error, w->error_data);
  else
    ct__sup_log(w->sup, CT_LOG_ERROR, "ctasker: worker %s: %s: %s", w->name,
                ct_result_error_class(error) ? ct_result_error_class(error) : "error",
                ct_result_error_str(error) ? ct_result_error_str(error) : "");
  ct__worker_current = outer;
  json_decref(error);
  return kept;
}

/* Lock held on entry and return; released around the user's function. */
static void run_once(ct_worker_t *w, ct_task_t *self) {
  ct_worker_run_t run = {.worker = w, .name = w->name, .data = w->data, .args = w->args,
                         .task_id = ct_task_id(self)};
  w->ops->take(w, &run);
  if (w->ops->await_due && !w->ops->await_due(w, &run))
    return; /* stopped before the run was due */
  w->in_run = true;
  w->runs++;
  w->last_run = ct__now();
  pthread_mutex_unlock(&w->lock);

  int outcome = w->fn(&run);
  bool failed = outcome == CT_WORKER_FAILED || outcome == CT_WORKER_FAIL_STOP;
  json_t *kept = NULL;
  if (failed) {
    kept = ct__worker_report(w, run.error, outcome == CT_WORKER_FAIL_STOP);
    run.error = NULL;
  }
  json_decref(run.error); /* set but not reported as a failure */

  pthread_mutex_lock(&w->lock);
  w->in_run = false;
  if (failed)
    w->failures++;
  if (w->ops->after_run)
    w->ops->after_run(w, ct__now());
  if (outcome == CT_WORKER_STOP)
    ct__worker_begin_stop(w, true);
  else if (outcome == CT_WORKER_FAIL_STOP)
    ct__worker_fail_stop(w, run.exit_code ? run.exit_code : 1, kept);
}

void ct__worker_run_batch(ct_worker_t *w, ct_task_t *self, size_t batch) {
  pthread_mutex_lock(&w->lock);
  for (size_t i = 0; i < batch && may_run(w); i++)
    run_once(w, self);
  pthread_mutex_unlock(&w->lock);
}

void ct__worker_run_ended(ct_worker_t *w, bool stop) {
  if (stop)
    ct__worker_begin_stop(w, true);
  ct__worker_kick(w);
  ct__worker_end_stop_if_idle(w);
  pthread_mutex_unlock(&w->lock);
  ct__worker_hand_back_and_report(w);
  ct__worker_unref(w);
}

static void run_worker_msg(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__worker_msg_t *m = (ct__worker_msg_t *)msg;
  ct_worker_t *w = m->w;
  m->fn(w);
  if (!m->msg.embedded)
    free(m);
  ct__worker_unref(w); /* last: a kept message goes with its worker */
}

/* Fill m in and post it with a reference for it. Returns 0 or CT_ESHUTDOWN
 * (the reference given back). */
static int post_msg(ct_worker_t *w, ct__worker_msg_t *m, void (*fn)(ct_worker_t *w), bool kept) {
  m->msg.run = run_worker_msg;
  m->w = w;
  m->fn = fn;
  ct__worker_ref(w);
  int rc = kept ? ct__loop_post_embedded(&w->sup->loop, &m->msg)
                : ct__loop_post(&w->sup->loop, &m->msg);
  if (rc != 0)
    atomic_fetch_sub(&w->refs, 1);
  return rc;
}

int ct__worker_post(ct_worker_t *w, void (*fn)(ct_worker_t *w)) {
  ct__worker_msg_t *m = malloc(sizeof *m);
  if (!m)
    return CT_ENOMEM;
  int rc = post_msg(w, m, fn, false);
  if (rc != 0)
    free(m);
  return rc;
}

int ct__worker_post_kept(ct_worker_t *w, ct__worker_msg_t *m, void (*fn)(ct_worker_t *w)) {
  return post_msg(w, m, fn, true);
}

/* ---- start ---- */

/* Copy and check a start's overrides; each bad field is logged through
 * the supervisor's log. Returns 0 or CT_EINVAL. */
static int read_start_options(ct_worker_t *w, const ct_worker_start_opts_t *in,
                              ct_worker_start_opts_t *o) {
  ct_worker_start_opts_t defaults = CT_WORKER_START_OPTS_INIT;
  ct__opts_check_t c = ct__sup_opts_check(w->sup, "ct_worker_start_opts_t", "ct_worker_start");
  *o = defaults;
  if (ct__opts_read(&c, o, sizeof *o, in, offsetof(ct_worker_start_opts_t, delay_before)) != 0)
    return CT_EINVAL;
  if (o->priority > CT_PRIORITY_MAX)
    ct__opts_bad(&c, "priority", "%d is above CT_PRIORITY_MAX (< 0: keep)", o->priority);
  ct__opts_text(&c, "name", o->name);
  /* Whatever the kind: NaN is refused everywhere (common.h), even where
   * the field is not used. */
  ct__opts_seconds(&c, "interval", o->interval, CT__SEC_SIGNED);
  ct__opts_seconds(&c, "delay", o->delay, CT__SEC_SIGNED);
  ct__opts_seconds(&c, "delay_before", o->delay_before, CT__SEC_SIGNED);
  return c.rc;
}

/* Lock held: whether the worker may start now. */
static int startable(ct_worker_t *w) {
  int s = state_of(w);
  if (w->freed)
    return CT_ENOENT;
  if (s == CT_WORKER_RUNNING || s == CT_WORKER_STOPPING || w->inflight ||
      (w->ops->idle && !w->ops->idle(w)))
    return CT_EBUSY;
  return 0;
}

/* Lock held: switch to RUNNING unless the supervisor is stopping. */
static int enter_running(ct_worker_t *w) {
  bool open = ct__sup_parts_lock_open(w->sup);
  if (open)
    set_state(w, CT_WORKER_RUNNING);
  ct__sup_parts_unlock(w->sup);
  return open ? 0 : ct__sup_refuse_not_running(w->sup, "ct_worker_start");
}

/* Lock held: the kept copy of a start's name override (NULL: none); `copy`
 * (a fresh copy of it, or NULL) is taken or freed. A name is never freed
 * before the worker, since another thread may hold ct_worker_name()'s
 * pointer; a name used again reuses its copy, so a worker keeps one copy
 * per distinct name. Returns 0 or CT_ENOMEM (nothing changed). */
static int keep_name(ct_worker_t *w, char *copy, char **kept) {
  *kept = NULL;
  if (!copy)
    return 0;
  for (size_t i = 0; i < w->n_names && !*kept; i++)
    if (strcmp(w->names[i], copy) == 0)
      *kept = w->names[i];
  if (*kept) {
    free(copy);
    return 0;
  }
  char **names = realloc(w->names, (w->n_names + 1) * sizeof *names);
  if (!names) {
    free(copy);
    return CT_ENOMEM;
  }
  w->names = names;
  w->names[w->n_names++] = *kept = copy;
  return 0;
}

static void apply_overrides(ct_worker_t *w, const ct_worker_start_opts_t *o, char *name) {
  w->name = name ? name : w->base_name;
  w->priority = o->priority >= 0 ? o->priority : w->base_priority;
  w->data = o->set_data ? o->data : w->base_data;
  w->args = o->args;
  w->wanted = false;
  w->dropping = false;
  w->end_reason = CT_WORKER_END_NONE;
  w->end_code = 0;
  json_decref(w->end_error);
  w->end_error = NULL;
  atomic_store(&w->start_seq, atomic_fetch_add(&start_seq, 1) + 1);
}

/* Lock held, the worker just started: call on_start without the lock; no
 * run is queued and no stop ends until it returns. */
static void call_on_start(ct_worker_t *w) {
  if (!w->on_start)
    return;
  w->starting = true;
  pthread_mutex_unlock(&w->lock);
  ct_worker_t *outer = ct__worker_current;
  ct__worker_current = w; /* a stop that waits from it would wait for itself */
  w->on_start(w, w->hook_data);
  ct__worker_current = outer;
  pthread_mutex_lock(&w->lock);
  w->starting = false;
}

int ct_worker_start(ct_worker_t *w, const ct_worker_start_opts_t *opts) {
  ct_worker_start_opts_t o;
  if (!w || read_start_options(w, opts, &o) != 0)
    return CT_EINVAL;
  char *copy = NULL, *name = NULL;
  if (o.name && !(copy = strdup(o.name)))
    return CT_ENOMEM;
  pthread_mutex_lock(&w->lock);
  int prev = state_of(w);
  int rc = startable(w);
  if (rc == 0 && w->exec->check_start)
    rc = w->exec->check_start(w);
  if (rc == 0 && w->ops->configure)
    rc = w->ops->configure(w, &o);
  if (rc == 0)
    rc = keep_name(w, copy, &name);
  else
    free(copy);
  if (rc == 0) {
    ct__worker_drop_signal(w); /* one that raced the last stop's */
    rc = enter_running(w);
  }
  if (rc == 0) {
    apply_overrides(w, &o, name);
    rc = w->ops->start ? w->ops->start(w) : 0;
    if (rc != 0)
      set_state(w, prev);
  }
  if (rc == 0) {
    call_on_start(w);
    rc = ct__worker_kick(w);
    ct__worker_end_stop_if_idle(w); /* a stop that came during on_start */
  }
  pthread_mutex_unlock(&w->lock);
  ct__worker_hand_back_and_report(w);
  return rc;
}

/* ---- stop ---- */

/* Lock held: wait for the end of a stop; force it at the deadline. */
static int wait_stopped(ct_worker_t *w, bool bounded, const struct timespec *deadline) {
  while (state_of(w) == CT_WORKER_STOPPING) {
    if (!bounded) {
      pthread_cond_wait(&w->cond, &w->lock);
    } else if (pthread_cond_timedwait(&w->cond, &w->lock, deadline) != 0 &&
               state_of(w) == CT_WORKER_STOPPING) {
      w->dropping = true;
      became_final(w, CT_WORKER_FORCE_STOPPED);
      ct__sup_log(w->sup, CT_LOG_WARNING, "ctasker: worker %s force-stopped", w->name);
      return CT_ETIMEDOUT;
    }
  }
  return 0;
}

/* Lock held: wait until the worker has ended (final, on_stop returned),
 * or is INIT (never started); timeout 0 does not wait. Returns 0,
 * CT_ETIMEDOUT, or CT_EDEADLK from the worker's own run. From its own
 * on_stop, or an on_drop this thread calls before it tells the end, the end
 * counts as reached: the report waits for the caller. */
static int await_end(ct_worker_t *w, double timeout, bool bounded,
                     const struct timespec *deadline) {
  while (state_of(w) != CT_WORKER_INIT && (!is_final(state_of(w)) || !end_reported(w))) {
    if (is_final(state_of(w)) && handing_back(w))
      return 0;
    if (ct__worker_current == w)
      return is_final(state_of(w)) ? 0 : CT_EDEADLK;
    if (timeout == 0)
      return CT_ETIMEDOUT;
    if (!bounded)
      pthread_cond_wait(&w->cond, &w->lock);
    else if (pthread_cond_timedwait(&w->cond, &w->lock, deadline) != 0 &&
             (!is_final(state_of(w)) || !end_reported(w)))
      return CT_ETIMEDOUT;
  }
  return 0;
}

int ct_worker_stop(ct_worker_t *w, int flags, double timeout) {
  if (!w || (flags != CT_WORKER_DRAIN && flags != CT_WORKER_DROP) ||
      !ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(timeout, &deadline);
  pthread_mutex_lock(&w->lock);
  ct__worker_begin_stop(w, flags == CT_WORKER_DROP);
  int rc = 0;
  if (timeout != 0 && state_of(w) == CT_WORKER_STOPPING)
    rc = ct__worker_current == w ? CT_EDEADLK : wait_stopped(w, bounded, &deadline);
  pthread_mutex_unlock(&w->lock);
  ct__worker_hand_back_and_report(w);
  if (timeout != 0 && rc == 0) { /* on_stop may still run on another thread */
    pthread_mutex_lock(&w->lock);
    rc = is_final(state_of(w)) ? await_end(w, timeout, bounded, &deadline) : 0;
    pthread_mutex_unlock(&w->lock);
  }
  return rc;
}

int ct_worker_wait(ct_worker_t *w, double timeout, ct_worker_end_reason_t *reason,
                   json_t **error) {
  if (!w || !ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(timeout, &deadline);
  pthread_mutex_lock(&w->lock);
  int rc = await_end(w, timeout, bounded, &deadline);
  pthread_mutex_unlock(&w->lock);
  if (rc == 0) {
    ct_worker_end_reason_t r = ct_worker_last_end(w, NULL, error);
    if (reason)
      *reason = r;
  }
  return rc;
}

ct_worker_end_reason_t ct_worker_last_end(ct_worker_t *w, int *code, json_t **error) {
  ct_worker_end_reason_t reason = CT_WORKER_END_NONE;
  json_t *err = NULL;
  int c = 0;
  if (w) {
    pthread_mutex_lock(&w->lock);
    if (is_final(state_of(w))) {
      reason = (ct_worker_end_reason_t)w->last_reason;
      c = w->last_code;
      /* a copy: the caller's alone, whatever thread releases it */
      err = reason == CT_WORKER_END_FAILED ? json_deep_copy(w->last_error) : NULL;
    }
    pthread_mutex_unlock(&w->lock);
  }
  if (code)
    *code = c;
  if (error)
    *error = err;
  else
    json_decref(err);
  return reason;
}

int ct_worker_sleep(ct_worker_t *w, double seconds) {
  if (!w || !ct__seconds_valid(seconds, CT__SEC_LIMIT))
    return CT_EINVAL;
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(seconds, &deadline);
  pthread_mutex_lock(&w->lock);
  while (state_of(w) == CT_WORKER_RUNNING) {
    if (!bounded)
      pthread_cond_wait(&w->cond, &w->lock);
    else if (pthread_cond_timedwait(&w->cond, &w->lock, &deadline) != 0)
      break;
  }
  int rc = state_of(w) == CT_WORKER_RUNNING ? 0 : CT_ESHUTDOWN;
  pthread_mutex_unlock(&w->lock);
  return rc;
}

/* ---- triggers ---- */

int ct_event_worker_trigger(ct_worker_t *w, bool force) {
  if (!w || (w->kind != CT_WORKER_EVENT && w->kind != CT_WORKER_INTERVAL))
    return CT_EINVAL;
  pthread_mutex_lock(&w->lock);
  int rc = state_of(w) == CT_WORKER_RUNNING ? 0 : CT_ESHUTDOWN;
  if (rc == 0 && (!w->in_run || force)) {
    w->wanted = true;
    rc = ct__worker_kick(w);
  }
  pthread_mutex_unlock(&w->lock);
  ct__worker_hand_back_and_report(w);
  return rc;
}

int ct_worker_fail(ct_worker_run_t *run, json_t *error) {
  if (run) {
    json_decref(run->error);
    run->error = error;
  } else {
    json_decref(error);
  }
  return CT_WORKER_FAILED;
}

int ct_worker_fail_stop(ct_worker_run_t *run, json_t *error, int code) {
  ct_worker_fail(run, error);
  if (run)
    run->exit_code = code;
  return CT_WORKER_FAIL_STOP;
}

/* ---- attributes and statistics ---- */

const char *ct_worker_name(const ct_worker_t *w) { return w ? atomic_load(&w->name) : ""; }
ct_worker_kind_t ct_worker_kind(const ct_worker_t *w) { return w ? w->kind : 0; }
ct_worker_state_t ct_worker_state(const ct_worker_t *w) {
  return w ? (ct_worker_state_t)state_of(w) : CT_WORKER_STOPPED;
}
bool ct_worker_stop_requested(const ct_worker_t *w) {
  return !w || state_of(w) != CT_WORKER_RUNNING;
}

/* The smallest ct_worker_stats_t ever published: up to state. */
#define CT__WORKER_STATS_OLDEST (offsetof(ct_worker_stats_t, state) + sizeof(ct_worker_state_t))

int ct_worker_stats(ct_worker_t *w, ct_worker_stats_t *out) {
  if (!w || !out)
    return CT_EINVAL;
  ct_worker_stats_t all = {.size = sizeof all};
  pthread_mutex_lock(&w->lock);
  all.runs = w->runs;
  all.failures = w->failures;
  all.dropped = w->dropped;
  all.pending = w->ops->pending ? w->ops->pending(w) : 0;
  all.last_run = w->last_run;
  all.state = (ct_worker_state_t)state_of(w);
  if (is_final(all.state)) { /* as ct_worker_last_end(), in the same snapshot */
    all.end_reason = (ct_worker_end_reason_t)w->last_reason;
    all.end_code = w->last_code;
  }
  pthread_mutex_unlock(&w->lock);
  return ct__out_fill(out, &all, sizeof all, CT__WORKER_STATS_OLDEST);
}

static const char *end_name(int reason) {
  static const char *const names[] = {"none", "normal", "forced", "failed"};
  return names[reason];
}

static const char *state_name(int s) {
  static const char *const names[] = {"init", "running", "stopping", "stopped", "force_stopped"};
  return names[s];
}

json_t *ct_worker_stats_json(ct_worker_t *w) {
  ct_worker_stats_t s = CT_WORKER_STATS_INIT;
  if (ct_worker_stats(w, &s) != 0)
    return NULL;
  pthread_mutex_lock(&w->lock);
  json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:s, s:i}", "name", w->name,
                        "kind", w->ops->kind_name, "state", state_name(s.state), "runs",
                        (json_int_t)s.runs, "failures", (json_int_t)s.failures, "dropped",
                        (json_int_t)s.dropped, "pending", (json_int_t)s.pending, "last_run",
                        s.last_run, "end_reason", end_name(s.end_reason), "end_code",
                        s.end_code);
  pthread_mutex_unlock(&w->lock);
  return j;
}
