/* The supervisor: options, life cycle, submission, cancel, statistics and
 * the process-wide default.
 *
 * It owns a thread pool, a loop thread and a handle table. Locks: state_lock
 * is taken first, before the thread pool's, the process pool's, the process
 * function table's and a loop's; docs/threading.md has the whole order.
 *
 * Stopping: stop() marks the state STOPPING, stops the pool (which drains
 * or cancels its queue) and pokes the loop through the `stop_check` kick.
 * On the loop thread, stop-check.c looks whether the stop is done (the pool
 * drained, no delay left, stop() done with the tasks it canceled, no
 * submission half-way, the process pool stopped, every extra loop and every
 * thread of its parts' own ended) at each poke, and reports what a long
 * stop waits for. Then the loop ends, and its thread marks the state
 * STOPPED and wakes whoever waits in stop().
 *
 * Submission: create (counted on the thread's shard, whose count makes
 * the id of a task without a handle: no line shared between producers),
 * register if a handle is asked for (the handle table gives it its id;
 * not yet findable), hand over to the executor (pool, loop, delay timers), and
 * only then publish: a task is findable by id only once its executor holds
 * it, so a cancel by id meets a task that is counted where it is. The
 * executor may finish the task before it is published; it leaves the
 * handle table then (it was registered first) and is never published. A
 * submission counts itself in `submitting` around its state check and
 * hand-over, so a stop begun meanwhile waits for what it hands over.

 * A pool that cannot start a thread says so through its on_spawn_failed
 * hook (the `spawn_failed` kick); the loop thread then retries on the
 * `spawn_retry` timer, backing off, until the pool needs no more.
 */
#include "supervisor/supervisor-internal.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/cond.h"
#include "base/log.h"
#include "base/opts.h"
#include "process/procpool.h"

#define CT__DEFAULT_KEEPALIVE 10.0
/* Seconds between attempts to start a pool thread while none can be. */
#define CT__SPAWN_BACKOFF_MIN 0.01
#define CT__SPAWN_BACKOFF_MAX 1.0

static _Atomic(ct_supervisor_t *) default_sup;

/* The supervisor whose stop() is running the callbacks of the tasks it
 * canceled on this thread: waiting for that stop here would wait for itself. */
static _Thread_local ct_supervisor_t *finishing_stop;

/* The calling thread's shard of `submitting`: threads take shards in
 * turn, so a few producers each count on a cache line of their own. */
static atomic_uint next_submit_shard;
static _Thread_local __attribute__((tls_model("initial-exec"))) unsigned submit_shard =
    UINT_MAX; /* initial-exec: see slab.c */

static unsigned submit_shard_of_thread(void) {
  if (submit_shard == UINT_MAX)
    submit_shard = atomic_fetch_add_explicit(&next_submit_shard, 1, memory_order_relaxed) %
                   CT__SUBMIT_SHARDS;
  return submit_shard;
}

void ct__sup_log(ct_supervisor_t *sup, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ct__vlog(sup->opts.log, sup->opts.log_data, level, fmt, ap);
  va_end(ap);
}

/* A threshold with no bound never fires: the same as one turned off. */
static double limit_or_off(double s) { return s >= CT__SECONDS_FOREVER ? 0 : s; }

static int high_cap(const ct_supervisor_opts_t *o) {
  return o->pool_size + o->reserve_normal + o->reserve_high;
}

/* Copy the caller's options (an older, smaller struct is fine) and fill in
 * defaults. Returns 0 or CT_EINVAL, logged through the struct's own log
 * callback once its size is known good. */
static int read_options(const ct_supervisor_opts_t *in, ct_supervisor_opts_t *o) {
  ct_supervisor_opts_t defaults = CT_SUPERVISOR_OPTS_INIT;
  ct__opts_check_t c = {"ct_supervisor_opts_t", "ct_supervisor_new", NULL, NULL, 0};
  *o = defaults;
  if (ct__opts_read(&c, o, sizeof *o, in, offsetof(ct_supervisor_opts_t, log_data)) != 0)
    return CT_EINVAL;
  c.log = o->log;
  c.log_data = o->log_data;
  ct__opts_int(&c, "pool_size", o->pool_size, 0, 1 << 16);
  ct__opts_int(&c, "reserve_normal", o->reserve_normal, 0, 1 << 16);
  ct__opts_int(&c, "reserve_high", o->reserve_high, 0, 1 << 16);
  ct__opts_seconds(&c, "keepalive", o->keepalive, CT__SEC_LIMIT);
  ct__opts_seconds(&c, "timeout_warning", o->timeout_warning, CT__SEC_LIMIT);
  ct__opts_seconds(&c, "timeout_critical", o->timeout_critical, CT__SEC_LIMIT);
  if (ct__opts_seconds(&c, "idle_spin", o->idle_spin, CT__SEC_LIMIT) && o->idle_spin > 0.001)
    ct__opts_bad(&c, "idle_spin", "%g seconds: at most 0.001", o->idle_spin);
  if (c.rc != 0)
    return c.rc;
  o->timeout_warning = limit_or_off(o->timeout_warning);
  o->timeout_critical = limit_or_off(o->timeout_critical);
  if (o->pool_size == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    o->pool_size = cpus > 2 ? (int)cpus : 2;
  }
  if (o->keepalive == 0)
    o->keepalive = CT__DEFAULT_KEEPALIVE;
  if (o->min_threads < 0 || o->min_threads > high_cap(o))
    ct__opts_bad(&c, "min_threads",
                 "%d: from 0 to pool_size + reserve_normal + reserve_high (%d)", o->min_threads,
                 high_cap(o));
  return c.rc;
}

