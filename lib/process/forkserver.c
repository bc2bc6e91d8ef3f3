/* The fork server (one single-threaded process per pool) and the children
 * it forks.
 *
 * The parent's process may have many threads; only the thread calling
 * ct__forkserver_start() survives in the fork server, which therefore uses
 * nothing another thread could have held (the process function table is
 * locked across the fork; glibc keeps malloc usable after fork). The server
 * keeps fd 0-2 and its socket on fd 3, closes every other descriptor,
 * restores default signal dispositions and an empty mask, and then serves
 * spawn and reap requests one at a time. It leads a process group of its
 * own, which its children share: the signals a terminal sends to its
 * foreground group (Ctrl-C's SIGINT, Ctrl-\'s SIGQUIT, Ctrl-Z's SIGTSTP)
 * reach the host program alone, and the host decides (a drain lets
 * running process tasks end). The host's own end still ends them: the
 * server sees its socket close and reaps every child. Children are forked from it and so
 * inherit nothing of the parent's threads; each keeps fd 0-2 and its own
 * socket on fd 3, close-on-exec, so a program a child execs does not keep
 * the child's channel open after the child is gone.
 *
 * Each spawned child's socket goes to the parent with a pidfd of the child
 * (opened before the child can be reaped, so it can never name another
 * process): the parent's only safe way to signal a child of this server
 * once the server is gone.
 * The server knows its children by pid and slot and reaps only them: as
 * soon as one exits (SIGCHLD, read from a signalfd, so a child's death is
 * seen even while a process the child started still holds its socket), on
 * request (kill after a grace), and when the parent goes away. Every child
 * is reported to the parent exactly once, when it is reaped. Nothing here
 * runs atexit handlers or writes the parent's stdio buffers (every exit is
 * _exit(), and the server drops its copies of stdout's and stderr's
 * buffers).
 */
#include "process/forkserver.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctasker/result.h"
#include "process/frame.h"
#include "process/process-registry.h"

#define CT__CHANNEL_FD 3

typedef struct {
  pid_t pid;
  json_int_t slot;
} ct__child_t;

typedef struct {
  size_t max_frame;
  ct__child_t *kids;
  size_t nkids, cap;
} ct__server_t;

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Put `fd` on CT__CHANNEL_FD, close-on-exec (dup2() would clear the flag),
 * and close every other descriptor above 2. */
static void keep_only_channel(int fd) {
  if (fd != CT__CHANNEL_FD) {
    dup3(fd, CT__CHANNEL_FD, O_CLOEXEC);
    close(fd);
  }
  fcntl(CT__CHANNEL_FD, F_SETFD, FD_CLOEXEC);
  close_range(CT__CHANNEL_FD + 1, ~0U, 0);
}

