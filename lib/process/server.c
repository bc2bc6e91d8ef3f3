/* The process pool's link to its fork server (procpool-internal.h):
 * requests to spawn and to reap go out as frames; reports come back as
 * frames, a spawned child's socket passed along with its report. A fork
 * server that dies, or leaves a request unanswered for CT__SERVER_ANSWER_MAX
 * seconds (then it is killed first), is reaped and started again (with a
 * growing delay while that fails); its children live on as orphans. Loop thread only; the
 * server itself is forkserver.c.
 */
#include "process/procpool-internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctasker/result.h"
#include "process/forkserver.h"

int ct__proc_server_send(ct__procpool_t *pool, json_t *msg) {
  char *buf;
  size_t len;
  int rc = ct__frame_encode(msg, 4096, &buf, &len);
  json_decref(msg);
  if (rc == 0 && !pool->server_gone)
    rc = ct__conn_send(pool->cfg.loop->ev, &pool->server, buf, len);
  free(buf);
  return rc;
}

/* Ask the fork server to end a child (kill it after grace_ms) and report
 * it. Returns 0, or -1 if the request cannot be sent. */
int ct__proc_request_reap(ct__procpool_t *pool, pid_t pid, int slot, int grace_ms) {
  return ct__proc_server_send(pool, json_pack("{s:s, s:i, s:i, s:i}", "op", "reap", "pid", (int)pid,
                                              "slot", slot, "grace", grace_ms));
}

static json_t *crash_error(pid_t pid, const char *how, int number, const char *what) {
  json_t *e = ct_error_new("ProcessCrashed", "pool child %d %s %d%s", (int)pid,
                           strcmp(how, "signal") == 0 ? "was killed by signal" : "exited with code",
                           number, what);
  json_t *args = json_object_get(json_object_get(e, "exception"), "args");
  json_array_clear(args);
  json_array_append_new(args, json_integer(pid));
  json_array_append_new(args, json_string(how));
  json_array_append_new(args, json_integer(number));
  return e;
}

static void on_spawned(ct__procpool_t *pool, json_t *msg) {
  int index = (int)json_integer_value(json_object_get(msg, "spawned"));
  pid_t pid = (pid_t)json_integer_value(json_object_get(msg, "pid"));
  if (index < 0 || index >= pool->nslots || pool->slots[index].state != SLOT_SPAWNING)
    return;
  ct__slot_t *s = &pool->slots[index];
  ev_timer_stop(pool->cfg.loop->ev, &s->timer); /* the wait for this answer */
  if (pid <= 0) {
    unsigned n = ++pool->failed_spawns;
    if ((n & (n - 1)) == 0) /* the 1st, 2nd, 4th, 8th... in a row: a retry every 0.5 s */
      ct__proc_log(pool, CT_LOG_ERROR, "ctasker: could not fork a pool child: %s (%u in a row)",
                   json_string_value(json_object_get(msg, "error")), n);
    ct__proc_schedule_spawn_retry(s);
    return;
  }
  ct__passed_t got = {-1, -1};
  if (pool->npassed > 0) {
    got = pool->passed[0];
    memmove(pool->passed, pool->passed + 1, (size_t)--pool->npassed * sizeof got);
  }
  int fd = got.sock;
  if (fd < 0) {
    if (got.pidfd >= 0)
      close(got.pidfd);
    /* Its socket was dropped on the way in (no descriptor was free): the
     * child must not linger, nor may the next one be forked at once. */
    ct__proc_log(pool, CT_LOG_ERROR,
                 "ctasker: the socket of pool child %d could not be received "
                 "(out of descriptors?); retrying",
                 (int)pid);
    ct__proc_request_reap(pool, pid, index, 0);
    ct__proc_schedule_spawn_retry(s);
    return;
  }
  pool->failed_spawns = 0;
  s->pid = pid;
  s->pidfd = got.pidfd;
  ct__conn_init(pool->cfg.loop->ev, &s->conn, fd, pool->opts.max_frame + CT__FRAME_SLACK,
                ct__proc_child_readable, ct__proc_child_writable, s);
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
    int rc = n > 0 ? ct__frame_feed(&s->conn.dec, buf, (size_t)n, ct__proc_child_frame, s)
                   : ct__frame_eof(&s->conn.dec);
    if (rc != 0)
      return ct__proc_stream_error(s, rc);
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
    ct__conn_close(pool->cfg.loop->ev, &s->conn);
    ev_timer_stop(pool->cfg.loop->ev, &s->timer);
    if (!s->task) {
      json_decref(stream_err);
    } else if (stream_err) {
      ct__proc_slot_finish(s, stream_err);
    } else {
      json_t *sig = json_object_get(msg, "signal");
      bool killed = json_is_true(json_object_get(msg, "killed"));
      const char *what = killed ? " (it had closed its pipe)" : "";
      json_t *err = sig ? crash_error(pid, "signal", (int)json_integer_value(sig), what)
                        : crash_error(pid, "exit",
                                      (int)json_integer_value(json_object_get(msg, "exit")), what);
      pthread_mutex_lock(&pool->lock);
      pool->crashed++;
      pthread_mutex_unlock(&pool->lock);
      ct__proc_slot_finish(s, err);
    }
    ct__proc_slot_forget_child(s);
    ct__proc_request_spawn(s);
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

/* Keep the descriptors passed with the bytes just read: the server passes
 * one set per "spawned" frame (the child's socket, then its pidfd if it
 * has one), and one recvmsg() returns at most one set, so each set is kept
 * as one entry, oldest first, for its frame to meet. What the kernel had
 * to drop (MSG_CTRUNC: no descriptor was free) is kept as -1. */
static void take_passed_fds(ct__procpool_t *pool, struct msghdr *mh) {
  int fds[2] = {-1, -1};
  size_t got = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++, got++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (got < 2)
        fds[got] = fd;
      else
        close(fd);
    }
  }
  if (got == 0 && !(mh->msg_flags & MSG_CTRUNC))
    return;
  if (pool->npassed < CT__MAX_PASSED_FDS) {
    pool->passed[pool->npassed++] = (ct__passed_t){fds[0], fds[1]};
    return;
  }
  for (int i = 0; i < 2; i++)
    if (fds[i] >= 0)
      close(fds[i]);
}