/* The supervisor of a task owner (every supervisor embeds its own). */
static ct_supervisor_t *sup_of(ct__task_owner_t *owner) {
  return (ct_supervisor_t *)((char *)owner - offsetof(ct_supervisor_t, owner));
}

/* The task owner's hook: a terminal task leaves the handle table. */
static void forget_task(ct__task_owner_t *owner, ct_task_t *t) {
  ct__handles_remove(&sup_of(owner)->handles, t);
}

static void on_pool_drained(void *data) {
  ct_supervisor_t *sup = data;
  ct__loop_kick(&sup->loop, &sup->stop_check);
}

static void finish_canceled_list(ct_task_t *t);

/* Under the pool lock: only post. */
static void on_pool_spawn_failed(void *data) {
  ct_supervisor_t *sup = data;
  ct__loop_kick(&sup->loop, &sup->spawn_failed);
}

/* Loop thread: the pool owes a thread start; retry after a pause. */
static void schedule_spawn_retry(ct__loop_t *loop, ct__loop_kick_t *kick) {
  ct_supervisor_t *sup = kick->data;
  if (!ev_is_active(&sup->spawn_retry)) {
    ev_timer_set(&sup->spawn_retry, sup->spawn_backoff, 0);
    ev_timer_start(loop->ev, &sup->spawn_retry);
  }
}

/* Loop thread: retry the thread start, backing off (doubling up to
 * CT__SPAWN_BACKOFF_MAX s) while it still fails. Tasks a CANCEL stop finds
 * queued meanwhile are finished here: they need no thread. */
static void retry_spawn(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)revents;
  ct_supervisor_t *sup = w->data;
  bool again;
  finish_canceled_list(ct__pool_retry_spawn(&sup->pool, &again));
  sup->spawn_backoff = again ? fmin(sup->spawn_backoff * 2, CT__SPAWN_BACKOFF_MAX)
                             : CT__SPAWN_BACKOFF_MIN;
  if (again) {
    ev_timer_set(w, sup->spawn_backoff, 0);
    ev_timer_start(ev, w);
  }
}

static void on_loop_exit(ct__loop_t *loop) {
  ct_supervisor_t *sup = loop->data;
  ev_timer_stop(loop->ev, &sup->spawn_retry);
  ct__stop_check_end(sup);
  pthread_mutex_lock(&sup->state_lock);
  atomic_store(&sup->state, CT__SUP_STOPPED);
  pthread_cond_broadcast(&sup->state_cond);
  pthread_mutex_unlock(&sup->state_lock);
}

static bool watchdog_on(const ct_supervisor_t *sup) {
  return sup->opts.timeout_warning > 0 || sup->opts.timeout_critical > 0;
}

