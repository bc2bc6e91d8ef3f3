/* The process pool, parent side.
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
 * wrong task, or a timeout turns the slot to REAPING: its socket is closed,
 * the task finished with an error (at once, or once the fork server reports
 * how the child ended), the fork server asked to end the child (kill it
 * after a grace) and a new child is requested. The fork server also reports
 * every child that ends by itself, so a death is seen even while a process
 * the child started holds its socket open. The fork server alone reaps
 * children and kills them, by pid; this file reaps only the fork server.
 * A child whose socket did not arrive (we were out of descriptors) is
 * ended by the fork server and requested again later.
 *
 * The fork server dies: its children live on as orphans (their sockets are
 * ours): running tasks go on, their timeouts still kill (by pid, the only
 * way left), and a new fork server is started at once, then again with a
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
#include "process/procpool.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/opts.h"
#include "core/runqueue.h"
#include "ctasker/result.h"
#include "process/forkserver.h"
#include "process/frame.h"

#define CT__DEFAULT_MAX_FRAME (16u << 20)
#define CT__FRAME_SLACK 512     /* room for the request wrapper around args */
#define CT__CLOSE_GRACE_MS 200  /* a child that closed its socket may exit */
#define CT__SPAWN_RETRY 0.5
#define CT__RESTART_FIRST 0.1 /* first delay before starting a fork server again */
#define CT__RESTART_MAX 5.0   /* the delay doubles up to this */
#define CT__MAX_PASSED_FDS 16

enum { POOL_RUNNING, POOL_STOPPING, POOL_STOPPED };
enum slot_state { SLOT_EMPTY, SLOT_SPAWNING, SLOT_IDLE, SLOT_BUSY, SLOT_REAPING };

/* What a queued process task carries (in task->arg while queued, then in
 * its slot while it runs). */
typedef struct ct__proc_call {
  char *frame;
  size_t frame_len;
  ct__loop_t *reply_loop; /* where the task finishes (it outlives the pool), or NULL */
} ct__proc_call_t;

typedef struct ct__conn {
  int fd;
  ev_io rio, wio;
  ct__frame_decoder_t dec;
  char *out;
  size_t out_len, out_off;
} ct__conn_t;

typedef struct ct__slot {
  struct ct__procpool *pool;
  int index;
  enum slot_state state;
  pid_t pid;
  ct__conn_t conn;
  ev_timer timer; /* the running task's timeout, or a spawn retry */
  ct_task_t *task;
  ct__proc_call_t *call;
  bool orphan; /* a child of a fork server that died: no one reports its end */
} ct__slot_t;

struct ct__procpool {
  ct__procpool_cfg_t cfg;
  ct_process_pool_opts_t opts;
  int nslots;

  pthread_mutex_t lock; /* guards rq, state, the counters */
  pthread_cond_t stopped_cond;
  ct__runqueue_t rq;
  int state, running;
  uint64_t submitted, queued, completed, failed, canceled;
  uint64_t crashed, timeouts, spawned;
  atomic_bool kick_posted;  /* kick_msg is in the loop's inbox */
  ct__loop_msg_t kick_msg;  /* one suffices: kicks coalesce */
  ct__loop_msg_t setup_msg; /* posted once, by ct__procpool_start() */

  /* Loop thread only (or the creating thread before the loop runs). */
  pid_t server_pid;
  ct__conn_t server;
  int passed_fds[CT__MAX_PASSED_FDS];
  int npassed;
  bool server_gone, server_shut, on_loop;
  ev_timer restart_timer; /* starts a fork server again after restart_delay */
  double restart_delay;
  ct__slot_t *slots;
};

typedef struct {
  ct__loop_msg_t msg;
  ct_task_t *task; /* the slot's reference */
  json_t *result;
} ct__finish_msg_t;

static void check_progress(ct__procpool_t *pool);
static void slot_fail(ct__slot_t *s, json_t *error, bool kill_child);

/* ---------- small helpers ---------- */

