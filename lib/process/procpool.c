/* The process pool, parent side: its engine (queue, finishing, progress
 * and stop, the entry points of procpool.h). The children's slots are in
 * children.c, the link to the fork server in server.c, socket I/O in
 * conn.c (procpool-internal.h says which part does what).
 *
 * Owns the fork server (pid and socket) and one slot per child (pid,
 * socket, running task). Everything about slots, sockets and timers lives on
 * the thread of the loop its config names (cfg.loop: the supervisor's);
 * other threads reach the pool only through pool->lock (the run queue, the
 * counters, the state) and by posting a "kick" message to the loop. The
 * pool lock is a leaf (docs/threading.md): the kick is posted after it is
 * let go.
 *
 * Work enters through ct__procpool_submit(): the request frame is encoded
 * at once, the task is queued in priority order and the loop is kicked. On
 * the loop, dispatch() hands the first queued task that may start under its
 * reservation cap to an idle child and arms its timeout. The child answers
 * with one result frame; the task is finished (on the reply loop its
 * submitter named, or on the pool's loop) and the child is idle again.
 *
 * Failure: a socket that ends, a frame that does not decode or answers the
 * wrong task, a timeout, or a cancel of the running task (ct_task_cancel()
 * sets the task's flag, then kicks the loop with kill_posted set; the loop
 * looks for busy slots whose task has the flag) turns the slot to
 * REAPING: its socket is closed,
 * the task finished with an error (at once, or once the fork server reports
 * how the child ended), the fork server asked to end the child (kill it
 * after a grace) and a new child is requested. The fork server also reports
 * every child that ends by itself, so a death is seen even while a process
 * the child started holds its socket open. The fork server alone reaps
 * children, and kills them by pid while it lives (a pid it has not reaped
 * is still its child's); this file reaps only the fork server.
 * A child whose socket did not arrive (we were out of descriptors) is
 * ended by the fork server and requested again later.
 *
 * The fork server dies: its children live on as orphans (their sockets are
 * ours): running tasks go on, their timeouts and cancels still kill
 * (through the pidfd that came with each child's socket, which names that
 * child only), and a new fork server is started at once, then again with a
 * growing delay while that fails. While there is no fork server and no
 * child, queued and new tasks fail with ProcessPoolUnavailable and a log
 * line. A child of an earlier fork server is replaced by one of the current
 * one when it ends.
 *
 * Stop: the state becomes STOPPING (no new tasks); queued tasks still run
 * (or were canceled by the stopper); when nothing is queued or running,
 * idle children's sockets are closed (they exit), then the fork server's
 * write side is shut; on its end of stream it has reaped every child and
 * exits, and is reaped here. Then the state is STOPPED and the config's
 * on_stopped hook is called.
 */
#include "process/procpool-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/cond.h"
#include "base/log.h"
#include "base/opts.h"
#include "base/utf8.h"
#include "ctasker/result.h"
#include "process/forkserver.h"
#include "process/process-registry.h"

typedef struct {
  ct__loop_msg_t msg;
  ct_task_t *task; /* the slot's reference */
  json_t *result;
} ct__finish_msg_t;

/* ---------- small helpers ---------- */

void ct__proc_log(ct__procpool_t *pool, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ct__vlog(pool->cfg.log, pool->cfg.log_data, level, fmt, ap);
  va_end(ap);
}

void ct__proc_call_free(ct__proc_call_t *c) {
  if (c) {
    free(c->frame);
    json_decref(c->fallback);
    free(c);
  }
}

/* ---------- the queue (pool lock held) ---------- */

static int cap_of(const ct__procpool_t *pool, int priority) {
  int cap = ct__cap_for_priority(priority, pool->opts.pool_size, pool->opts.reserve_normal,
                                 pool->opts.reserve_high);
  return cap < pool->nslots ? cap : pool->nslots;
}

/* A queued task's call, which it carries in its arg. */
static void release_call(ct_task_t *t) {
  ct__proc_call_free(t->arg);
  t->arg = NULL;
}

static void drop_queued(ct_task_t *t) {
  release_call(t);
  ct_task_unref(t);
}