static void default_signals(void) {
  for (int sig = 1; sig < NSIG; sig++)
    signal(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Encode and send a frame, with the descriptors fds[0..nfds) (at most 2)
 * passed along. */
static int send_frame(int sock, json_t *msg, size_t max, const int *fds, int nfds) {
  char *buf;
  size_t len;
  int rc = ct__frame_encode(msg, max, &buf, &len);
  json_decref(msg);
  if (rc != 0)
    return -1;
  size_t sent = 0;
  if (nfds > 0) {
    union {
      struct cmsghdr h;
      char space[CMSG_SPACE(2 * sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {buf, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                        .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    ssize_t n;
    while ((n = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
      ;
    if (n <= 0) {
      free(buf);
      return -1;
    }
    sent = (size_t)n;
  }
  rc = write_all(sock, buf + sent, len - sent);
  free(buf);
  return rc;
}

/* A pidfd for our child `pid`, not yet reaped, or -1 (a kernel before
 * Linux 5.3, or no descriptor free). */
static int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return (int)syscall(SYS_pidfd_open, pid, 0);
#else
  (void)pid;
  return -1;
#endif
}

/* ---- a pool child ---- */

static json_t *run_request(json_t *req) {
  json_int_t id = json_integer_value(json_object_get(req, "id"));
  const char *name = json_string_value(json_object_get(req, "fn"));
  json_t *args = json_object_get(req, "args");
  void *data = NULL;
  ct_process_fn fn = name ? ct__process_lookup(name, &data) : NULL;
  json_t *result;
  if (!fn)
    result = ct_error_new("UnknownTask", "no process function named '%s'", name ? name : "");
  else
    result = fn((uint64_t)id, args ? args : json_null(), data);
  return json_pack("{s:I, s:o}", "id", id, "result", result ? result : json_null());
}

static int child_handle(void *ctx, json_t *req) {
  size_t max = *(size_t *)ctx;
  json_int_t id = json_integer_value(json_object_get(req, "id"));
  json_t *reply = run_request(req);
  json_decref(req);
  char *buf;
  size_t len;
  int rc = ct__frame_encode(reply, max, &buf, &len);
  json_decref(reply);
  if (rc != 0) {
    json_t *err = json_pack("{s:I, s:o}", "id", id, "result",
                            ct_error_new("NotSerializable", "the result cannot be sent: %s",
                                         ct__frame_strerror(rc)));
    return send_frame(CT__CHANNEL_FD, err, max, NULL, 0) == 0 ? 0 : 1;
  }
  rc = write_all(CT__CHANNEL_FD, buf, len);
  free(buf);
  return rc == 0 ? 0 : 1;
}

static void child_main(int fd, size_t max) {
  keep_only_channel(fd); /* also closes the server's signalfd */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL); /* the server blocks SIGCHLD */
  ct__frame_decoder_t dec;
  ct__frame_decoder_init(&dec, max + 64);
  char buf[65536];
  for (;;) {
    ssize_t n = read(CT__CHANNEL_FD, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      _exit(0);
    if (ct__frame_feed(&dec, buf, (size_t)n, child_handle, &max) != 0)
      _exit(2);
  }
}

/* ---- the fork server ---- */

static void forget_child(ct__server_t *s, size_t i) { s->kids[i] = s->kids[--s->nkids]; }

static ssize_t find_child(const ct__server_t *s, pid_t pid) {
  for (size_t i = 0; i < s->nkids; i++)
    if (s->kids[i].pid == pid)
      return (ssize_t)i;
  return -1;
}

static void spawn(ct__server_t *s, json_int_t slot) {
  int sv[2] = {-1, -1};
  pid_t pid = -1;
  if (s->nkids == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    ct__child_t *p = realloc(s->kids, cap * sizeof *p);
    if (p) {
      s->kids = p;
      s->cap = cap;
    }
  }
  if (s->nkids < s->cap && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0)
    pid = fork();
  if (pid == 0) {
    close(sv[0]);
    child_main(sv[1], s->max_frame);
  }
  if (pid < 0) {
    if (sv[0] >= 0) {
      close(sv[0]);
      close(sv[1]);
    }
    send_frame(CT__CHANNEL_FD, json_pack("{s:I, s:i, s:s}", "spawned", slot, "pid", 0,
                                         "error", strerror(errno)), 4096, NULL, 0);
    return;
  }
  close(sv[1]);
  s->kids[s->nkids++] = (ct__child_t){pid, slot};
  /* Opened before the child can be reaped, so it names this child. */
  int fds[2] = {sv[0], open_pidfd(pid)};
  send_frame(CT__CHANNEL_FD, json_pack("{s:I, s:i}", "spawned", slot, "pid", (int)pid), 4096, fds,
             fds[1] >= 0 ? 2 : 1);
  close(sv[0]);
  if (fds[1] >= 0)
    close(fds[1]);
}

/* Wait up to grace_ms for pid to end by itself, then kill it; reap it. */
static int reap(pid_t pid, long grace_ms, bool *killed) {
  int status;
  *killed = false;
  for (long waited = 0;; waited++) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
      return status;
    if (r < 0 && errno != EINTR)
      return -1;
    if (waited >= grace_ms)
      break;
    sleep_ms(1);
  }
  kill(pid, SIGKILL);
  *killed = true;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  return status;
}

/* Tell the parent how child i ended (status from waitpid, or -1 if it was
 * lost) and forget it: each child is reported once. */
static void report_reaped(ct__server_t *s, size_t i, int status, bool killed) {
  json_t *msg = json_pack("{s:i, s:I, s:b}", "reaped", (int)s->kids[i].pid, "slot",
                          s->kids[i].slot, "killed", killed);
  forget_child(s, i);
  if (status < 0)
    json_object_set_new(msg, "lost", json_true());
  else if (WIFSIGNALED(status))
    json_object_set_new(msg, "signal", json_integer(WTERMSIG(status)));
  else
    json_object_set_new(msg, "exit", json_integer(WEXITSTATUS(status)));
  send_frame(CT__CHANNEL_FD, msg, 4096, NULL, 0);
}

/* The parent asks for a child to end (it failed, or its socket never
 * arrived). A child already reaped was already reported: nothing to do.
 * The slot must match too, so that a request that crossed the report
 * cannot hit a new child that was given the same pid. */
static void reap_request(ct__server_t *s, pid_t pid, json_int_t slot, long grace_ms) {
  ssize_t i = find_child(s, pid);
  if (i < 0 || s->kids[i].slot != slot)
    return;
  bool killed = false;
  int status = reap(pid, grace_ms, &killed);
  report_reaped(s, (size_t)i, status, killed);
}

/* SIGCHLD: reap and report every child that has ended. */
static void reap_exited(ct__server_t *s, int sigfd) {
  struct signalfd_siginfo si;
  while (read(sigfd, &si, sizeof si) > 0)
    ;
  for (size_t i = 0; i < s->nkids;) {
    int status;
    pid_t r = waitpid(s->kids[i].pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
      i++;
    else
      report_reaped(s, i, r < 0 ? -1 : status, false);
  }
}

static int server_handle(void *ctx, json_t *req) {
  ct__server_t *s = ctx;
  const char *op = json_string_value(json_object_get(req, "op"));
  if (op && strcmp(op, "spawn") == 0)
    spawn(s, json_integer_value(json_object_get(req, "slot")));
  else if (op && strcmp(op, "reap") == 0)
    reap_request(s, (pid_t)json_integer_value(json_object_get(req, "pid")),
                 json_integer_value(json_object_get(req, "slot")),
                 (long)json_integer_value(json_object_get(req, "grace")));
  json_decref(req);
  return 0;
}

/* The parent went away: give the children a moment to see their sockets
 * close, kill the rest, reap them all, leave. */
static void shutdown_server(ct__server_t *s) {
  long per_child = s->nkids ? CT__SHUTDOWN_GRACE_MS / (long)s->nkids : 0;
  for (size_t i = 0; i < s->nkids; i++) {
    bool killed;
    reap(s->kids[i].pid, per_child, &killed);
  }
  _exit(0);
}

/* Drop the copies of what the parent had buffered for stdout and stderr:
 * the parent writes it; a child that flushes would write it again. */
static void drop_parent_output(void) {
  __fpurge(stdout);
  __fpurge(stderr);
}

/* SIGCHLD blocked and delivered to a signalfd, which the server polls with
 * its channel. Returns the signalfd, or -1 (children are then seen to end
 * only on request or at shutdown, as the parent also learns of a death from
 * the child's socket). */
static int child_signals_fd(void) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  return signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void server_main(int fd, size_t max) {
  default_signals();
  drop_parent_output();
  keep_only_channel(fd);
  ct__server_t s = {.max_frame = max};
  struct pollfd pfd[2] = {{CT__CHANNEL_FD, POLLIN, 0}, {child_signals_fd(), POLLIN, 0}};
  ct__frame_decoder_t dec;
  ct__frame_decoder_init(&dec, 4096);
  char buf[4096];
  for (;;) {
    if (poll(pfd, pfd[1].fd >= 0 ? 2 : 1, -1) < 0)
      continue; /* EINTR; nothing else can fail with these arguments */
    if (pfd[1].fd >= 0 && pfd[1].revents)
      reap_exited(&s, pfd[1].fd);
    if (!pfd[0].revents)
      continue;
    ssize_t n = read(CT__CHANNEL_FD, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || ct__frame_feed(&dec, buf, (size_t)n, server_handle, &s) != 0)
      shutdown_server(&s);
  }
}

int ct__forkserver_start(size_t max_frame, pid_t *pid, int *fd) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return errno == ENFILE || errno == EMFILE ? CT_EMFILE : errno == ENOMEM ? CT_ENOMEM : CT_EAGAIN;
  sigset_t all, old;
  sigfillset(&all);
  ct__process_registry_lock();
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t p = fork();
  if (p == 0) {
    /* A process group of its own (its children inherit it), joined while
     * every signal is still blocked: a terminal's Ctrl-C reaches the host,
     * which decides what it means, not the pool behind its back. */
    setpgid(0, 0);
    ct__process_registry_unlock();
    close(sv[0]);
    server_main(sv[1], max_frame);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  ct__process_registry_unlock();
  close(sv[1]);
  if (p < 0) {
    close(sv[0]);
    return CT_EAGAIN;
  }
  *pid = p;
  *fd = sv[0];
  return 0;
}