static void pool_log(ct__procpool_t *pool, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void pool_log(ct__procpool_t *pool, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ct__vlog(pool->cfg.log, pool->cfg.log_data, level, fmt, ap);
  va_end(ap);
}

static void call_free(ct__proc_call_t *c) {
  if (c) {
    free(c->frame);
    free(c);
  }
}

static json_t *crash_error(pid_t pid, const char *how, int number, const char *what) {
  json_t *e = ct_error_new("ProcessCrashed", "pool child %d %s %d%s", (int)pid,
                           strcmp(how, "signal") == 0 ? "was killed by signal"
                                                      : "exited with code",
                           number, what);
  json_t *args = json_object_get(json_object_get(e, "exception"), "args");
  json_array_clear(args);
  json_array_append_new(args, json_integer(pid));
  json_array_append_new(args, json_string(how));
  json_array_append_new(args, json_integer(number));
  return e;
}

/* ---------- connections (loop thread) ---------- */

static void conn_init(ct__procpool_t *pool, ct__conn_t *c, int fd, size_t max,
                      void (*on_read)(struct ev_loop *, ev_io *, int),
                      void (*on_write)(struct ev_loop *, ev_io *, int), void *data) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  ct__frame_decoder_init(&c->dec, max);
  ev_io_init(&c->rio, on_read, fd, EV_READ);
  ev_io_init(&c->wio, on_write, fd, EV_WRITE);
  c->rio.data = c->wio.data = data;
  ev_io_start(pool->cfg.loop->ev, &c->rio);
}

static void conn_close(ct__procpool_t *pool, ct__conn_t *c) {
  if (c->fd < 0)
    return;
  ev_io_stop(pool->cfg.loop->ev, &c->rio);
  ev_io_stop(pool->cfg.loop->ev, &c->wio);
  close(c->fd);
  c->fd = -1;
  free(c->out);
  c->out = NULL;
  c->out_len = c->out_off = 0;
  ct__frame_decoder_reset(&c->dec);
}

/* Write what is pending. Returns 0, or -1 if the peer is gone. */
static int conn_flush(ct__procpool_t *pool, ct__conn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      ev_io_start(pool->cfg.loop->ev, &c->wio);
      return 0;
    }
    if (n <= 0)
      return -1;
    c->out_off += (size_t)n;
  }
  ev_io_stop(pool->cfg.loop->ev, &c->wio);
  free(c->out);
  c->out = NULL;
  c->out_len = c->out_off = 0;
  return 0;
}

/* Queue bytes (copied) and try to write them. Returns 0 or -1. */
static int conn_send(ct__procpool_t *pool, ct__conn_t *c, const char *buf, size_t len) {
  char *out = realloc(c->out, c->out_len + len);
  if (!out)
    return -1;
  memcpy(out + c->out_len, buf, len);
  c->out = out;
  c->out_len += len;
  return conn_flush(pool, c);
}

static int server_send(ct__procpool_t *pool, json_t *msg) {
  char *buf;
  size_t len;
  int rc = ct__frame_encode(msg, 4096, &buf, &len);
  json_decref(msg);
  if (rc == 0 && !pool->server_gone)
    rc = conn_send(pool, &pool->server, buf, len);
  free(buf);
  return rc;
}

/* ---------- the queue (pool lock held) ---------- */

static int cap_of(const ct__procpool_t *pool, int priority) {
  int cap = ct__cap_for_priority(priority, pool->opts.pool_size, pool->opts.reserve_normal,
                                 pool->opts.reserve_high);
  return cap < pool->nslots ? cap : pool->nslots;
}

static void drop_queued(ct_task_t *t) {
  call_free(t->arg);
  t->arg = NULL;
  ct_task_unref(t);
}

static ct_task_t *take_runnable(ct__procpool_t *pool) {
  ct_task_t *t;
  while ((t = ct__rq_peek(&pool->rq)) != NULL) {
    if (atomic_load(&t->status) == CT_TASK_CANCELED) {
      drop_queued(ct__rq_pop(&pool->rq));
      continue;
    }
    if (pool->running >= cap_of(pool, t->priority))
      return NULL;
    ct__rq_pop(&pool->rq);
    if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_STARTED)) {
      drop_queued(t);
      continue;
    }
    ct__task_stamp_started(t);
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
 * it came from one. Takes over the caller's reference and the call. */
