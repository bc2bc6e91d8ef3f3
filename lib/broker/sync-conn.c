/* One blocking Redis connection: a hiredis context used by the calling
 * thread itself, for a call that waits anyway (ct_broker_call()). A
 * command on a connection of conn.c goes through that connection's loop
 * thread, one thread wake-up each way; here the caller writes and reads
 * its socket itself, and can send several commands (its submission and
 * its blocking read) in one write.
 *
 * Timeouts. hiredis's blocking context reads and writes under the
 * socket's SO_RCVTIMEO and SO_SNDTIMEO (redisSetTimeout()), set before
 * each send or read to what it may take (and only when it changes: two
 * system calls). A read or write that fails or times out leaves the
 * connection broken: a reply owed would come late to the next command, so
 * it is never used again.
 *
 * Writes. Commands are formatted with redisFormatCommandArgv() and written
 * here with send(MSG_NOSIGNAL), not by hiredis, whose write() would raise
 * SIGPIPE (and end the host program) on a socket the server has closed;
 * hiredis only reads.
 *
 * Life. A connection kept idle may be closed by the server meanwhile (a
 * restart, its idle timeout): ct__rsync_usable() polls the socket without
 * waiting, and a socket that has anything to read while no reply is owed
 * (the end of the stream, or an error) is of no use.
 */
#include "sync-conn.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"

struct ct__rsync {
  redisContext *ctx;
  double timeout;   /* the socket timeouts as last set (s), 0: not set */
  size_t owed;      /* replies sent for and not read */
  bool broken;
  atomic_bool interrupted; /* ct__rsync_interrupt(): fail quietly */
  char *display;    /* the URL without its password, for log lines */
  ct_log_fn log;
  void *log_data;
};

static struct timeval timeval_of(double seconds) {
  seconds = fmin(fmax(seconds, 0.001), 1e9);
  struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - floor(seconds)) * 1e6)};
  return tv;
}

static int set_timeout(ct__rsync_t *c, double seconds) {
  if (seconds == c->timeout)
    return 0;
  if (redisSetTimeout(c->ctx, timeval_of(seconds)) != REDIS_OK)
    return CT_ETIMEDOUT;
  c->timeout = seconds;
  return 0;
}

static int fail(ct__rsync_t *c, const char *what) {
  c->broken = true;
  if (!atomic_load(&c->interrupted))
    ct__log(c->log, c->log_data, CT_LOG_ERROR, "redis %s: %s", c->display, what);
  return CT_ETIMEDOUT;
}

void ct__rsync_interrupt(ct__rsync_t *c) {
  atomic_store(&c->interrupted, true);
  shutdown(c->ctx->fd, SHUT_RDWR); /* the descriptor stays the owner's to close */
}

/* Write all of buf, or fail. */
static int write_all(ct__rsync_t *c, const char *buf, size_t len) {
  for (size_t off = 0; off < len;) {
    ssize_t w = send(c->ctx->fd, buf + off, len - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      char why[300];
      snprintf(why, sizeof why, "write failed: %s",
               w == 0 ? "nothing written" : errno == EAGAIN ? "timed out" : strerror(errno));
      return fail(c, why);
    }
    off += (size_t)w;
  }
  return 0;
}

int ct__rsync_send(ct__rsync_t *c, double timeout, size_t n, const ct__rconn_cmd_t *cmds) {
  if (c->broken)
    return CT_ETIMEDOUT;
  char *buf = NULL;
  size_t len = 0;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    char *one;
    int k = redisFormatCommandArgv(&one, cmds[i].argc, cmds[i].argv, cmds[i].argvlen);
    char *grown = k >= 0 ? realloc(buf, len + (size_t)k) : NULL;
    if (grown) {
      memcpy(grown + len, one, (size_t)k);
      buf = grown;
      len += (size_t)k;
    }
    if (k >= 0)
      redisFreeCommand(one);
    if (!grown)
      rc = CT_ENOMEM;
  }
  if (rc == 0 && set_timeout(c, timeout) != 0)
    rc = fail(c, "cannot set the socket's timeout");
  if (rc == 0)
    rc = write_all(c, buf, len);
  if (rc == 0)
    c->owed += n;
  free(buf);
  return rc;
}