static int init_members(ct_supervisor_t *sup) {
  ct__pool_cfg_t cfg = {
      .pool_size = sup->opts.pool_size,
      .reserve_normal = sup->opts.reserve_normal,
      .reserve_high = sup->opts.reserve_high,
      .min_threads = sup->opts.min_threads,
      .keepalive = sup->opts.keepalive,
      .idle_spin = sup->opts.idle_spin,
      .watch_running = watchdog_on(sup),
      .on_drained = on_pool_drained,
      .on_spawn_failed = on_pool_spawn_failed,
      .data = sup,
      .log = sup->opts.log,
      .log_data = sup->opts.log_data,
  };
  int rc = ct__cond_init_monotonic(&sup->state_cond) == 0 ? 0 : CT_ENOMEM;
  if (rc)
    return rc;
  if (pthread_mutex_init(&sup->state_lock, NULL) != 0)
    goto no_lock;
  sup->owner.forget = forget_task;
  sup->owner.deadline_start = ct__deadline_start;
  sup->owner.deadline_end = ct__deadline_end;
  ct__list_init(&sup->delays);
  if (sup->opts.stats_timing && !(sup->owner.timing = calloc(1, sizeof *sup->owner.timing)))
    goto no_timing;
  if (ct__handles_init(&sup->handles) != 0)
    goto no_handles;
  if (ct__sup_parts_init(sup) != 0)
    goto no_parts;
  if (ct__loops_init(sup) != 0)
    goto no_loops;
  if (ct__pool_init(&sup->pool, &cfg) != 0)
    goto no_pool;
  if ((rc = ct__loop_init(&sup->loop, sup)) != 0)
    goto no_loop;
  sup->loop.on_exit = on_loop_exit;
  ct__stop_check_init(sup);
  ct__loop_add_kick(&sup->loop, &sup->spawn_failed, schedule_spawn_retry, sup);
  ct__loop_add_kick(&sup->loop, &sup->part_signal, ct__sup_parts_signaled, sup);
  ev_init(&sup->spawn_retry, retry_spawn);
  sup->spawn_retry.data = sup;
  sup->spawn_backoff = CT__SPAWN_BACKOFF_MIN;
  return 0;
no_loop:
  ct__pool_destroy(&sup->pool);
no_pool:
  ct__loops_destroy(sup);
no_loops:
  ct__sup_parts_destroy(sup);
no_parts:
  ct__handles_destroy(&sup->handles);
no_handles:
  free(sup->owner.timing);
no_timing:
  pthread_mutex_destroy(&sup->state_lock);
no_lock:
  pthread_cond_destroy(&sup->state_cond);
  return rc ? rc : CT_ENOMEM;
}

/* A zeroed supervisor. The pool and the handle table keep their hot fields on
 * cache lines of their own (_Alignas(64)), an alignment calloc() does not
 * promise; sizeof is a multiple of the alignment, as aligned_alloc() needs. */
static ct_supervisor_t *alloc_supervisor(void) {
  ct_supervisor_t *sup = aligned_alloc(_Alignof(ct_supervisor_t), sizeof *sup);
  if (sup)
    memset(sup, 0, sizeof *sup);
  return sup;
}

int ct_supervisor_new(const ct_supervisor_opts_t *opts, ct_supervisor_t **out) {
  if (!out)
    return CT_EINVAL;
  *out = NULL;
  ct_supervisor_t *sup = alloc_supervisor();
  if (!sup)
    return CT_ENOMEM;
  int rc = read_options(opts, &sup->opts);
  if (rc == 0)
    rc = init_members(sup);
  if (rc != 0) {
    free(sup);
    return rc;
  }
  atomic_init(&sup->state, CT__SUP_INIT);
  *out = sup;
  return 0;
}

int ct_supervisor_start(ct_supervisor_t *sup) {
  if (!sup)
    return CT_EINVAL;
  pthread_mutex_lock(&sup->state_lock);
  int state = atomic_load(&sup->state);
  int rc = state == CT__SUP_RUNNING ? CT_EBUSY : state != CT__SUP_INIT ? CT_ESHUTDOWN : 0;
  if (rc == 0) {
    ct__watchdog_start(sup); /* before the loop thread exists: no race */
    rc = ct__loop_start(&sup->loop, "ct-loop");
    if (rc != 0)
      ct__watchdog_stop(sup); /* no thread runs the loop: a retry starts it again */
  }
  if (rc == 0) {
    atomic_store(&sup->state, CT__SUP_RUNNING);
    if (ct__pool_start(&sup->pool) != 0)
      ct__sup_log(sup, CT_LOG_WARNING, "ctasker: min_threads not reached; threads start on demand");
  }
  pthread_mutex_unlock(&sup->state_lock);
  return rc;
}

static void finish_canceled_list(ct_task_t *t) {
  while (t) {
    ct_task_t *next = t->link;
    t->link = NULL;
    ct__task_finish_canceled(t);
    ct_task_unref(t);
    t = next;
  }
}

/* A pool thread, or the thread of its own loop or of one of its extra
 * loops (a loop's data is its supervisor). */
static bool is_own_thread(ct_supervisor_t *sup) {
  ct__loop_t *loop = ct__loop_current();
  return ct__pool_is_own_thread(&sup->pool) || (loop && loop->data == sup) ||
         finishing_stop == sup || ct__sup_thread_is_own(sup);
}

