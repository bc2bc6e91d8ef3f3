/* Workers: the part every kind shares — life cycle, runs, stop, statistics.
 *
 * A worker owns its lock and, through its kind, what triggers a run (queue
 * items, a trigger flag, a timer). Lock order: worker lock -> supervisor
 * workers_lock | pool lock | loop inbox lock. User code (run, on_error,
 * on_drop) is never called with the lock held.
 *
 * Work enters through ct__worker_kick(): when the worker may run, has work
 * and has no run task in flight, one task is submitted with
 * ct_background_task() at the worker's priority (on its loop if it has one).
 * That task makes up to ops->batch runs, then its completion callback
 * (run_done, also called if the task is canceled) clears `inflight`, kicks
 * again and settles a pending stop. So at most one run executes at a time,
 * and a worker with nothing to do holds no thread.
 *
 * References: the owner holds one, each task in flight and each message
 * posted to a loop hold one; the last unref frees the worker.
 */
#include "worker-internal.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ctasker/result.h"

_Thread_local ct_worker_t *ct__worker_current; /* whose run this thread executes */
static atomic_uint_fast64_t unnamed_seq;

static int state_of(const ct_worker_t *w) { return atomic_load(&w->state); }
static void set_state(ct_worker_t *w, int s) { atomic_store(&w->state, s); }

/* Lock held: the state just became STOPPED or FORCE_STOPPED. */
static void became_final(ct_worker_t *w, int s) {
  set_state(w, s);
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
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  free(w);
}

/* Lock held: whether a run may start now. */
static bool may_run(ct_worker_t *w) {
  int s = state_of(w);
  bool allowed = s == CT_WORKER_RUNNING || (s == CT_WORKER_STOPPING && !w->dropping);
  return allowed && w->ops->has_work(w);
}

void ct__worker_settle(ct_worker_t *w) {
  if (state_of(w) != CT_WORKER_STOPPING || w->inflight || (w->ops->idle && !w->ops->idle(w)))
    return;
  if (w->ops->pending && w->ops->pending(w) > 0)
    w->dropping = true; /* a drain that could not go on: hand the rest back */
  became_final(w, CT_WORKER_STOPPED);
}

void ct__worker_begin_stop(ct_worker_t *w, bool drop) {
  if (state_of(w) == CT_WORKER_RUNNING) {
    set_state(w, CT_WORKER_STOPPING);
    if (w->ops->stop)
      w->ops->stop(w);
  }
  if (drop && state_of(w) == CT_WORKER_STOPPING) {
    w->dropping = true;
    w->wanted = false; /* dropped too; a drain makes the runs triggers asked for */
  }
  ct__worker_settle(w);
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

/* An on_drop that calls into its own worker comes back here: the loop
 * already running further up this thread's stack hands back the rest, so
 * the stack does not grow by one frame per item. */
void ct__worker_leave(ct_worker_t *w) {
  if (w->ops->hand_back && !handing_back(w)) {
    ct__handing_t h = {w, handing};
    handing = &h;
    w->ops->hand_back(w);
    handing = h.outer;
  }
  if (atomic_exchange(&w->end_unreported, false))
    ct__group_member_ended(w);
}

static json_t *run_task(ct_task_t *self, void *arg);
static void run_done(ct_task_t *t, void *data);

/* The thread executor: one ct_background_task() on a pool thread or loop. */
static int thread_submit(ct_worker_t *w) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.name = w->name;
  o.priority = w->priority;
  o.on_done = run_done;
  o.done_data = w;
  o.loop = w->loop; /* the executor: a pool thread, or a loop */
  ct__worker_ref(w);
  int rc = ct_background_task(w->sup, run_task, w, &o, NULL);
  if (rc == 0)
    w->inflight = true;
  else
    atomic_fetch_sub(&w->refs, 1); /* the owner still holds one */
  return rc;
}

/* An extra loop that was asked to stop, or has ended, refuses every run
 * from now on: a worker started there would be RUNNING and never run. */
static int thread_check_start(ct_worker_t *w) {
  ct__loop_t *loop = w->loop;
  if (!loop)
    return 0;
  pthread_mutex_lock(&loop->inbox_lock);
  bool ended = loop->closed || atomic_load(&loop->quit_posted);
  pthread_mutex_unlock(&loop->inbox_lock);
  return ended ? CT_ESHUTDOWN : 0;
}

