/* The process pool's children, one slot each (procpool-internal.h): a
 * spawn is requested from the fork server and retried while it cannot be
 * sent; an idle child gets the first task that may start and its timeout
 * is armed; its one result frame finishes the task. A child that fails
 * (its socket ends or garbles, or its time runs out) or whose task is
 * canceled is closed, its task
 * finished with an error, and the fork server asked to end it; the
 * report of its end requests a new one (server.c). Loop thread only.
 */
#include "process/procpool-internal.h"

#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ctasker/result.h"

/* Try the slot's spawn again in CT__SPAWN_RETRY seconds. */
void ct__proc_schedule_spawn_retry(ct__slot_t *s) {
  s->state = SLOT_EMPTY;
  ev_timer_stop(s->pool->cfg.loop->ev, &s->timer);
  ev_timer_init(&s->timer, ct__proc_retry_spawn, CT__SPAWN_RETRY, 0.);
  ev_timer_start(s->pool->cfg.loop->ev, &s->timer);
}

/* A spawn or reap request still unanswered: the fork server is taken for
 * hung. */
static void on_answer_overdue(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__slot_t *s = w->data;
  if ((s->state == SLOT_SPAWNING || s->state == SLOT_REAPING) && !s->pool->server_gone)
    ct__proc_server_unanswering(s->pool, CT__SERVER_ANSWER_MAX);
  ct__proc_check_progress(s->pool);
}

/* Wait for the fork server's answer about s, at most CT__SERVER_ANSWER_MAX
 * past `grace` seconds (the answer stops the timer). */
static void await_answer(ct__slot_t *s, double grace) {
  struct ev_loop *ev = s->pool->cfg.loop->ev;
  ev_timer_stop(ev, &s->timer);
  ev_timer_init(&s->timer, on_answer_overdue, CT__SERVER_ANSWER_MAX + grace, 0.);
  ev_now_update(ev);
  ev_timer_start(ev, &s->timer);
}

/* Whether the pool needs its children: it runs, or a DRAIN stop still has
 * tasks queued (a stopping pool takes no new task, so once its queue is
 * empty it never needs a new child again). */
static bool children_needed(ct__procpool_t *pool) {
  pthread_mutex_lock(&pool->lock);
  bool needed = pool->state == POOL_RUNNING || pool->queued > 0;
  pthread_mutex_unlock(&pool->lock);
  return needed;
}

/* Ask the fork server for a child in slot s, unless no child is needed:
 * a child that dies while the pool stops with nothing queued is not
 * replaced, so that children killed from outside during a stop cannot
 * keep it from ending. */
void ct__proc_request_spawn(ct__slot_t *s) {
  ct__procpool_t *pool = s->pool;
  s->state = SLOT_EMPTY;
  if (pool->server_gone || !children_needed(pool))
    return;
  if (ct__proc_server_send(pool, json_pack("{s:s, s:i}", "op", "spawn", "slot", s->index)) != 0) {
    ct__proc_schedule_spawn_retry(s); /* out of memory: the pool must not shrink for good */
    return;
  }
  s->state = SLOT_SPAWNING;
  await_answer(s, 0);
}

void ct__proc_retry_spawn(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__slot_t *s = w->data;
  if (s->state == SLOT_EMPTY)
    ct__proc_request_spawn(s);
  ct__proc_check_progress(s->pool);
}

static void on_task_timeout(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__slot_t *s = w->data;
  if (s->state != SLOT_BUSY)
    return;
  pthread_mutex_lock(&s->pool->lock);
  s->pool->timeouts++;
  pthread_mutex_unlock(&s->pool->lock);
  ct__proc_slot_fail(s,
                     ct_error_new("TimeoutError", "process task %llu ran past %g s",
                                  (unsigned long long)s->task->id, s->call->timeout),
                     true);
  ct__proc_check_progress(s->pool);
}

int ct__proc_child_frame(void *ctx, json_t *frame) {
  ct__slot_t *s = ctx;
  json_t *id = json_object_get(frame, "id");
  json_t *result = json_object_get(frame, "result");
  if (s->state != SLOT_BUSY || !json_is_integer(id) || !result ||
      (uint64_t)json_integer_value(id) != s->task->id) {
    json_decref(frame);
    return 1;
  }
  json_incref(result);
  json_decref(frame);
  ct__proc_slot_finish(s, result);
  s->state = SLOT_IDLE;
  return 0;
}

/* The error for a child's stream the decoder refused (rc: its code, or 1
 * for a frame that answers no task of the child's). */
json_t *ct__proc_stream_error(ct__slot_t *s, int rc) {
  if (rc == CT__FRAME_TOO_BIG)
    return ct_error_new("NotSerializable", "a result frame exceeds %zu bytes",
                        s->pool->opts.max_frame);
  return ct_error_new("ProtocolError", "pool child %d sent %s", (int)s->pid,
                      rc == 1 ? "an unexpected frame" : ct__frame_strerror(rc));
}