/* Wait for STOPPED and join the loop thread. state_lock held. */
static int wait_stopped(ct_supervisor_t *sup, double timeout) {
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(timeout, &deadline);
  while (atomic_load(&sup->state) != CT__SUP_STOPPED) {
    if (!bounded)
      pthread_cond_wait(&sup->state_cond, &sup->state_lock);
    else if (pthread_cond_timedwait(&sup->state_cond, &sup->state_lock, &deadline) != 0 &&
             atomic_load(&sup->state) != CT__SUP_STOPPED)
      return CT_ETIMEDOUT;
  }
  ct__loop_join(&sup->loop);
  return 0;
}

/* The end of a cancel that a stop waits for: the last use of the
 * supervisor, under its lock, as the loop may end and the supervisor be
 * freed once the count is 0. */
static void cancel_done(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->state_lock);
  atomic_fetch_sub(&sup->cancels_in_flight, 1);
  if (atomic_load(&sup->state) != CT__SUP_RUNNING)
    ct__loop_kick(&sup->loop, &sup->stop_check);
  pthread_mutex_unlock(&sup->state_lock);
}

int ct_supervisor_stop(ct_supervisor_t *sup, int mode, double timeout) {
  if (!sup || (mode != CT_STOP_DRAIN && mode != CT_STOP_CANCEL) ||
      !ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  ct__sup_parts_stop_all(sup); /* workers first: their runs then drain as tasks */
  ct__loops_stop_all(sup);  /* extra loops run what they hold, then end */
  ct_task_t *canceled = NULL;
  pthread_mutex_lock(&sup->state_lock);
  int state = atomic_load(&sup->state);
  if (state == CT__SUP_INIT) {
    atomic_store(&sup->state, CT__SUP_STOPPED);
    ct__loop_quit(&sup->loop); /* its loop never runs: calls are refused */
  } else if (state == CT__SUP_RUNNING) {
    atomic_store(&sup->state, CT__SUP_STOPPING);
    canceled = ct__pool_stop(&sup->pool, mode == CT_STOP_CANCEL);
    canceled = ct__procpool_stop_append(canceled, atomic_load(&sup->procpool),
                                        mode == CT_STOP_CANCEL);
    if (canceled)
      atomic_fetch_add(&sup->cancels_in_flight, 1);
    ct__loop_kick(&sup->loop, &sup->stop_check);
  } else if (state == CT__SUP_STOPPING && mode == CT_STOP_CANCEL) {
    /* A DRAIN stop still waiting (no pool thread could be started, or a
     * task still running): cancel what is still queued, in both pools. */
    canceled = ct__pool_stop(&sup->pool, true);
    canceled = ct__procpool_stop_append(canceled, atomic_load(&sup->procpool), true);
    if (canceled)
      atomic_fetch_add(&sup->cancels_in_flight, 1);
  }
  pthread_mutex_unlock(&sup->state_lock);
  if (canceled) {
    ct_supervisor_t *outer = finishing_stop;
    finishing_stop = sup;
    finish_canceled_list(canceled);
    finishing_stop = outer;
    cancel_done(sup);
  }
  if (timeout == 0)
    return 0;
  if (atomic_load(&sup->state) != CT__SUP_STOPPED && is_own_thread(sup))
    return CT_EDEADLK;
  pthread_mutex_lock(&sup->state_lock);
  int rc = wait_stopped(sup, timeout);
  pthread_mutex_unlock(&sup->state_lock);
  return rc;
}

int ct_supervisor_free(ct_supervisor_t *sup) {
  if (!sup)
    return 0;
  if (ct__sup_parts_attached(sup))
    return CT_EBUSY;
  pthread_mutex_lock(&sup->state_lock);
  int state = atomic_load(&sup->state);
  if (state == CT__SUP_STOPPED)
    ct__loop_join(&sup->loop);
  pthread_mutex_unlock(&sup->state_lock);
  if (state != CT__SUP_STOPPED && state != CT__SUP_INIT)
    return CT_EBUSY;
  ct__watchdog_stop(sup);
  ct__loop_destroy(&sup->loop); /* first: its inbox may hold the pool's message */
  ct__procpool_free(atomic_load(&sup->procpool));
  ct__pool_destroy(&sup->pool);
  ct__handles_destroy(&sup->handles);
  ct__loops_destroy(sup);
  ct__sup_parts_destroy(sup);
  free(sup->owner.timing);
  pthread_mutex_destroy(&sup->state_lock);
  pthread_cond_destroy(&sup->state_cond);
  free(sup);
  return 0;
}

int ct__read_task_options(ct_supervisor_t *sup, const char *fn, const ct_task_opts_t *in,
                          ct_task_opts_t *o) {
  ct_task_opts_t defaults = CT_TASK_OPTS_INIT;
  ct__opts_check_t c = ct__sup_opts_check(sup, "ct_task_opts_t", fn);
  *o = defaults;
  if (!in)
    return 0;
  if (ct__opts_read(&c, o, sizeof *o, in, offsetof(ct_task_opts_t, done_data)) != 0)
    return CT_EINVAL;
  ct__opts_int(&c, "priority", o->priority, CT_PRIORITY_CRITICAL, CT_PRIORITY_MAX);
  ct__opts_seconds(&c, "delay", o->delay, CT__SEC_DELAY);
  ct__opts_seconds(&c, "timeout", o->timeout, CT__SEC_LIMIT);
  return c.rc;
}

/* The id of the task of a submission, from its shard and the shard's
 * count of submissions begun before it. */
static uint64_t submission_id(unsigned shard, uint64_t count_before) {
  return (uint64_t)shard << CT__SUBMIT_SHARD_SHIFT |
         ((count_before >> CT__SUBMIT_FLIGHT_BITS) + 1);
}

uint64_t ct__supervisor_begin(ct_supervisor_t *sup) {
  unsigned shard = submit_shard_of_thread();
  return submission_id(shard, atomic_fetch_add_explicit(&sup->submitting[shard].count,
                                                        CT__SUBMIT_BEGUN_ONE,
                                                        memory_order_relaxed));
}

ct_task_t *ct__supervisor_new_task(ct_supervisor_t *sup, ct_task_fn fn, void *arg,
                                   const ct_task_opts_t *o, bool tracked, uint64_t id) {
  bool more = o->arg_free || ct__deadline_bounded(o->timeout);
  bool extra = tracked || o->on_done || o->name || watchdog_on(sup) || sup->owner.timing || more;
  ct_task_t *t = more ? ct__task_new_more(fn, arg, o->priority, ct__deadline_size())
                      : ct__task_new(fn, arg, o->priority, extra);
  if (!t)
    return NULL;
  if (more)
    ct__deadline_init(sup, t, o);
  if (o->name && !(ct__task_x(t)->name = strdup(o->name))) {
    ct_task_unref(t); /* arg stays the caller's: arg_free is not called */
    return NULL;
  }
  if (extra) {
    ct__task_x(t)->on_done = o->on_done;
    ct__task_x(t)->done_data = o->done_data;
  }
  t->owner = &sup->owner;
  t->id = id;
  return t;
}

int ct__supervisor_track(ct_supervisor_t *sup, ct_task_t *t, ct_task_t **out) {
  if (!out)
    return 0;
  /* Until the table has it, nobody else can reach the new task: the
   * handle's reference and the flag are counted with plain stores, which
   * the table's insertion publishes, not with read-modify-writes. */
  unsigned refs = atomic_load_explicit(&t->refs, memory_order_relaxed);
  unsigned flags = atomic_load_explicit(&t->flags, memory_order_relaxed);
  atomic_store_explicit(&t->refs, refs + 1, memory_order_relaxed);
  atomic_store_explicit(&t->flags, flags | CT__F_REGISTERED, memory_order_relaxed);
  if (ct__handles_add(&sup->handles, t) != 0) {
    atomic_store_explicit(&t->refs, refs, memory_order_relaxed);
    atomic_store_explicit(&t->flags, flags, memory_order_relaxed);
    return CT_ENOMEM;
  }
  *out = t;
  return 0;
}

/* Only a supervisor's own loops end no later than it (its stop waits for
 * them) and are freed with it; a loop's data is its supervisor. */
bool ct__loop_is_own(const ct_supervisor_t *sup, const ct__loop_t *loop) {
  return loop->data == sup;
}

void ct__supervisor_publish(ct_supervisor_t *sup, ct_task_t **out) {
  if (out && *out)
    ct__handles_publish(&sup->handles, *out);
}

void ct__supervisor_abandon(ct_supervisor_t *sup, ct_task_t *t, ct_task_t **out) {
  atomic_fetch_add(&sup->refused, 1);
  if (ct__task_has(t, CT__F_REGISTERED))
    ct__handles_remove(&sup->handles, t);
  if (out && *out) {
    ct_task_unref(*out);
    *out = NULL;
  }
  ct_task_unref(t);
}

/* Leave a submission. A stop that began meanwhile may have seen it in
 * flight already: tell its loop to look again. */
static void submission_leave(ct_supervisor_t *sup, atomic_uint_fast64_t *count) {
  atomic_fetch_sub(count, 1);
  if (atomic_load(&sup->state) != CT__SUP_RUNNING)
    ct__loop_kick(&sup->loop, &sup->stop_check);
}

/* Enter a submission: count it begun and in flight on the thread's shard,
 * with one atomic add, and set *id to its task's id; returns that shard's
 * count, or NULL (left again, counted refused) unless the supervisor
 * runs. Counted before the state is read, so a stop whose loop did not see
 * the count is a stop this check sees (both sequentially consistent). */
static atomic_uint_fast64_t *submission_enter(ct_supervisor_t *sup, uint64_t *id) {
  unsigned shard = submit_shard_of_thread();
  atomic_uint_fast64_t *count = &sup->submitting[shard].count;
  *id = submission_id(shard, atomic_fetch_add(count, CT__SUBMIT_BEGUN_ONE + 1));
  if (atomic_load(&sup->state) == CT__SUP_RUNNING)
    return count;
  atomic_fetch_add(&sup->refused, 1);
  submission_leave(sup, count);
  return NULL;
}

/* Give a new task (our reference) to its executor. Returns 0 (the executor
 * owns the reference and may already have finished the task) or an error
 * (nothing was taken). */
static int hand_over(ct_supervisor_t *sup, ct_task_t *t, const ct_task_opts_t *o) {
  if (o->loop) /* from the start: a cancel of a delayed loop task looks there */
    atomic_fetch_or(&t->flags, CT__F_ON_LOOP);
  if (o->delay > 0) {
    ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_DELAYED); /* nobody else sees t yet */
    return ct__delay_start(sup, t, o->delay, o->loop);
  }
  ct__task_stamp_queued(t);
  if (o->loop)
    return ct__loop_exec(o->loop, t, &sup->loop_counts);
  return ct__pool_submit(&sup->pool, t);
}