static void finish_task(ct__procpool_t *pool, ct_task_t *t, ct__proc_call_t *call,
                        json_t *result) {
  bool failed = result && ct_result_is_error(result);
  pthread_mutex_lock(&pool->lock);
  pool->running--;
  if (failed)
    pool->failed++;
  else
    pool->completed++;
  pthread_mutex_unlock(&pool->lock);
  ct__loop_t *reply_loop = call ? call->reply_loop : NULL;
  call_free(call);
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

static void slot_finish(ct__slot_t *s, json_t *result) {
  ct_task_t *t = s->task;
  ct__proc_call_t *call = s->call;
  s->task = NULL;
  s->call = NULL;
  ev_timer_stop(s->pool->cfg.loop->ev, &s->timer);
  finish_task(s->pool, t, call, result);
}

/* ---------- children (loop thread) ---------- */

static void retry_spawn(struct ev_loop *ev, ev_timer *w, int revents);

/* Try the slot's spawn again in CT__SPAWN_RETRY seconds. */
static void schedule_spawn_retry(ct__slot_t *s) {
  s->state = SLOT_EMPTY;
  ev_timer_stop(s->pool->cfg.loop->ev, &s->timer);
  ev_timer_init(&s->timer, retry_spawn, CT__SPAWN_RETRY, 0.);
  ev_timer_start(s->pool->cfg.loop->ev, &s->timer);
}

static void request_spawn(ct__slot_t *s) {
  ct__procpool_t *pool = s->pool;
  s->state = SLOT_EMPTY;
  if (pool->server_gone)
    return;
  if (server_send(pool, json_pack("{s:s, s:i}", "op", "spawn", "slot", s->index)) == 0)
    s->state = SLOT_SPAWNING;
  else
    schedule_spawn_retry(s); /* out of memory: the pool must not shrink for good */
}

static void retry_spawn(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__slot_t *s = w->data;
  if (s->state == SLOT_EMPTY)
    request_spawn(s);
  check_progress(s->pool);
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
  slot_fail(s, ct_error_new("TimeoutError", "process task %llu ran past %g s",
                            (unsigned long long)s->task->id, s->pool->opts.task_timeout),
            true);
  check_progress(s->pool);
}

static int child_frame(void *ctx, json_t *frame) {
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
  slot_finish(s, result);
  s->state = SLOT_IDLE;
  return 0;
}

/* The error for a child's stream the decoder refused (rc: its code, or 1
 * for a frame that answers no task of the child's). */
static json_t *stream_error(ct__slot_t *s, int rc) {
  if (rc == CT__FRAME_TOO_BIG)
    return ct_error_new("NotSerializable", "a result frame exceeds %zu bytes",
                        s->pool->opts.max_frame);
  return ct_error_new("ProtocolError", "pool child %d sent %s", (int)s->pid,
                      rc == 1 ? "an unexpected frame" : ct__frame_strerror(rc));
}

static void child_readable(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__slot_t *s = w->data;
  char buf[65536];
  ssize_t n = read(s->conn.fd, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  int rc = n > 0 ? ct__frame_feed(&s->conn.dec, buf, (size_t)n, child_frame, s)
                 : ct__frame_eof(&s->conn.dec);
  if (rc != 0)
    slot_fail(s, stream_error(s, rc), true);
  else if (n <= 0)
    slot_fail(s, NULL, false);
  check_progress(s->pool);
}

static void child_writable(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__slot_t *s = w->data;
  if (conn_flush(s->pool, &s->conn) != 0)
    slot_fail(s, NULL, false);
  check_progress(s->pool);
}

/* Ask the fork server to end a child (kill it after grace_ms) and report
 * it. Returns 0, or -1 if the request cannot be sent. */
static int request_reap(ct__procpool_t *pool, pid_t pid, int slot, int grace_ms) {
  return server_send(pool, json_pack("{s:s, s:i, s:i, s:i}", "op", "reap", "pid", (int)pid,
                                     "slot", slot, "grace", grace_ms));
}

/* The child is no longer usable: close its socket, finish its task now if
 * `error` is given (stolen), and ask the fork server to end it (at once if
 * kill_child) and report it; the report finishes a task still left and
 * requests a new child. An orphan, or a child whose server cannot be asked,
 * is killed here if asked and replaced at once. */
static void slot_fail(ct__slot_t *s, json_t *error, bool kill_child) {
  ct__procpool_t *pool = s->pool;
  conn_close(pool, &s->conn);
  ev_timer_stop(pool->cfg.loop->ev, &s->timer);
  if (s->task && error)
    slot_finish(s, error);
  else
    json_decref(error);
  s->state = SLOT_REAPING;
  if (!s->orphan && !pool->server_gone &&
      request_reap(pool, s->pid, s->index, kill_child ? 0 : CT__CLOSE_GRACE_MS) == 0)
    return;
  if (kill_child)
    kill(s->pid, SIGKILL);
  if (s->task)
    slot_finish(s, ct_error_new("ProcessCrashed", "pool child %d stopped answering",
                                (int)s->pid));
  s->pid = 0;
  s->orphan = false;
  request_spawn(s);
}

static void dispatch_to(ct__slot_t *s, ct_task_t *t) {
  ct__procpool_t *pool = s->pool;
  s->task = t;
  s->call = t->arg;
  t->arg = NULL;
  s->state = SLOT_BUSY;
  if (pool->opts.task_timeout > 0) {
    ev_timer_init(&s->timer, on_task_timeout, pool->opts.task_timeout, 0.);
    ev_now_update(pool->cfg.loop->ev);
    ev_timer_start(pool->cfg.loop->ev, &s->timer);
  }
  if (conn_send(pool, &s->conn, s->call->frame, s->call->frame_len) != 0)
    slot_fail(s, NULL, false);
}

static ct__slot_t *idle_slot(ct__procpool_t *pool) {
  for (int i = 0; i < pool->nslots; i++)
    if (pool->slots[i].state == SLOT_IDLE)
      return &pool->slots[i];
  return NULL;
}

static void dispatch(ct__procpool_t *pool) {
  ct__slot_t *s;
  while ((s = idle_slot(pool)) != NULL) {
    pthread_mutex_lock(&pool->lock);
    ct_task_t *t = take_runnable(pool);
    pthread_mutex_unlock(&pool->lock);
    if (!t)
      return;
    dispatch_to(s, t);
  }
}

/* ---------- the fork server (loop thread) ---------- */

static void on_spawned(ct__procpool_t *pool, json_t *msg) {
  int index = (int)json_integer_value(json_object_get(msg, "spawned"));
  pid_t pid = (pid_t)json_integer_value(json_object_get(msg, "pid"));
  if (index < 0 || index >= pool->nslots || pool->slots[index].state != SLOT_SPAWNING)
    return;
  ct__slot_t *s = &pool->slots[index];
  if (pid <= 0) {
    pool_log(pool, CT_LOG_ERROR, "ctasker: could not fork a pool child: %s",
             json_string_value(json_object_get(msg, "error")));
    schedule_spawn_retry(s);
    return;
  }
  int fd = pool->npassed > 0 ? pool->passed_fds[0] : -1;
  if (pool->npassed > 0)
    memmove(pool->passed_fds, pool->passed_fds + 1, (size_t)--pool->npassed * sizeof(int));
  if (fd < 0) {
    /* Its socket was dropped on the way in (no descriptor was free): the
     * child must not linger, nor may the next one be forked at once. */
    pool_log(pool, CT_LOG_ERROR,
             "ctasker: the socket of pool child %d could not be received "
             "(out of descriptors?); retrying", (int)pid);
    request_reap(pool, pid, index, 0);
    schedule_spawn_retry(s);
    return;
  }
  s->pid = pid;
  conn_init(pool, &s->conn, fd, pool->opts.max_frame + CT__FRAME_SLACK, child_readable,
            child_writable, s);
  s->state = SLOT_IDLE;
  pthread_mutex_lock(&pool->lock);
  pool->spawned++;
  pthread_mutex_unlock(&pool->lock);
}

/* A busy child ended: read what it wrote before (the report may come
 * before its socket is seen readable), up to the end of its stream or what
 * a process it started still holds open. The result may be there; returns
 * the error for a stream that was cut or garbled, or NULL. */
static json_t *drain_child(ct__slot_t *s) {
  char buf[65536];
  while (s->state == SLOT_BUSY) {
    ssize_t n = recv(s->conn.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return NULL;
    int rc = n > 0 ? ct__frame_feed(&s->conn.dec, buf, (size_t)n, child_frame, s)
                   : ct__frame_eof(&s->conn.dec);
    if (rc != 0)
      return stream_error(s, rc);
    if (n == 0)
      return NULL;
  }
  return NULL;
}

/* The fork server reaped a child: on request (REAPING), or because it ended
 * by itself (IDLE or BUSY; its socket may still be held open by a process
 * it started). A child not in a slot (its socket never arrived) is done. */
static void on_reaped(ct__procpool_t *pool, json_t *msg) {
  pid_t pid = (pid_t)json_integer_value(json_object_get(msg, "reaped"));
  json_int_t index = json_integer_value(json_object_get(msg, "slot"));
  if (index < 0 || index >= pool->nslots)
    return;
  ct__slot_t *s = &pool->slots[index];
  if (s->pid == pid && !s->orphan &&
      (s->state == SLOT_IDLE || s->state == SLOT_BUSY || s->state == SLOT_REAPING)) {
    json_t *stream_err = s->state == SLOT_BUSY ? drain_child(s) : NULL;
    conn_close(pool, &s->conn);
    ev_timer_stop(pool->cfg.loop->ev, &s->timer);
    if (!s->task) {
      json_decref(stream_err);
    } else if (stream_err) {
      slot_finish(s, stream_err);
    } else {
      json_t *sig = json_object_get(msg, "signal");
      bool killed = json_is_true(json_object_get(msg, "killed"));
      const char *what = killed ? " (it had closed its pipe)" : "";
      json_t *err = sig ? crash_error(pid, "signal", (int)json_integer_value(sig), what)
                        : crash_error(pid, "exit",
                                      (int)json_integer_value(json_object_get(msg, "exit")),
                                      what);
      pthread_mutex_lock(&pool->lock);
      pool->crashed++;
      pthread_mutex_unlock(&pool->lock);
      slot_finish(s, err);
    }
    s->pid = 0;
    request_spawn(s);
  }
}

static int server_frame(void *ctx, json_t *msg) {
  ct__procpool_t *pool = ctx;
  if (json_object_get(msg, "spawned"))
    on_spawned(pool, msg);
  else if (json_object_get(msg, "reaped"))
    on_reaped(pool, msg);
  json_decref(msg);
  return 0;
}

/* Keep descriptors passed with the bytes just read, oldest first. One the
 * kernel had to drop (MSG_CTRUNC: no descriptor was free) is kept as -1, so
 * that each "spawned" frame still meets its own (the server passes one
 * descriptor per frame, and one recvmsg() returns at most one set). */
static void take_passed_fds(ct__procpool_t *pool, struct msghdr *mh) {
  size_t got = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++, got++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (pool->npassed < CT__MAX_PASSED_FDS)
        pool->passed_fds[pool->npassed++] = fd;
      else
        close(fd);
    }
  }
  if ((mh->msg_flags & MSG_CTRUNC) && got == 0 && pool->npassed < CT__MAX_PASSED_FDS)
    pool->passed_fds[pool->npassed++] = -1;
}

static void server_readable(struct ev_loop *ev, ev_io *w, int revents);
static void server_writable(struct ev_loop *ev, ev_io *w, int revents);

/* Start a fork server and ask it for a child in every empty slot. On
 * failure, log, and try again from the loop after a growing delay. */
static void start_server(ct__procpool_t *pool) {
  int fd;
  int rc = ct__forkserver_start(pool->opts.max_frame + CT__FRAME_SLACK, &pool->server_pid, &fd);
  if (rc != 0) {
    pool->restart_delay = pool->restart_delay > 0 ? pool->restart_delay * 2 : CT__RESTART_FIRST;
    if (pool->restart_delay > CT__RESTART_MAX)
      pool->restart_delay = CT__RESTART_MAX;
    pool_log(pool, CT_LOG_ERROR,
             "ctasker: could not start the process pool's fork server (%s); "
             "trying again in %g s", ct_strerror(rc), pool->restart_delay);
    ev_timer_set(&pool->restart_timer, pool->restart_delay, 0.);
    ev_timer_start(pool->cfg.loop->ev, &pool->restart_timer);
    return;
  }
  pool->restart_delay = 0;
  pool->server_gone = false;
  conn_init(pool, &pool->server, fd, 4096, server_readable, server_writable, pool);
  pool_log(pool, CT_LOG_WARNING, "ctasker: started a new fork server (pid %d)",
           (int)pool->server_pid);
  for (int i = 0; i < pool->nslots; i++)
    if (pool->slots[i].state == SLOT_EMPTY) {
      ev_timer_stop(pool->cfg.loop->ev, &pool->slots[i].timer);
      request_spawn(&pool->slots[i]);
    }
}

static void restart_server(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__procpool_t *pool = w->data;
  if (pool->server_gone)
    start_server(pool);
  check_progress(pool);
}

/* The fork server is gone (or finished, or, if `alive`, talks nonsense and
 * is killed): reap it. Children it was still to reap are killed here and
 * their tasks fail; the others live on as orphans, still running their
 * tasks. Unless the pool is winding down, start another fork server. */
static void server_lost(ct__procpool_t *pool, bool alive) {
  conn_close(pool, &pool->server);
  pool->server_gone = true;
  if (alive)
    kill(pool->server_pid, SIGKILL); /* not reaped yet: the pid is still its own */
  while (waitpid(pool->server_pid, NULL, 0) < 0 && errno == EINTR)
    ;
  for (int i = 0; i < pool->nslots; i++) {
    ct__slot_t *s = &pool->slots[i];
    if (s->state == SLOT_REAPING) {
      kill(s->pid, SIGKILL); /* an orphan now: the server cannot end it */
      if (s->task)
        slot_finish(s, ct_error_new("ProcessCrashed",
                                    "pool child %d was lost with the fork server", (int)s->pid));
      s->pid = 0;
    }
    if (s->state == SLOT_REAPING || s->state == SLOT_SPAWNING)
      s->state = SLOT_EMPTY;
    if (s->state == SLOT_EMPTY)
      ev_timer_stop(pool->cfg.loop->ev, &s->timer);
    else
      s->orphan = true; /* IDLE or BUSY: its timeout stays armed */
  }
  while (pool->npassed > 0)
    if (pool->passed_fds[--pool->npassed] >= 0)
      close(pool->passed_fds[pool->npassed]);
  if (!pool->server_shut)
    start_server(pool);
}

static void server_readable(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__procpool_t *pool = w->data;
  char buf[4096];
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int) * CT__MAX_PASSED_FDS)];
  } ctl;
  struct iovec iov = {buf, sizeof buf};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                      .msg_controllen = sizeof ctl.space};
  ssize_t n = recvmsg(pool->server.fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n > 0)
    take_passed_fds(pool, &mh);
  bool garbled =
      n > 0 && ct__frame_feed(&pool->server.dec, buf, (size_t)n, server_frame, pool) != 0;
  if (n <= 0 || garbled) {
    if (!pool->server_shut)
      pool_log(pool, CT_LOG_ERROR, "ctasker: the process pool's fork server ended");
    server_lost(pool, garbled);
  }
  check_progress(pool);
}