ct_task_t *ct__proc_take_runnable(ct__procpool_t *pool) {
  ct_task_t *t;
  while ((t = ct__rq_peek(&pool->rq)) != NULL) {
    if (atomic_load(&t->status) == CT_TASK_CANCELED) {
      drop_queued(ct__rq_pop(&pool->rq));
      continue;
    }
    if (pool->running >= cap_of(pool, t->priority))
      return NULL;
    ct__rq_pop(&pool->rq);
    if (!ct__task_try_start(t)) {
      drop_queued(t);
      continue;
    }
    pool->queued--;
    pool->running++;
    return t;
  }
  return NULL;
}

/* ---------- finishing tasks ---------- */

static void finish_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__finish_msg_t *m = (ct__finish_msg_t *)msg;
  ct__task_finish(m->task, m->result);
  ct_task_unref(m->task);
  free(m);
}

/* Finish a started task with `result` (stolen), on its submitter's loop if
 * it came from one. Takes over the caller's reference and the call. A
 * child's result is never NULL: NULL is an error that could not be
 * allocated, and the call's fallback stands in for it, so that a failure
 * never reads as a success. */
void ct__proc_finish_task(ct__procpool_t *pool, ct_task_t *t, ct__proc_call_t *call,
                          json_t *result) {
  if (!result && call) {
    result = call->fallback;
    call->fallback = NULL;
  }
  bool failed = result && ct_result_is_error(result);
  pthread_mutex_lock(&pool->lock);
  pool->running--;
  if (failed)
    pool->failed++;
  else
    pool->completed++;
  pthread_mutex_unlock(&pool->lock);
  ct__loop_t *reply_loop = call ? call->reply_loop : NULL;
  ct__proc_call_free(call);
  if (reply_loop) {
    ct__finish_msg_t *m = malloc(sizeof *m);
    if (m) {
      m->msg.run = finish_on_loop;
      m->task = t;
      m->result = result;
      if (ct__loop_post(reply_loop, &m->msg) == 0)
        return;
      free(m);
    }
  }
  ct__task_finish(t, result);
  ct_task_unref(t);
}

void ct__proc_slot_finish(ct__slot_t *s, json_t *result) {
  ct_task_t *t = s->task;
  ct__proc_call_t *call = s->call;
  s->task = NULL;
  s->call = NULL;
  ev_timer_stop(s->pool->cfg.loop->ev, &s->timer);
  ct__proc_finish_task(s->pool, t, call, result);
}

/* ---------- progress and stop (loop thread) ---------- */

static bool any_slot(const ct__procpool_t *pool, enum slot_state st) {
  for (int i = 0; i < pool->nslots; i++)
    if (pool->slots[i].state == st)
      return true;
  return false;
}

/* No child, and no fork server or none that can fork: nothing can run the
 * queued tasks now. Fail them, with a log line, rather than keep them
 * waiting for a child that may never come; `why` says what is missing. */
static void fail_queued(ct__procpool_t *pool, const char *why) {
  for (uint64_t failed = 0;;) {
    pthread_mutex_lock(&pool->lock);
    ct_task_t *t = ct__rq_peek(&pool->rq);
    if (t && atomic_load(&t->status) != CT_TASK_CANCELED) {
      ct__rq_pop(&pool->rq);
      if (!ct__task_try_start(t)) { /* started (and stamped) to be failed */
        drop_queued(t);
        pthread_mutex_unlock(&pool->lock);
        continue;
      }
      pool->queued--;
      pool->running++;
    } else if (t) {
      drop_queued(ct__rq_pop(&pool->rq));
      pthread_mutex_unlock(&pool->lock);
      continue;
    }
    pthread_mutex_unlock(&pool->lock);
    if (!t) {
      if (failed > 0)
        ct__proc_log(pool, CT_LOG_ERROR, "ctasker: %llu process task(s) failed: %s",
                     (unsigned long long)failed, why);
      return;
    }
    ct__proc_call_t *call = t->arg;
    t->arg = NULL;
    ct__proc_finish_task(pool, t, call,
                         ct_error_new("ProcessPoolUnavailable",
                                      "the process pool has no child and %s", why));
    failed++;
  }
}

static void mark_stopped(ct__procpool_t *pool) {
  ev_timer_stop(pool->cfg.loop->ev, &pool->restart_timer);
  ev_timer_stop(pool->cfg.loop->ev, &pool->shut_timer);
  pthread_mutex_lock(&pool->lock);
  pool->state = POOL_STOPPED;
  pthread_cond_broadcast(&pool->stopped_cond);
  pthread_mutex_unlock(&pool->lock);
  pool->cfg.on_stopped(pool->cfg.data);
}