int ct_background_task(ct_supervisor_t *sup, ct_task_fn fn, void *arg,
                       const ct_task_opts_t *opts, ct_task_t **out) {
  ct_task_opts_t o;
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  int rc = ct__read_task_options(sup, "ct_background_task", opts, &o);
  if (rc == 0 && sup && o.loop && !ct__loop_is_own(sup, o.loop)) {
    ct__opts_check_t c = ct__sup_opts_check(sup, "ct_task_opts_t", "ct_background_task");
    rc = ct__opts_bad(&c, "loop", "not a loop of this supervisor");
  }
  if (!sup || !fn || rc != 0)
    return rc ? rc : CT_EINVAL;
  if (o.loop == &sup->loop && ct__deadline_bounded(o.timeout)) {
    /* the function would block the loop that ends it */
    ct__sup_log(sup, CT_LOG_ERROR,
                "ctasker: ct_background_task: a timeout needs an extra loop, not the supervisor's own");
    return CT_ENOTSUP;
  }
  uint64_t id;
  atomic_uint_fast64_t *in_flight = submission_enter(sup, &id);
  if (!in_flight)
    return ct__sup_refuse_not_running(sup, "ct_background_task");
  ct_task_t *t = ct__supervisor_new_task(sup, fn, arg, &o, out != NULL, id);
  rc = t ? ct__supervisor_track(sup, t, out) : CT_ENOMEM;
  if (rc == 0)
    rc = hand_over(sup, t, &o);
  if (rc == 0)
    ct__supervisor_publish(sup, out);
  else if (t)
    ct__supervisor_abandon(sup, t, out);
  else
    atomic_fetch_add(&sup->refused, 1);
  submission_leave(sup, in_flight);
  return rc;
}