const ct__worker_exec_t ct__thread_exec = {.check_start = thread_check_start,
                                           .submit = thread_submit};

int ct__worker_kick(ct_worker_t *w) {
  if (w->inflight || !may_run(w))
    return 0;
  int rc = w->exec->submit(w);
  if (rc == 0)
    return 0;
  ct__sup_log(w->sup, CT_LOG_ERROR, "ctasker: worker %s could not queue a run (%s); stopping it",
              w->name, ct_strerror(rc));
  ct__worker_begin_stop(w, true);
  return rc;
}

void ct__worker_report(ct_worker_t *w, json_t *error) {
  if (!error)
    error = ct_error_new("WorkerError", "a run of worker %s failed", w->name);
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
  if (outcome == CT_WORKER_FAILED) {
    ct__worker_report(w, run.error);
    run.error = NULL;
  }
  json_decref(run.error); /* set but not reported as a failure */

  pthread_mutex_lock(&w->lock);
  w->in_run = false;
  if (outcome == CT_WORKER_FAILED)
    w->failures++;
  if (w->ops->after_run)
    w->ops->after_run(w, ct__now());
  if (outcome == CT_WORKER_STOP)
    ct__worker_begin_stop(w, true);
}

static json_t *run_task(ct_task_t *self, void *arg) {
  ct_worker_t *w = arg;
  size_t batch = w->loop ? 1 : w->ops->batch;
  ct_worker_t *outer = ct__worker_current;
  ct__worker_current = w; /* the runs, and the on_drop calls for what they
                             hand back: this task holds `inflight`, so a
                             waiting stop from them would wait for itself */
  pthread_mutex_lock(&w->lock);
  for (size_t i = 0; i < batch && may_run(w); i++)
    run_once(w, self);
  pthread_mutex_unlock(&w->lock);
  ct__worker_leave(w);
  ct__worker_current = outer;
  return NULL;
}

void ct__worker_run_ended(ct_worker_t *w, bool stop) {
  if (stop)
    ct__worker_begin_stop(w, true);
  ct__worker_kick(w);
  ct__worker_settle(w);
  pthread_mutex_unlock(&w->lock);
  ct__worker_leave(w);
  ct__worker_unref(w);
}

/* The run task is terminal (completed, or canceled by a supervisor stop). */
static void run_done(ct_task_t *t, void *data) {
  ct_worker_t *w = data;
  pthread_mutex_lock(&w->lock);
  w->inflight = false;
  ct__worker_run_ended(w, ct_task_status(t) == CT_TASK_CANCELED);
}

typedef struct {
  ct__loop_msg_t msg;
  ct_worker_t *w;
  void (*fn)(ct_worker_t *w);
} ct__worker_msg_t;

static void run_worker_msg(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__worker_msg_t *m = (ct__worker_msg_t *)msg;
  m->fn(m->w);
  ct__worker_unref(m->w);
  free(m);
}

int ct__worker_post(ct_worker_t *w, void (*fn)(ct_worker_t *w)) {
  ct__worker_msg_t *m = malloc(sizeof *m);
  if (!m)
    return CT_ENOMEM;
  m->msg.run = run_worker_msg;
  m->w = w;
  m->fn = fn;
  ct__worker_ref(w);
  int rc = ct__loop_post(&w->sup->loop, &m->msg);
  if (rc != 0) {
    atomic_fetch_sub(&w->refs, 1);
    free(m);
  }
  return rc;
}

/* ---- creation ---- */

static const ct__worker_ops_t *ops_of(ct_worker_kind_t kind) {
  switch (kind) {
  case CT_WORKER_BACKGROUND:
    return &ct__background_ops;
  case CT_WORKER_QUEUE:
    return &ct__queue_ops;
  case CT_WORKER_EVENT:
    return &ct__event_ops;
  case CT_WORKER_INTERVAL:
    return &ct__interval_ops;
  }
  return NULL;
}