void ct__proc_child_readable(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__slot_t *s = w->data;
  char buf[65536];
  ssize_t n = read(s->conn.fd, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  int rc = n > 0 ? ct__frame_feed(&s->conn.dec, buf, (size_t)n, ct__proc_child_frame, s)
                 : ct__frame_eof(&s->conn.dec);
  if (rc != 0)
    ct__proc_slot_fail(s, ct__proc_stream_error(s, rc), true);
  else if (n <= 0)
    ct__proc_slot_fail(s, NULL, false);
  ct__proc_check_progress(s->pool);
}

void ct__proc_child_writable(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__slot_t *s = w->data;
  if (ct__conn_flush(s->pool->cfg.loop->ev, &s->conn) != 0)
    ct__proc_slot_fail(s, NULL, false);
  ct__proc_check_progress(s->pool);
}

/* Kill the slot's child without its fork server (an orphan, or a server
 * that cannot be asked): through its pidfd, which names that process
 * only, so a pid the system has since given to another is never hit.
 * Without one (a kernel before Linux 5.3, or it could not be received),
 * by pid, the only way left. */
void ct__proc_kill_orphan(ct__slot_t *s) {
#ifdef SYS_pidfd_send_signal
  if (s->pidfd >= 0) {
    syscall(SYS_pidfd_send_signal, s->pidfd, SIGKILL, NULL, 0);
    return;
  }
#endif
  kill(s->pid, SIGKILL);
}

/* The slot's child is reaped or given up: forget its pid and pidfd. */
void ct__proc_slot_forget_child(ct__slot_t *s) {
  s->pid = 0;
  if (s->pidfd >= 0)
    close(s->pidfd);
  s->pidfd = -1;
}

/* The child is no longer usable: close its socket, finish its task now if
 * `error` is given (stolen), and ask the fork server to end it (at once if
 * kill_child) and report it; the report finishes a task still left and
 * requests a new child. An orphan, or a child whose server cannot be asked,
 * is killed here and replaced at once: through its pidfd even if it only
 * closed its socket (it may live on, having exec'd: nobody else ends it
 * now), by pid only if asked to kill it (one that closed its socket may
 * have ended, and its pid been given to another process). */
void ct__proc_slot_fail(ct__slot_t *s, json_t *error, bool kill_child) {
  ct__procpool_t *pool = s->pool;
  ct__conn_close(pool->cfg.loop->ev, &s->conn);
  ev_timer_stop(pool->cfg.loop->ev, &s->timer);
  if (s->task && error)
    ct__proc_slot_finish(s, error);
  else
    json_decref(error);
  s->state = SLOT_REAPING;
  int grace_ms = kill_child ? 0 : CT__CLOSE_GRACE_MS;
  if (!s->orphan && !pool->server_gone &&
      ct__proc_request_reap(pool, s->pid, s->index, grace_ms) == 0) {
    await_answer(s, grace_ms / 1000.0);
    return;
  }
  if (kill_child || s->pidfd >= 0)
    ct__proc_kill_orphan(s);
  if (s->task)
    ct__proc_slot_finish(
        s, ct_error_new("ProcessCrashed", "pool child %d stopped answering", (int)s->pid));
  ct__proc_slot_forget_child(s);
  s->orphan = false;
  ct__proc_request_spawn(s);
}

/* Kill the child of every running task whose cancel flag is set
 * (ct_task_cancel()): the task ends now with a CancelledError result, and
 * the child is killed (SIGKILL, no grace), reaped and replaced as after a
 * crash. A task that ended first (its result, a crash, its timeout) is in
 * no busy slot any more: its outcome stands. A slot already REAPING keeps
 * its course: its child is being ended and its task finishes with it. */
void ct__proc_kill_canceled(ct__procpool_t *pool) {
  for (int i = 0; i < pool->nslots; i++) {
    ct__slot_t *s = &pool->slots[i];
    if (s->state != SLOT_BUSY || !ct__task_has(s->task, CT__F_CANCEL_REQUESTED))
      continue;
    ct__proc_slot_fail(s,
                       ct_error_new("CancelledError",
                                    "process task %llu was canceled; its child %d was killed",
                                    (unsigned long long)s->task->id, (int)s->pid),
                       true);
  }
}

static void dispatch_to(ct__slot_t *s, ct_task_t *t) {
  ct__procpool_t *pool = s->pool;
  s->task = t;
  s->call = t->arg;
  t->arg = NULL;
  s->state = SLOT_BUSY;
  if (s->call->timeout > 0) {
    ev_timer_init(&s->timer, on_task_timeout, s->call->timeout, 0.);
    ev_now_update(pool->cfg.loop->ev);
    ev_timer_start(pool->cfg.loop->ev, &s->timer);
  }
  if (ct__conn_send(pool->cfg.loop->ev, &s->conn, s->call->frame, s->call->frame_len) != 0)
    ct__proc_slot_fail(s, NULL, false);
}

static ct__slot_t *idle_slot(ct__procpool_t *pool) {
  for (int i = 0; i < pool->nslots; i++)
    if (pool->slots[i].state == SLOT_IDLE)
      return &pool->slots[i];
  return NULL;
}

void ct__proc_dispatch(ct__procpool_t *pool) {
  ct__slot_t *s;
  while ((s = idle_slot(pool)) != NULL) {
    pthread_mutex_lock(&pool->lock);
    ct_task_t *t = ct__proc_take_runnable(pool);
    pthread_mutex_unlock(&pool->lock);
    if (!t)
      return;
    dispatch_to(s, t);
  }
}