/* Take a QUEUED task back from whichever executor holds it: true if this
 * call made it CANCELED. */
static bool cancel_queued(ct_supervisor_t *sup, ct_task_t *task) {
  if (ct__task_has(task, CT__F_ON_LOOP)) {
    return ct__loop_cancel_queued(&sup->loop_counts, task);
  }
  if (ct__task_has(task, CT__F_PROCESS))
    return ct__procpool_cancel_queued(atomic_load(&sup->procpool), task);
  return ct__pool_cancel_queued(&sup->pool, task);
}

/* Cancel a QUEUED or DELAYED task, finishing it on this thread (its
 * callback, its arg_free, the handle table): true if this call claimed it.
 * Counted in flight from before the claim, so that a stop waits for the
 * finishing (the stop reads the count after it has seen the task gone
 * from the pool and the delays). */
static bool claim_and_finish(ct_supervisor_t *sup, ct_task_t *task) {
  atomic_fetch_add(&sup->cancels_in_flight, 1);
  bool claimed;
  if (atomic_load(&task->status) == CT_TASK_QUEUED) {
    claimed = cancel_queued(sup, task);
    if (claimed) {
      atomic_fetch_or(&task->flags, CT__F_CANCEL_REQUESTED);
      ct__task_finish_canceled(task);
    }
  } else {
    claimed = ct__task_try_status(task, CT_TASK_DELAYED, CT_TASK_CANCELED);
    if (claimed) {
      atomic_fetch_or(&task->flags, CT__F_CANCEL_REQUESTED);
      atomic_fetch_sub(&sup->delayed, 1);
      atomic_fetch_add(&sup->canceled_delayed, 1);
      ct__task_finish_canceled(task);
      ct__delay_forget(sup, task);
    }
  }
  cancel_done(sup);
  return claimed;
}