/* The run function's symbol name, or "worker-N". */
static char *default_name(ct_worker_fn fn) {
  Dl_info info;
  void *addr;
  memcpy(&addr, &fn, sizeof addr);
  if (dladdr(addr, &info) && info.dli_sname && info.dli_saddr == addr)
    return strdup(info.dli_sname);
  char buf[32];
  snprintf(buf, sizeof buf, "worker-%llu",
           (unsigned long long)atomic_fetch_add(&unnamed_seq, 1) + 1);
  return strdup(buf);
}

static int settle_worker_options(const ct_worker_opts_t *in, ct_worker_opts_t *o) {
  ct_worker_opts_t defaults = CT_WORKER_OPTS_INIT;
  *o = defaults;
  if (!in)
    return 0;
  if (in->size < offsetof(ct_worker_opts_t, loop) || in->size > sizeof *o)
    return CT_EINVAL;
  memcpy(o, in, in->size);
  if (o->priority < CT_PRIORITY_CRITICAL || o->priority > CT_PRIORITY_MAX)
    return CT_EINVAL;
  return 0;
}

static int init_sync(ct_worker_t *w) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&w->cond, &attr);
  pthread_condattr_destroy(&attr);
  if (rc != 0)
    return CT_ENOMEM;
  if (pthread_mutex_init(&w->lock, NULL) != 0) {
    pthread_cond_destroy(&w->cond);
    return CT_ENOMEM;
  }
  return 0;
}

int ct_worker_new(ct_supervisor_t *sup, ct_worker_kind_t kind, ct_worker_fn fn,
                  const ct_worker_opts_t *opts, ct_worker_t **out) {
  ct_worker_opts_t o;
  const ct__worker_ops_t *ops = ops_of(kind);
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !out || !ops || settle_worker_options(opts, &o) != 0 || !fn == !o.process ||
      (o.loop && !ct__loop_is_own(sup, o.loop)))
    return CT_EINVAL;
  ct_worker_t *w = calloc(1, ops->size);
  if (!w)
    return CT_ENOMEM;
  w->ops = ops;
  w->sup = sup;
  w->kind = kind;
  w->fn = fn;
  w->base_priority = w->priority = o.priority;
  w->base_data = w->data = o.data;
  w->on_error = o.on_error;
  w->error_data = o.error_data;
  w->loop = o.loop;
  w->exec = &ct__thread_exec;
  atomic_init(&w->refs, 1);
  atomic_init(&w->state, CT_WORKER_INIT);
  int rc = o.process ? ct__worker_process_setup(w, &o) : 0;
  if (rc == 0 && ops->setup)
    rc = ops->setup(w, &o);
  if (rc == 0 && !(w->base_name = o.name      ? strdup(o.name)
                                  : o.process ? strdup(o.process)
                                              : default_name(fn)))
    rc = CT_ENOMEM;
  if (rc == 0)
    rc = init_sync(w);
  if (rc != 0) {
    if (ops->destroy)
      ops->destroy(w);
    free(w->base_name);
    free(w->process);
    free(w);
    return rc;
  }
  w->name = w->base_name;
  ct__workers_link(sup, w);
  *out = w;
  return 0;
}

int ct_worker_free(ct_worker_t *w) {
  if (!w)
    return 0;
  pthread_mutex_lock(&w->lock);
  int s = state_of(w);
  bool busy = s == CT_WORKER_RUNNING || s == CT_WORKER_STOPPING;
  if (!busy)
    w->freed = true; /* a group holding a reference can no longer start it */
  pthread_mutex_unlock(&w->lock);
  if (busy)
    return CT_EBUSY;
  ct__group_forget(w);
  ct__workers_unlink(w->sup, w);
  ct__worker_unref(w);
  return 0;
}

/* ---- start ---- */

static int settle_start_options(const ct_worker_start_opts_t *in, ct_worker_start_opts_t *o) {
  ct_worker_start_opts_t defaults = CT_WORKER_START_OPTS_INIT;
  *o = defaults;
  if (!in)
    return 0;
  if (in->size < offsetof(ct_worker_start_opts_t, delay_before) || in->size > sizeof *o)
    return CT_EINVAL;
  memcpy(o, in, in->size);
  return o->priority > CT_PRIORITY_MAX ? CT_EINVAL : 0;
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
  ct_supervisor_t *sup = w->sup;
  pthread_mutex_lock(&sup->workers_lock);
  int rc = sup->workers_closed || atomic_load(&sup->state) != CT__SUP_RUNNING ? CT_ESHUTDOWN : 0;
  if (rc == 0)
    set_state(w, CT_WORKER_RUNNING);
  pthread_mutex_unlock(&sup->workers_lock);
  return rc;
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
}