#define SERVER_END_MAX (CT__SERVER_ANSWER_MAX + CT__SHUTDOWN_GRACE_MS / 1000.0)

static void on_server_end_overdue(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__procpool_t *pool = w->data;
  if (!pool->server_gone)
    ct__proc_server_unanswering(pool, SERVER_END_MAX);
  ct__proc_check_progress(pool);
}

/* The fork server was told to end: it gives its children their grace and
 * exits. One that does not (stopped, hung) is killed once it has had
 * CT__SERVER_ANSWER_MAX beyond that grace, as one that leaves a request
 * unanswered, so that a stop never waits for it for ever. */
static void await_server_end(ct__procpool_t *pool) {
  struct ev_loop *ev = pool->cfg.loop->ev;
  ev_timer_init(&pool->shut_timer, on_server_end_overdue, SERVER_END_MAX, 0.);
  pool->shut_timer.data = pool;
  ev_now_update(ev);
  ev_timer_start(ev, &pool->shut_timer);
}

/* Stopping, with nothing queued or running: close idle children, then the
 * fork server; once it is reaped, the pool has stopped. */
static void wind_down(ct__procpool_t *pool) {
  if (any_slot(pool, SLOT_BUSY) || any_slot(pool, SLOT_REAPING) || any_slot(pool, SLOT_SPAWNING))
    return;
  for (int i = 0; i < pool->nslots; i++) {
    ct__slot_t *s = &pool->slots[i];
    ev_timer_stop(pool->cfg.loop->ev, &s->timer);
    if (s->state == SLOT_IDLE) {
      ct__conn_close(pool->cfg.loop->ev, &s->conn);
      s->state = SLOT_EMPTY;
      ct__proc_slot_forget_child(s);
      s->orphan = false;
    }
  }
  if (!pool->server_gone && !pool->server_shut) {
    pool->server_shut = true;
    shutdown(pool->server.fd, SHUT_WR);
    await_server_end(pool);
    return; /* its end of stream comes back through ct__proc_server_readable */
  }
  if (pool->server_gone)
    mark_stopped(pool);
}

void ct__proc_check_progress(ct__procpool_t *pool) {
  ct__proc_dispatch(pool);
  pthread_mutex_lock(&pool->lock);
  int state = pool->state;
  bool idle = pool->queued == 0 && pool->running == 0;
  pthread_mutex_unlock(&pool->lock);
  bool no_child = !any_slot(pool, SLOT_IDLE) && !any_slot(pool, SLOT_BUSY);
  if (no_child && pool->server_gone)
    fail_queued(pool, "no fork server could be started");
  else if (no_child && pool->failed_spawns >= CT__SPAWN_FAILURES_MAX)
    fail_queued(pool, "its fork server could not fork one");
  if (state == POOL_STOPPING && idle)
    wind_down(pool);
}

static void kick_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__procpool_t *pool = (ct__procpool_t *)((char *)msg - offsetof(ct__procpool_t, kick_msg));
  atomic_store(&pool->kick_posted, false);
  if (ct__procpool_stopped(pool))
    return;
  /* Read after kick_posted is cleared: a cancel that found the kick still
   * posted set kill_posted before, so it is seen here. */
  if (atomic_exchange(&pool->kill_posted, false))
    ct__proc_kill_canceled(pool);
  ct__proc_check_progress(pool);
}

/* Any thread: have the loop look at the pool. Allocates nothing, so a
 * kick cannot be lost for want of memory. */
static void kick(ct__procpool_t *pool) {
  if (atomic_exchange(&pool->kick_posted, true))
    return;
  pool->kick_msg.run = kick_on_loop;
  if (ct__loop_post_embedded(pool->cfg.loop, &pool->kick_msg) != 0)
    atomic_store(&pool->kick_posted, false);
}

static void setup_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__procpool_t *pool = (ct__procpool_t *)((char *)msg - offsetof(ct__procpool_t, setup_msg));
  pool->on_loop = true;
  ct__conn_init(pool->cfg.loop->ev, &pool->server, pool->server.fd, 4096, ct__proc_server_readable,
                ct__proc_server_writable, pool);
  for (int i = 0; i < pool->nslots; i++)
    ct__proc_request_spawn(&pool->slots[i]);
  ct__proc_check_progress(pool);
}