int ct_task_cancel(ct_task_t *task) {
  if (!task)
    return CT_EINVAL;
  ct_supervisor_t *sup = sup_of(task->owner);
  for (;;) {
    switch (atomic_load(&task->status)) {
    case CT_TASK_COMPLETED:
    case CT_TASK_CANCELED:
      return CT_EALREADY;
    case CT_TASK_STARTED:
      atomic_fetch_or(&task->flags, CT__F_CANCEL_REQUESTED);
      if (ct__task_has(task, CT__F_PROCESS)) /* its child is killed */
        ct__procpool_kill_canceled(atomic_load(&sup->procpool));
      return CT_EBUSY;
    case CT_TASK_QUEUED:
    case CT_TASK_DELAYED:
      if (claim_and_finish(sup, task))
        return 0;
      break;
    }
  }
}

int ct_supervisor_get_task(ct_supervisor_t *sup, uint64_t id, ct_task_t **out) {
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !out)
    return CT_EINVAL;
  ct_task_t *t = ct__handles_get(&sup->handles, id); /* none still being handed over */
  *out = t;
  return t ? 0 : CT_ENOENT;
}

size_t ct_supervisor_registry_size(ct_supervisor_t *sup) {
  if (!sup)
    sup = ct_supervisor_default();
  return sup ? ct__handles_size(&sup->handles) : 0;
}

/* Loop tasks: the outcomes are read before the count of accepted tasks,
 * which every outcome follows, so `active` never wraps below zero. */
static void loop_stats(ct__loop_counts_t *lc, ct_stats_t *out) {
  uint64_t done = atomic_load(&lc->completed) + atomic_load(&lc->failed) +
                  atomic_load(&lc->canceled);
  out->loop_tasks = atomic_load(&lc->accepted);
  out->loop_active = out->loop_tasks - done;
}

/* The smallest ct_stats_t ever published: up to threads_idle. */
#define CT__STATS_OLDEST (offsetof(ct_stats_t, threads_idle) + sizeof(uint64_t))

static void timing_stats(const ct__timing_t *tm, ct_stats_t *out) {
  uint64_t n;
  out->wait_p50 = ct__histogram_quantile(&tm->wait, 0.50, &n);
  out->wait_p90 = ct__histogram_quantile(&tm->wait, 0.90, &n);
  out->wait_p99 = ct__histogram_quantile(&tm->wait, 0.99, &n);
  out->run_p50 = ct__histogram_quantile(&tm->run, 0.50, &n);
  out->run_p90 = ct__histogram_quantile(&tm->run, 0.90, &n);
  out->run_p99 = ct__histogram_quantile(&tm->run, 0.99, &n);
  out->timed = n;
}

/* With stats_timing: {"tasks", "wait": {"p50", "p90", "p99"}, "run": {..}}. */
static json_t *timing_json(const ct_stats_t *s) {
  return json_pack("{s:I, s:{s:f, s:f, s:f}, s:{s:f, s:f, s:f}}", "tasks", (json_int_t)s->timed,
                   "wait", "p50", s->wait_p50, "p90", s->wait_p90, "p99", s->wait_p99, "run",
                   "p50", s->run_p50, "p90", s->run_p90, "p99", s->run_p99);
}

/* Every counter this library has, into *out. */
static void all_stats(ct_supervisor_t *sup, ct_stats_t *out) {
  ct__pool_counts_t pool;
  ct__pool_counts(&sup->pool, &pool);
  *out = (ct_stats_t){.size = sizeof *out, .queued = pool.queued, .running = pool.running,
                      .completed = pool.completed, .failed = pool.failed,
                      .canceled = pool.canceled, .threads = pool.threads,
                      .threads_idle = pool.threads_idle};
  loop_stats(&sup->loop_counts, out);
  out->registered = ct__handles_size(&sup->handles);
  /* Every submission is counted begun on a shard first, so the shards'
   * counts less the refused tell how many were accepted. The refused are
   * read first: a refusal counted after that read was begun before the
   * shards are read, so the difference never falls below zero (read the
   * other way round, a submission begun and refused between the two reads
   * took one off and wrapped it). A submission half-way counts meanwhile. */
  uint64_t refused = atomic_load(&sup->refused), begun = 0;
  for (int i = 0; i < CT__SUBMIT_SHARDS; i++)
    begun += atomic_load(&sup->submitting[i].count) >> CT__SUBMIT_FLIGHT_BITS;
  out->submitted = begun - refused;
  out->delayed = atomic_load(&sup->delayed);
  out->completed += atomic_load(&sup->loop_counts.completed);
  out->failed += atomic_load(&sup->loop_counts.failed);
  out->canceled += atomic_load(&sup->canceled_delayed) + atomic_load(&sup->loop_counts.canceled);
  out->overrun = atomic_load(&sup->overrun);
  out->late_returns = atomic_load(&sup->late_returns);
  ct__procpool_counts_t proc; /* submitted: the shards count every task */
  ct__procpool_counts(atomic_load(&sup->procpool), &proc);
  out->queued += proc.queued;
  out->running += proc.running;
  out->completed += proc.completed;
  out->failed += proc.failed;
  out->canceled += proc.canceled;
  if (sup->owner.timing)
    timing_stats(sup->owner.timing, out);
}