int ct_worker_start(ct_worker_t *w, const ct_worker_start_opts_t *opts) {
  ct_worker_start_opts_t o;
  if (!w || settle_start_options(opts, &o) != 0)
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
  if (rc == 0)
    rc = enter_running(w);
  if (rc == 0) {
    apply_overrides(w, &o, name);
    rc = w->ops->start ? w->ops->start(w) : 0;
    if (rc != 0)
      set_state(w, prev);
  }
  if (rc == 0)
    rc = ct__worker_kick(w);
  pthread_mutex_unlock(&w->lock);
  ct__worker_leave(w);
  return rc;
}

/* ---- stop ---- */

/* Lock held: wait for the end of a stop; force it after `timeout`. */
static int wait_stopped(ct_worker_t *w, double timeout) {
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(timeout, &deadline);
  while (state_of(w) == CT_WORKER_STOPPING) {
    if (!bounded) {
      pthread_cond_wait(&w->cond, &w->lock);
    } else if (pthread_cond_timedwait(&w->cond, &w->lock, &deadline) != 0 &&
               state_of(w) == CT_WORKER_STOPPING) {
      w->dropping = true;
      became_final(w, CT_WORKER_FORCE_STOPPED);
      ct__sup_log(w->sup, CT_LOG_WARNING, "ctasker: worker %s force-stopped", w->name);
      return CT_ETIMEDOUT;
    }
  }
  return 0;
}

int ct_worker_stop(ct_worker_t *w, int flags, double timeout) {
  if (!w || (flags != CT_WORKER_DRAIN && flags != CT_WORKER_DROP) ||
      !ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  pthread_mutex_lock(&w->lock);
  ct__worker_begin_stop(w, flags == CT_WORKER_DROP);
  int rc = 0;
  if (timeout != 0 && state_of(w) == CT_WORKER_STOPPING)
    rc = ct__worker_current == w ? CT_EDEADLK : wait_stopped(w, timeout);
  pthread_mutex_unlock(&w->lock);
  ct__worker_leave(w);
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
  ct__worker_leave(w);
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

/* ---- attributes and statistics ---- */

const char *ct_worker_name(const ct_worker_t *w) { return w ? atomic_load(&w->name) : ""; }
ct_worker_kind_t ct_worker_kind(const ct_worker_t *w) { return w ? w->kind : 0; }
ct_worker_state_t ct_worker_state(const ct_worker_t *w) {
  return w ? (ct_worker_state_t)state_of(w) : CT_WORKER_STOPPED;
}
bool ct_worker_stop_requested(const ct_worker_t *w) {
  return !w || state_of(w) != CT_WORKER_RUNNING;
}

int ct_worker_stats(ct_worker_t *w, ct_worker_stats_t *out) {
  if (!w || !out)
    return CT_EINVAL;
  pthread_mutex_lock(&w->lock);
  out->runs = w->runs;
  out->failures = w->failures;
  out->dropped = w->dropped;
  out->pending = w->ops->pending ? w->ops->pending(w) : 0;
  out->last_run = w->last_run;
  out->state = (ct_worker_state_t)state_of(w);
  pthread_mutex_unlock(&w->lock);
  return 0;
}

static const char *state_name(int s) {
  static const char *const names[] = {"init", "running", "stopping", "stopped", "force_stopped"};
  return names[s];
}

json_t *ct_worker_stats_json(ct_worker_t *w) {
  ct_worker_stats_t s;
  if (ct_worker_stats(w, &s) != 0)
    return NULL;
  pthread_mutex_lock(&w->lock);
  json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f}", "name", w->name, "kind",
                        w->ops->kind_name, "state", state_name(s.state), "runs",
                        (json_int_t)s.runs, "failures", (json_int_t)s.failures, "dropped",
                        (json_int_t)s.dropped, "pending", (json_int_t)s.pending, "last_run",
                        s.last_run);
  pthread_mutex_unlock(&w->lock);
  return j;
}