/* ---------- entry points (procpool.h) ---------- */

int ct__procpool_read_options(ct__opts_check_t *c, const ct_process_pool_opts_t *in,
                              ct_process_pool_opts_t *o) {
  ct_process_pool_opts_t defaults = CT_PROCESS_POOL_OPTS_INIT;
  *o = defaults;
  if (ct__opts_read(c, o, sizeof *o, in, offsetof(ct_process_pool_opts_t, task_timeout)) != 0)
    return CT_EINVAL;
  ct__opts_int(c, "pool_size", o->pool_size, 1, 4096);
  ct__opts_int(c, "reserve_normal", o->reserve_normal, 0, 4096);
  ct__opts_int(c, "reserve_high", o->reserve_high, 0, 4096);
  ct__opts_seconds(c, "task_timeout", o->task_timeout, CT__SEC_LIMIT);
  if (o->task_timeout >= CT__SECONDS_FOREVER)
    o->task_timeout = 0; /* no bound: no timer */
  if (o->max_frame == 0)
    o->max_frame = CT__DEFAULT_MAX_FRAME;
  if (o->max_frame > UINT32_MAX - CT__FRAME_SLACK)
    ct__opts_bad(c, "max_frame", "%zu bytes: at most %lu", o->max_frame,
                 (unsigned long)(UINT32_MAX - CT__FRAME_SLACK));
  return c->rc;
}

ct__procpool_t *ct__procpool_new(const ct_process_pool_opts_t *o, const ct__procpool_cfg_t *cfg) {
  ct__procpool_t *pool = calloc(1, sizeof *pool);
  if (!pool)
    return NULL;
  pool->cfg = *cfg;
  pool->opts = *o;
  pool->nslots = o->pool_size + o->reserve_normal + o->reserve_high;
  pool->slots = calloc((size_t)pool->nslots, sizeof *pool->slots);
  if (!pool->slots || pthread_mutex_init(&pool->lock, NULL) != 0) {
    free(pool->slots);
    free(pool);
    return NULL;
  }
  ct__cond_init_monotonic(&pool->stopped_cond);
  ct__rq_init(&pool->rq);
  for (int i = 0; i < pool->nslots; i++) {
    ct__slot_t *s = &pool->slots[i];
    s->pool = pool;
    s->index = i;
    s->conn.fd = -1;
    s->pidfd = -1;
    ev_timer_init(&s->timer, ct__proc_retry_spawn, 0., 0.);
    s->timer.data = s;
  }
  pool->server.fd = -1;
  ev_timer_init(&pool->restart_timer, ct__proc_restart_server, 0., 0.);
  pool->restart_timer.data = pool;
  ct__process_registry_hold();
  return pool;
}

int ct__procpool_start(ct__procpool_t *pool) {
  int rc = ct__forkserver_start(pool->opts.max_frame + CT__FRAME_SLACK, &pool->server_pid,
                                &pool->server.fd);
  if (rc != 0)
    return rc;
  pool->setup_msg.run = setup_on_loop;
  rc = ct__loop_post_embedded(pool->cfg.loop, &pool->setup_msg);
  if (rc != 0) {
    close(pool->server.fd);
    pool->server.fd = -1;
    waitpid(pool->server_pid, NULL, 0);
  }
  return rc;
}

/* The task's own timeout, else the pool's (0: no bound). */
static double call_timeout(const ct__procpool_t *pool, double timeout) {
  if (timeout == 0)
    return pool->opts.task_timeout;
  return timeout >= CT__SECONDS_FOREVER ? 0 : timeout;
}

/* The request frame for a call. Returns 0 or CT_EINVAL (a name that is not
 * UTF-8, as no function registers under one; arguments too large or not
 * encodable) / CT_ENOMEM. */