int ct__rsync_read(ct__rsync_t *c, double timeout, ct__rconn_cmd_t *cmd) {
  if (c->broken || c->owed == 0)
    return cmd->rc = CT_ETIMEDOUT;
  if (set_timeout(c, timeout) != 0)
    return cmd->rc = fail(c, "cannot set the socket's timeout");
  void *reply = NULL;
  if (redisGetReply(c->ctx, &reply) != REDIS_OK || !reply) {
    char why[300];
    snprintf(why, sizeof why, "%s",
             c->ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)
                 ? "no reply within the command timeout"
                 : c->ctx->errstr[0] ? c->ctx->errstr : "connection lost");
    return cmd->rc = fail(c, why);
  }
  c->owed--;
  cmd->rc = cmd->on_reply ? cmd->on_reply(reply, cmd->data) : 0;
  freeReplyObject(reply);
  return cmd->rc;
}

bool ct__rsync_usable(ct__rsync_t *c) {
  if (c->broken || c->owed > 0)
    return false;
  struct pollfd p = {c->ctx->fd, POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

/* --- connecting --------------------------------------------------------- */

static int error_reply(const redisReply *r, void *data) {
  char **err = data;
  if (r->type == REDIS_REPLY_ERROR)
    *err = strndup(r->str, r->len);
  return r->type == REDIS_REPLY_ERROR ? CT_EINVAL : 0;
}

/* One handshake command, within what is left before `end`: 0, or
 * CT_EINVAL and *err (the server's error, allocated; NULL if out of
 * memory), or CT_ETIMEDOUT. */
static int handshake(ct__rsync_t *c, double end, int argc, const char **argv, char **err) {
  ct__rconn_cmd_t cmd = {argc, argv, NULL, error_reply, err, 0};
  int rc = ct__rsync_send(c, end - ct__now(), 1, &cmd);
  return rc == 0 ? ct__rsync_read(c, end - ct__now(), &cmd) : rc;
}

/* AUTH and SELECT as the URL says, then PING until the server has loaded
 * its data (LOADING: it runs nothing yet), pausing 0.1 s; any other answer
 * to PING (PONG, or an ACL that denies it) says it is ready. */
static int greet(ct__rsync_t *c, const ct__redis_url_t *u, double end) {
  char *err = NULL;
  char db[16];
  snprintf(db, sizeof db, "%d", u->db);
  const char *auth[] = {"AUTH", u->user ? u->user : u->password, u->password};
  const char *select[] = {"SELECT", db}, *ping[] = {"PING"};
  int rc = 0;
  if (u->password)
    rc = handshake(c, end, u->user ? 3 : 2, auth, &err);
  if (rc == 0 && u->db != 0)
    rc = handshake(c, end, 2, select, &err);
  for (bool loading = true; rc == 0 && loading;) {
    free(err);
    err = NULL;
    rc = handshake(c, end, 1, ping, &err);
    loading = rc == CT_EINVAL && err && strncmp(err, "LOADING", 7) == 0;
    if (rc == CT_EINVAL && err && !loading) {
      rc = 0; /* refused (an ACL without PING), but it runs commands */
    } else if (loading && ct__now() + 0.1 < end) {
      nanosleep(&(struct timespec){0, 100000000}, NULL);
      rc = 0;
    }
  }
  if (rc == CT_EINVAL) {
    char why[300];
    snprintf(why, sizeof why, "AUTH, SELECT or PING refused: %s", err ? err : "out of memory");
    rc = fail(c, why);
  }
  free(err);
  return rc;
}

int ct__rsync_new(const ct__redis_url_t *url, double timeout, ct_log_fn log, void *log_data,
                  ct__rsync_t **out) {
  ct__rsync_t *c = calloc(1, sizeof *c);
  if (!c)
    return CT_ENOMEM;
  *c = (ct__rsync_t){.log = log, .log_data = log_data, .display = ct__redis_url_display(url)};
  double end = ct__now() + timeout;
  struct timeval tv = timeval_of(timeout);
  c->ctx = url->path ? redisConnectUnixWithTimeout(url->path, tv)
                     : redisConnectWithTimeout(url->host, url->port, tv);
  int rc = c->ctx && c->display ? 0 : CT_ENOMEM;
  if (rc == 0 && c->ctx->err) {
    char why[300];
    snprintf(why, sizeof why, "cannot connect: %s", c->ctx->errstr);
    rc = fail(c, why);
  }
  if (rc == 0)
    rc = greet(c, url, end);
  if (rc != 0) {
    ct__rsync_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

void ct__rsync_free(ct__rsync_t *c) {
  if (!c)
    return;
  if (c->ctx)
    redisFree(c->ctx);
  free(c->display);
  free(c);
}