static void server_writable(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__procpool_t *pool = w->data;
  if (conn_flush(pool, &pool->server) != 0)
    server_lost(pool, false); /* it closed its end: it is exiting */
  check_progress(pool);
}

/* ---------- progress and stop (loop thread) ---------- */

static bool any_slot(const ct__procpool_t *pool, enum slot_state st) {
  for (int i = 0; i < pool->nslots; i++)
    if (pool->slots[i].state == st)
      return true;
  return false;
}

/* No fork server and no child: nothing can run the queued tasks now. Fail
 * them, with a log line, rather than keep them waiting for a fork server
 * that may never start again. */
static void fail_queued(ct__procpool_t *pool) {
  for (uint64_t failed = 0;;) {
    pthread_mutex_lock(&pool->lock);
    ct_task_t *t = ct__rq_peek(&pool->rq);
    if (t && atomic_load(&t->status) != CT_TASK_CANCELED) {
      ct__rq_pop(&pool->rq);
      if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_STARTED)) {
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
        pool_log(pool, CT_LOG_ERROR,
                 "ctasker: %llu process task(s) failed: no fork server could be started",
                 (unsigned long long)failed);
      return;
    }
    ct__proc_call_t *call = t->arg;
    t->arg = NULL;
    finish_task(pool, t, call,
                ct_error_new("ProcessPoolUnavailable",
                             "the process pool has no child and no fork server could be started"));
    failed++;
  }
}