/* Start a fork server and ask it for a child in every empty slot. On
 * failure, log, and try again from the loop after a growing delay. */
static void start_server(ct__procpool_t *pool) {
  int fd;
  int rc = ct__forkserver_start(pool->opts.max_frame + CT__FRAME_SLACK, &pool->server_pid, &fd);
  if (rc != 0) {
    pool->restart_delay = pool->restart_delay > 0 ? pool->restart_delay * 2 : CT__RESTART_FIRST;
    if (pool->restart_delay > CT__RESTART_MAX)
      pool->restart_delay = CT__RESTART_MAX;
    ct__proc_log(pool, CT_LOG_ERROR,
                 "ctasker: could not start the process pool's fork server (%s); "
                 "trying again in %g s",
                 ct_strerror(rc), pool->restart_delay);
    ev_timer_set(&pool->restart_timer, pool->restart_delay, 0.);
    ev_timer_start(pool->cfg.loop->ev, &pool->restart_timer);
    return;
  }
  pool->restart_delay = 0;
  pool->server_gone = false;
  ct__conn_init(pool->cfg.loop->ev, &pool->server, fd, 4096, ct__proc_server_readable,
                ct__proc_server_writable, pool);
  ct__proc_log(pool, CT_LOG_WARNING, "ctasker: started a new fork server (pid %d)",
               (int)pool->server_pid);
  for (int i = 0; i < pool->nslots; i++)
    if (pool->slots[i].state == SLOT_EMPTY) {
      ev_timer_stop(pool->cfg.loop->ev, &pool->slots[i].timer);
      ct__proc_request_spawn(&pool->slots[i]);
    }
}

void ct__proc_restart_server(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__procpool_t *pool = w->data;
  if (pool->server_gone)
    start_server(pool);
  ct__proc_check_progress(pool);
}

/* The fork server is gone (or finished, or, if `alive`, talks nonsense and
 * is killed): reap it. Children it was still to reap are killed here and
 * their tasks fail; the others live on as orphans, still running their
 * tasks. Unless the pool is winding down, start another fork server. */
static void server_lost(ct__procpool_t *pool, bool alive) {
  ct__conn_close(pool->cfg.loop->ev, &pool->server);
  pool->server_gone = true;
  if (alive)
    kill(pool->server_pid, SIGKILL); /* not reaped yet: the pid is still its own */
  while (waitpid(pool->server_pid, NULL, 0) < 0 && errno == EINTR)
    ;
  for (int i = 0; i < pool->nslots; i++) {
    ct__slot_t *s = &pool->slots[i];
    if (s->state == SLOT_REAPING) {
      ct__proc_kill_orphan(s); /* the server cannot end it now (or has reaped it) */
      if (s->task)
        ct__proc_slot_finish(s, ct_error_new("ProcessCrashed",
                                             "pool child %d was lost with the fork server",
                                             (int)s->pid));
      ct__proc_slot_forget_child(s);
    }
    if (s->state == SLOT_REAPING || s->state == SLOT_SPAWNING)
      s->state = SLOT_EMPTY;
    if (s->state == SLOT_EMPTY)
      ev_timer_stop(pool->cfg.loop->ev, &s->timer);
    else
      s->orphan = true; /* IDLE or BUSY: its timeout stays armed */
  }
  while (pool->npassed > 0) {
    ct__passed_t *p = &pool->passed[--pool->npassed];
    if (p->sock >= 0)
      close(p->sock);
    if (p->pidfd >= 0)
      close(p->pidfd);
  }
  if (!pool->server_shut)
    start_server(pool);
}

void ct__proc_server_unanswering(ct__procpool_t *pool, double waited) {
  ct__proc_log(pool, CT_LOG_ERROR,
               "ctasker: the process pool's fork server (pid %d) left a request "
               "unanswered for %g s: killing it",
               (int)pool->server_pid, waited);
  server_lost(pool, true);
}

void ct__proc_server_readable(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__procpool_t *pool = w->data;
  char buf[4096];
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int) * CT__MAX_PASSED_FDS)];
  } ctl;
  struct iovec iov = {buf, sizeof buf};
  struct msghdr mh = {.msg_iov = &iov,
                      .msg_iovlen = 1,
                      .msg_control = ctl.space,
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
      ct__proc_log(pool, CT_LOG_ERROR, "ctasker: the process pool's fork server ended");
    server_lost(pool, garbled);
  }
  ct__proc_check_progress(pool);
}

void ct__proc_server_writable(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__procpool_t *pool = w->data;
  if (ct__conn_flush(pool->cfg.loop->ev, &pool->server) != 0)
    server_lost(pool, false); /* it closed its end: it is exiting */
  ct__proc_check_progress(pool);
}