int ct_supervisor_stats(ct_supervisor_t *sup, ct_stats_t *out) {
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !out)
    return CT_EINVAL;
  ct_stats_t all;
  all_stats(sup, &all);
  return ct__out_fill(out, &all, sizeof all, CT__STATS_OLDEST);
}

static const char *state_name(int state) {
  static const char *const names[] = {"init", "running", "stopping", "stopped"};
  return names[state];
}

json_t *ct_supervisor_stats_json(ct_supervisor_t *sup) {
  ct_stats_t s = CT_STATS_INIT;
  if (!sup)
    sup = ct_supervisor_default();
  if (ct_supervisor_stats(sup, &s) != 0)
    return NULL;
  const ct_supervisor_opts_t *o = &sup->opts;
  json_t *j = json_pack(
      "{s:s, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I},"
      " s:{s:i, s:i, s:i, s:i, s:i, s:I, s:I}}",
      "state", state_name(atomic_load(&sup->state)), "tasks", "submitted",
      (json_int_t)s.submitted, "queued", (json_int_t)s.queued, "delayed",
      (json_int_t)s.delayed, "running", (json_int_t)s.running, "completed",
      (json_int_t)s.completed, "failed", (json_int_t)s.failed, "canceled",
      (json_int_t)s.canceled, "registered", (json_int_t)s.registered, "overrun",
      (json_int_t)s.overrun, "late_returns", (json_int_t)s.late_returns, "loops", "tasks",
      (json_int_t)s.loop_tasks, "active", (json_int_t)s.loop_active, "pool", "size",
      o->pool_size, "reserve_normal", o->reserve_normal, "reserve_high", o->reserve_high,
      "min_threads", o->min_threads, "max_threads", high_cap(o), "threads",
      (json_int_t)s.threads, "threads_idle", (json_int_t)s.threads_idle);
  /* Workers are the parts attached to a supervisor. */
  if (j && json_object_set_new(j, "workers", ct__sup_parts_json(sup)) != 0) {
    json_decref(j); /* out of memory: no partial answer */
    j = NULL;
  }
  if (j && sup->owner.timing && json_object_set_new(j, "timing", timing_json(&s)) != 0) {
    json_decref(j);
    j = NULL;
  }
  json_t *processes = ct__procpool_stats_json(atomic_load(&sup->procpool));
  if (j && processes && json_object_set_new(j, "processes", processes) != 0) {
    json_decref(j);
    j = NULL;
  }
  return j;
}

ct_supervisor_t *ct_supervisor_default(void) { return atomic_load(&default_sup); }

int ct_default_start(const ct_supervisor_opts_t *opts) {
  ct_supervisor_t *sup;
  if (atomic_load(&default_sup))
    return CT_EBUSY;
  int rc = ct_supervisor_new(opts, &sup);
  if (rc != 0)
    return rc;
  ct_supervisor_t *expected = NULL;
  if ((rc = ct_supervisor_start(sup)) == 0 &&
      !atomic_compare_exchange_strong(&default_sup, &expected, sup))
    rc = CT_EBUSY;
  if (rc != 0) {
    ct_supervisor_stop(sup, CT_STOP_CANCEL, -1);
    ct_supervisor_free(sup);
  }
  return rc;
}

int ct_default_stop(int mode, double timeout) {
  ct_supervisor_t *sup = atomic_exchange(&default_sup, NULL);
  if (!sup)
    return CT_ENOENT;
  int rc = ct_supervisor_stop(sup, mode, timeout);
  if (rc == 0 && atomic_load(&sup->state) == CT__SUP_STOPPED)
    rc = ct_supervisor_free(sup); /* CT_EBUSY while a worker exists */
  if (rc != 0)
    atomic_store(&default_sup, sup); /* not stopped or freed yet: keep it reachable */
  return rc;
}