static void mark_stopped(ct__procpool_t *pool) {
  ev_timer_stop(pool->cfg.loop->ev, &pool->restart_timer);
  pthread_mutex_lock(&pool->lock);
  pool->state = POOL_STOPPED;
  pthread_cond_broadcast(&pool->stopped_cond);
  pthread_mutex_unlock(&pool->lock);
  pool->cfg.on_stopped(pool->cfg.data);
}

/* Stopping, with nothing queued or running: close idle children, then the
 * fork server; once it is reaped, the pool has stopped. */
static void wind_down(ct__procpool_t *pool) {
  if (any_slot(pool, SLOT_BUSY) || any_slot(pool, SLOT_REAPING) ||
      any_slot(pool, SLOT_SPAWNING))
    return;
  for (int i = 0; i < pool->nslots; i++) {
    ct__slot_t *s = &pool->slots[i];
    ev_timer_stop(pool->cfg.loop->ev, &s->timer);
    if (s->state == SLOT_IDLE) {
      conn_close(pool, &s->conn);
      s->state = SLOT_EMPTY;
      s->pid = 0;
      s->orphan = false;
    }
  }
  if (!pool->server_gone && !pool->server_shut) {
    pool->server_shut = true;
    shutdown(pool->server.fd, SHUT_WR);
    return; /* its end of stream comes back through server_readable */
  }
  if (pool->server_gone)
    mark_stopped(pool);
}