static int make_call(ct__procpool_t *pool, uint64_t id, const char *name, const json_t *args,
                     ct__loop_t *reply_loop, ct__proc_call_t **out) {
  if (!ct__utf8_valid(name, strlen(name)))
    return CT_EINVAL;
  ct__proc_call_t *call = calloc(1, sizeof *call);
  json_t *req = json_pack("{s:I, s:s, s:O}", "id", (json_int_t)id, "fn", name, "args",
                          args ? (json_t *)args : json_null());
  if (call)
    call->fallback = ct_error_new("MemoryError", "process task %llu failed, and its error "
                                  "could not be allocated", (unsigned long long)id);
  if (!call || !req || !call->fallback) {
    ct__proc_call_free(call);
    json_decref(req);
    return CT_ENOMEM;
  }
  int rc =
      ct__frame_encode(req, pool->opts.max_frame + CT__FRAME_SLACK, &call->frame, &call->frame_len);
  json_decref(req);
  if (rc != 0) {
    ct__proc_call_free(call);
    return rc == CT__FRAME_NOMEM ? CT_ENOMEM : CT_EINVAL;
  }
  call->reply_loop = reply_loop;
  *out = call;
  return 0;
}

/* Queue a task; a `delayed` one moves DELAYED -> QUEUED under the pool's
 * lock, so that a cancel never finds it QUEUED but not yet in the queue.
 * Returns 0, CT_ESHUTDOWN, or CT_EALREADY (a delayed task canceled first). */
static int enqueue(ct__procpool_t *pool, ct_task_t *t, bool delayed) {
  pthread_mutex_lock(&pool->lock);
  int rc = pool->state != POOL_RUNNING                 ? CT_ESHUTDOWN
           : delayed && !ct__task_try_queue_delayed(t) ? CT_EALREADY
                                                       : 0;
  if (rc == 0) {
    ct__rq_push(&pool->rq, t);
    pool->submitted++;
    pool->queued++;
  }
  pthread_mutex_unlock(&pool->lock);
  if (rc == 0)
    kick(pool);
  return rc;
}

int ct__procpool_prepare(ct__procpool_t *pool, ct_task_t *t, const char *name,
                         const json_t *args, ct__loop_t *reply_loop, double timeout) {
  ct__proc_call_t *call;
  int rc = make_call(pool, t->id, name, args, reply_loop, &call);
  if (rc != 0)
    return rc;
  call->timeout = call_timeout(pool, timeout);
  t->arg = call;
  atomic_fetch_or(&t->flags, CT__F_PROCESS);
  return 0;
}

void ct__procpool_release_call(ct_task_t *t) { release_call(t); }

int ct__procpool_submit(ct__procpool_t *pool, ct_task_t *t, const char *name, const json_t *args,
                        ct__loop_t *reply_loop, double timeout) {
  int rc = ct__procpool_prepare(pool, t, name, args, reply_loop, timeout);
  if (rc == 0 && (rc = enqueue(pool, t, false)) != 0)
    release_call(t);
  return rc;
}

int ct__procpool_enqueue_delayed(ct__procpool_t *pool, ct_task_t *t) {
  return enqueue(pool, t, true);
}

ct_task_t *ct__procpool_stop_begin(ct__procpool_t *pool, bool cancel_queued) {
  if (!pool)
    return NULL;
  ct_task_t *canceled = NULL;
  uint64_t n = 0;
  pthread_mutex_lock(&pool->lock);
  if (pool->state == POOL_RUNNING)
    pool->state = POOL_STOPPING;
  if (cancel_queued)
    canceled = ct__rq_cancel_all(&pool->rq, release_call, &n);
  pool->queued -= n;
  pool->canceled += n;
  pthread_mutex_unlock(&pool->lock);
  kick(pool);
  return canceled;
}

ct_task_t *ct__procpool_stop_append(ct_task_t *list, ct__procpool_t *pool, bool cancel_queued) {
  ct_task_t *more = ct__procpool_stop_begin(pool, cancel_queued);
  if (!list)
    return more;
  ct_task_t *t = list;
  while (t->link)
    t = t->link;
  t->link = more;
  return list;
}

int ct__procpool_wait_stopped(ct__procpool_t *pool, double timeout) {
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(timeout, &deadline);
  int rc = 0;
  pthread_mutex_lock(&pool->lock);
  while (pool->state != POOL_STOPPED && rc == 0) {
    if (!bounded)
      pthread_cond_wait(&pool->stopped_cond, &pool->lock);
    else if (pthread_cond_timedwait(&pool->stopped_cond, &pool->lock, &deadline) != 0 &&
             pool->state != POOL_STOPPED)
      rc = CT_ETIMEDOUT;
  }
  pthread_mutex_unlock(&pool->lock);
  return rc;
}