static void check_progress(ct__procpool_t *pool) {
  dispatch(pool);
  pthread_mutex_lock(&pool->lock);
  int state = pool->state;
  bool idle = pool->queued == 0 && pool->running == 0;
  pthread_mutex_unlock(&pool->lock);
  if (pool->server_gone && !any_slot(pool, SLOT_IDLE) && !any_slot(pool, SLOT_BUSY))
    fail_queued(pool);
  if (state == POOL_STOPPING && idle)
    wind_down(pool);
}

static void kick_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__procpool_t *pool = (ct__procpool_t *)((char *)msg - offsetof(ct__procpool_t, kick_msg));
  atomic_store(&pool->kick_posted, false);
  if (!ct__procpool_stopped(pool))
    check_progress(pool);
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
  conn_init(pool, &pool->server, pool->server.fd, 4096, server_readable, server_writable, pool);
  for (int i = 0; i < pool->nslots; i++)
    request_spawn(&pool->slots[i]);
  check_progress(pool);
}

/* ---------- entry points (procpool.h) ---------- */

int ct__procpool_read_options(const ct_process_pool_opts_t *in, ct_process_pool_opts_t *o) {
  ct_process_pool_opts_t defaults = CT_PROCESS_POOL_OPTS_INIT;
  *o = defaults;
  if (ct__opts_copy(o, sizeof *o, in, offsetof(ct_process_pool_opts_t, task_timeout)) != 0)
    return CT_EINVAL;
  if (o->pool_size <= 0 || o->reserve_normal < 0 || o->reserve_high < 0 ||
      o->pool_size > 4096 || o->reserve_normal > 4096 || o->reserve_high > 4096)
    return CT_EINVAL;
  if (!ct__seconds_valid(o->task_timeout, CT__SEC_LIMIT))
    return CT_EINVAL;
  if (o->task_timeout >= CT__SECONDS_FOREVER)
    o->task_timeout = 0; /* no bound: no timer */
  if (o->max_frame == 0)
    o->max_frame = CT__DEFAULT_MAX_FRAME;
  if (o->max_frame > UINT32_MAX - CT__FRAME_SLACK)
    return CT_EINVAL;
  return 0;
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
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&pool->stopped_cond, &attr);
  pthread_condattr_destroy(&attr);
  ct__rq_init(&pool->rq);
  for (int i = 0; i < pool->nslots; i++) {
    ct__slot_t *s = &pool->slots[i];
    s->pool = pool;
    s->index = i;
    s->conn.fd = -1;
    ev_timer_init(&s->timer, retry_spawn, 0., 0.);
    s->timer.data = s;
  }
  pool->server.fd = -1;
  ev_timer_init(&pool->restart_timer, restart_server, 0., 0.);
  pool->restart_timer.data = pool;
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