bool ct__procpool_stopped(ct__procpool_t *pool) {
  if (!pool)
    return true;
  pthread_mutex_lock(&pool->lock);
  bool stopped = pool->state == POOL_STOPPED;
  pthread_mutex_unlock(&pool->lock);
  return stopped;
}

bool ct__procpool_cancel_queued(ct__procpool_t *pool, ct_task_t *t) {
  pthread_mutex_lock(&pool->lock);
  bool won = ct__rq_cancel_one(t, &pool->queued, &pool->canceled);
  if (won)
    release_call(t); /* its request, now: the task waits for the head unrun */
  pthread_mutex_unlock(&pool->lock);
  return won;
}

void ct__procpool_kill_canceled(ct__procpool_t *pool) {
  atomic_store(&pool->kill_posted, true);
  kick(pool);
}

void ct__procpool_counts(ct__procpool_t *pool, ct__procpool_counts_t *out) {
  *out = (ct__procpool_counts_t){0};
  if (!pool)
    return;
  pthread_mutex_lock(&pool->lock);
  out->queued = pool->queued;
  out->running = (uint64_t)pool->running;
  out->completed = pool->completed;
  out->failed = pool->failed;
  out->canceled = pool->canceled;
  pthread_mutex_unlock(&pool->lock);
}

void ct__procpool_describe(ct__procpool_t *pool, char *buf, size_t size) {
  static const char *const states[] = {"running", "stopping", "stopped"};
  int n[SLOT_REAPING + 1] = {0};
  for (int i = 0; i < pool->nslots; i++)
    n[pool->slots[i].state]++;
  pthread_mutex_lock(&pool->lock);
  int state = pool->state, running = pool->running;
  uint64_t queued = pool->queued;
  pthread_mutex_unlock(&pool->lock);
  snprintf(buf, size, "%s, %llu queued, %d running; fork server %d %s; children: %d spawning, "
           "%d idle, %d busy, %d being reaped", states[state], (unsigned long long)queued,
           running, (int)pool->server_pid,
           pool->server_gone ? "gone" : pool->server_shut ? "told to end" : "up",
           n[SLOT_SPAWNING], n[SLOT_IDLE], n[SLOT_BUSY], n[SLOT_REAPING]);
}

json_t *ct__procpool_stats_json(ct__procpool_t *pool) {
  if (!pool)
    return NULL;
  static const char *const states[] = {"running", "stopping", "stopped"};
  pthread_mutex_lock(&pool->lock);
  json_t *j = json_pack(
      "{s:s, s:i, s:i, s:i, s:I, s:f, s:I, s:I, s:i, s:I, s:I, s:I, s:I, s:I, s:I}", "state",
      states[pool->state], "size", pool->opts.pool_size, "reserve_normal",
      pool->opts.reserve_normal, "reserve_high", pool->opts.reserve_high, "max_frame",
      (json_int_t)pool->opts.max_frame, "task_timeout", pool->opts.task_timeout, "submitted",
      (json_int_t)pool->submitted, "queued", (json_int_t)pool->queued, "running", pool->running,
      "completed", (json_int_t)pool->completed, "failed", (json_int_t)pool->failed, "canceled",
      (json_int_t)pool->canceled, "crashed", (json_int_t)pool->crashed, "timeouts",
      (json_int_t)pool->timeouts, "children_forked", (json_int_t)pool->spawned);
  pthread_mutex_unlock(&pool->lock);
  return j;
}

/* Free what ct__procpool_new() made and what is still queued. */
static void pool_delete(ct__procpool_t *pool) {
  ct_task_t *t;
  while ((t = ct__rq_pop(&pool->rq)) != NULL)
    drop_queued(t);
  for (int i = 0; i < pool->nslots; i++)
    ct__proc_slot_forget_child(&pool->slots[i]);
  pthread_mutex_destroy(&pool->lock);
  pthread_cond_destroy(&pool->stopped_cond);
  free(pool->slots);
  free(pool);
}

void ct__procpool_free(ct__procpool_t *pool) {
  if (!pool)
    return;
  if (!pool->on_loop && pool->server.fd >= 0) {
    /* The loop never ran: the server has forked nothing; end it. */
    close(pool->server.fd);
    while (waitpid(pool->server_pid, NULL, 0) < 0 && errno == EINTR)
      ;
  }
  pool_delete(pool);
  ct__process_registry_release();
}