/* The request frame for a call. Returns 0 or CT_EINVAL / CT_ENOMEM. */
static int make_call(ct__procpool_t *pool, uint64_t id, const char *name, const json_t *args,
                     ct__loop_t *reply_loop, ct__proc_call_t **out) {
  ct__proc_call_t *call = calloc(1, sizeof *call);
  json_t *req = json_pack("{s:I, s:s, s:O}", "id", (json_int_t)id, "fn", name, "args",
                          args ? (json_t *)args : json_null());
  if (!call || !req) {
    free(call);
    json_decref(req);
    return CT_ENOMEM;
  }
  int rc = ct__frame_encode(req, pool->opts.max_frame + CT__FRAME_SLACK, &call->frame,
                            &call->frame_len);
  json_decref(req);
  if (rc != 0) {
    free(call);
    return rc == CT__FRAME_NOMEM ? CT_ENOMEM : CT_EINVAL;
  }
  call->reply_loop = reply_loop;
  *out = call;
  return 0;
}

/* Queue a task. Returns 0 or CT_ESHUTDOWN. */
static int enqueue(ct__procpool_t *pool, ct_task_t *t) {
  pthread_mutex_lock(&pool->lock);
  int rc = pool->state == POOL_RUNNING ? 0 : CT_ESHUTDOWN;
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

int ct__procpool_submit(ct__procpool_t *pool, ct_task_t *t, const char *name,
                        const json_t *args, ct__loop_t *reply_loop) {
  atomic_fetch_or(&t->flags, CT__F_PROCESS);
  int rc = make_call(pool, t->id, name, args, reply_loop, (ct__proc_call_t **)&t->arg);
  if (rc == 0 && (rc = enqueue(pool, t)) == 0)
    return 0;
  call_free(t->arg);
  t->arg = NULL;
  return rc;
}

ct_task_t *ct__procpool_stop_begin(ct__procpool_t *pool, bool cancel_queued) {
  if (!pool)
    return NULL;
  ct_task_t *canceled = NULL, **tail = &canceled, *t;
  pthread_mutex_lock(&pool->lock);
  if (pool->state == POOL_RUNNING)
    pool->state = POOL_STOPPING;
  while (cancel_queued && (t = ct__rq_pop(&pool->rq)) != NULL) {
    call_free(t->arg);
    t->arg = NULL;
    if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_CANCELED)) {
      ct_task_unref(t);
      continue;
    }
    pool->queued--;
    pool->canceled++;
    *tail = t;
    tail = (ct_task_t **)&t->link;
  }
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
  bool won = ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_CANCELED);
  if (won) {
    pool->queued--;
    pool->canceled++;
  }
  pthread_mutex_unlock(&pool->lock);
  return won;
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
      (json_int_t)pool->submitted, "queued", (json_int_t)pool->queued, "running",
      pool->running, "completed", (json_int_t)pool->completed, "failed",
      (json_int_t)pool->failed, "canceled", (json_int_t)pool->canceled, "crashed",
      (json_int_t)pool->crashed, "timeouts", (json_int_t)pool->timeouts, "children_forked",
      (json_int_t)pool->spawned);
  pthread_mutex_unlock(&pool->lock);
  return j;
}

/* Free what ct__procpool_new() made and what is still queued. */
static void pool_delete(ct__procpool_t *pool) {
  ct_task_t *t;
  while ((t = ct__rq_pop(&pool->rq)) != NULL)
    drop_queued(t);
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
}
