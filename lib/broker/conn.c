/* One Redis connection: a hiredis async context, with its libev adapter, on
 * an extra loop of its own (made with ct_loop_create(), so that the broker
 * needs nothing of ctasker but its public headers, and so that a CPU-bound
 * task cannot delay its replies or its deadlines).
 *
 * Threads. Everything marked L below is touched on the loop thread only.
 * Another thread enters only through ct_loop_call(): it formats its command
 * (pure, thread-safe), posts it, and sleeps on a small shared record, the
 * call, until the loop answers. Every call is answered: by its reply, by
 * its deadline, or, when the loop ends (ct__rconn_free() stops it, or its
 * supervisor stopped), by an ev_cleanup watcher that closes everything on
 * the loop thread just before libev destroys the loop. The call is counted
 * (caller and loop); a caller that gives up anyway (a generous bound, a
 * guard against a hang) marks it abandoned under its lock, so the loop
 * never writes into a caller that has gone. A command posted with
 * ct__rconn_post() has nobody sleeping on it: where a call would be
 * answered, the loop calls its completion instead.
 *
 * Deadlines. hiredis 0.14 has none for async contexts, so each command
 * carries an ev_timer from the moment it reaches the loop: a command still
 * waiting for a connection, or sent and not answered, is answered
 * CT_ETIMEDOUT when it fires. A sent command that overruns drops the
 * connection (replies come in order: the ones behind it are late too), and
 * hiredis answers every other sent command with a NULL reply as it frees the
 * context. The connect (with AUTH and SELECT) has its own timer.
 *
 * Life of the context. `ac` is set when an attempt starts and cleared
 * (before hiredis or we free it) when it fails or breaks, so callbacks that
 * hiredis runs while freeing an old context see ac != c->ac and do nothing.
 * A broken connection is made again after a pause growing from 0.1 s to
 * 5 s; commands posted meanwhile wait in `waiting` (FIFO) for it. A server
 * still reading its data back after a restart answers LOADING and runs
 * nothing: a new connection asks with PING (which it refuses so too),
 * every 0.1 s, and sends no command until it has loaded, each command
 * still under its own deadline; a command that gets LOADING all the same
 * (a replica starting a full resynchronisation) goes back to `waiting`,
 * and the connection asks again. Sending commands into a loading server
 * broke a transaction apart: MULTI and EXEC run while it loads, the
 * commands between are refused, so EXEC aborts, and sent again on their
 * own they ran outside it (a submission written, its caller told it had
 * failed).
 *
 * Writes. hiredis's libev adapter starts a write watcher for every command
 * and writes once the loop polls again, which costs two epoll_ctl calls and
 * a loop iteration per command. Here a command only goes into hiredis's
 * output buffer; an ev_prepare watcher, which runs after every callback of
 * the iteration and before the poll, writes the whole buffer at once: the
 * commands that reached the loop together (several threads' calls, a
 * batch of renewals) go out in one write, and a write that completes
 * leaves the watcher as it was, so libev changes nothing in epoll. A
 * partial write keeps the watcher, which finishes it as before.
 */
#include "conn.h"

#include <ev.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

#define RETRY_FIRST 0.1 /* seconds before the first reconnection */
#define RETRY_MAX 5.0   /* longest pause between reconnections */
#define LOADING_PAUSE 0.1 /* seconds between tries while the server loads its data */

typedef struct ct__rcall {
  atomic_int refs;       /* caller and loop */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;             /* lock: rc is set */
  bool abandoned;        /* lock: the caller no longer waits */
  int rc;                /* lock */
  ct__rconn_reply_fn on_reply;
  void *data;
} ct__rcall_t;

typedef struct ct__rop ct__rop_t;
struct ct__rop {
  ct__rconn_t *c;
  ct__rcall_t *call; /* L: NULL once answered */
  ct__rconn_done_fn done;   /* L: a posted command's completion, NULL once answered */
  ct__rconn_reply_fn reply; /* L: a posted command's reader, NULL once answered */
  void *data;               /* given to reply and done */
  char *cmd;         /* the formatted command */
  size_t len;
  bool sent;         /* L: hiredis holds it and will call on_reply */
  double timeout;    /* seconds for its reply */
  ev_timer deadline; /* L */
  ct__rop_t *prev, *next; /* L: in c->waiting while not sent */
};

enum { DOWN, CONNECTING, READY, LOADING };

struct ct__rconn {
  ct_loop_t *loop;
  pthread_t loop_thread; /* set by the first call on the loop, before new returns */
  void (*on_end)(void *); /* L: called as the loop ends (ct__rconn_on_end()) */
  void *on_end_data;      /* L */
  ct__redis_url_t url;
  char *display;         /* the URL for log lines, without the password */
  double connect_timeout, command_timeout;
  ct_log_fn log;
  void *log_data;
  struct ev_loop *ev;     /* L */
  redisAsyncContext *ac;  /* L: the attempt or connection under way */
  int state;              /* L */
  int handshake_left;     /* L: AUTH and SELECT replies still to come */
  double backoff;         /* L: pause before the next reconnection */
  ev_timer connect_timer; /* L: deadline of the attempt under way */
  ev_timer retry_timer;   /* L: the next attempt */
  ev_timer loading_timer; /* L: the next try while the server loads its data */
  ct__rop_t *waiting, *waiting_tail; /* L */
  ct__rcall_t *first;     /* L: the creator's wait for the first attempt */
  ev_prepare flush;       /* L: writes what the iteration's commands added */
  ev_cleanup cleanup;     /* L: closes everything as the loop ends */
  bool closing;           /* L */
  int no_reply_rc;        /* L: what a command without a reply returns */
  atomic_llong client_id; /* the server's CLIENT ID of the connection; 0: none */
  atomic_bool up;         /* written on the loop: connected, AUTH and SELECT done */
  atomic_uint made;       /* written on the loop: connections made so far */
};

static void conn_log(ct__rconn_t *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_log(ct__rconn_t *c, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ct__vlog(c->log, c->log_data, level, fmt, ap);
  va_end(ap);
}

/* --- calls: a caller's wait ------------------------------------------ */

static ct__rcall_t *call_new(ct__rconn_reply_fn on_reply, void *data) {
  ct__rcall_t *call = calloc(1, sizeof *call);
  if (!call)
    return NULL;
  if (pthread_mutex_init(&call->lock, NULL) != 0) {
    free(call);
    return NULL;
  }
  if (pthread_cond_init(&call->cond, NULL) != 0) {
    pthread_mutex_destroy(&call->lock);
    free(call);
    return NULL;
  }
  atomic_init(&call->refs, 2);
  call->on_reply = on_reply;
  call->data = data;
  return call;
}

static void call_unref(ct__rcall_t *call) {
  if (atomic_fetch_sub(&call->refs, 1) != 1)
    return;
  pthread_cond_destroy(&call->cond);
  pthread_mutex_destroy(&call->lock);
  free(call);
}

/* Answer a call with a reply (NULL: none came) and drop the loop's count. */
static void call_answer(ct__rcall_t *call, const redisReply *r, int rc_without) {
  pthread_mutex_lock(&call->lock);
  if (!call->abandoned) {
    call->rc = r && call->on_reply ? call->on_reply(r, call->data) : r ? 0 : rc_without;
    call->done = true;
    pthread_cond_signal(&call->cond);
  }
  pthread_mutex_unlock(&call->lock);
  call_unref(call);
}

/* Wait for the answer until `bound` seconds have passed (a safety net for a
 * loop that ends under the call: the loop's own timers answer first), then
 * drop the caller's count. */
static int call_wait(ct__rcall_t *call, double bound) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  double end = (double)until.tv_sec + (double)until.tv_nsec / 1e9 + bound;
  until.tv_sec = (time_t)end;
  until.tv_nsec = (long)((end - floor(end)) * 1e9);
  pthread_mutex_lock(&call->lock);
  while (!call->done)
    if (pthread_cond_timedwait(&call->cond, &call->lock, &until) != 0 && !call->done)
      break;
  int rc = call->done ? call->rc : CT_ETIMEDOUT;
  call->abandoned = true;
  pthread_mutex_unlock(&call->lock);
  call_unref(call);
  return rc;
}

/* --- commands on the loop ----------------------------------------------- */

static void waiting_unlink(ct__rconn_t *c, ct__rop_t *op) {
  if (op->prev)
    op->prev->next = op->next;
  else
    c->waiting = op->next;
  if (op->next)
    op->next->prev = op->prev;
  else
    c->waiting_tail = op->prev;
  op->prev = op->next = NULL;
}

static void op_free(ct__rop_t *op) {
  redisFreeCommand(op->cmd);
  free(op);
}

/* Answer op's caller with a reply, or with rc_without if none. */
static void op_answer(ct__rop_t *op, const redisReply *r, int rc_without) {
  if (!op->call && (op->reply || op->done)) { /* posted: nobody waits */
    ct__rconn_reply_fn reply = op->reply;
    ct__rconn_done_fn done = op->done;
    op->reply = NULL;
    op->done = NULL;
    int rc = r && reply ? reply(r, op->data) : r ? 0 : rc_without;
    if (done)
      done(rc, op->data);
    return;
  }
  if (!op->call)
    return;
  call_answer(op->call, r, rc_without);
  op->call = NULL;
}

static void waiting_append(ct__rconn_t *c, ct__rop_t *op) {
  op->prev = c->waiting_tail;
  op->next = NULL;
  if (c->waiting_tail)
    c->waiting_tail->next = op;
  else
    c->waiting = op;
  c->waiting_tail = op;
}

/* A server that is still loading its data refuses every command with
 * LOADING, having run none: the command waits, as for a connection, within
 * its own deadline, and is sent again once the server answers PING. */
static bool loading(ct__rconn_t *c, ct__rop_t *op, const redisReply *r) {
  if (!r || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "LOADING", 7) != 0 || c->closing ||
      c->ac == NULL)
    return false;
  op->sent = false;
  waiting_append(c, op);
  if (c->state == READY) {
    c->state = LOADING;
    ev_timer_set(&c->loading_timer, LOADING_PAUSE, 0.0);
    ev_timer_start(c->ev, &c->loading_timer);
  }
  return true;
}

/* hiredis's reply callback: a reply, or NULL as it frees the context. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  ct__rop_t *op = privdata;
  if (ac == op->c->ac && loading(op->c, op, reply))
    return;
  ev_timer_stop(op->c->ev, &op->deadline);
  op_answer(op, reply, op->c->no_reply_rc);
  op_free(op);
}

static void drop(ct__rconn_t *c, const char *why);

static void send_op(ct__rconn_t *c, ct__rop_t *op) {
  if (redisAsyncFormattedCommand(c->ac, on_reply, op, op->cmd, op->len) != REDIS_OK) {
    /* Only a context being freed refuses; the command waits for the next. */
    drop(c, "the connection refused a command");
    return;
  }
  waiting_unlink(c, op);
  op->sent = true;
}

static void on_deadline(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__rop_t *op = w->data;
  ct__rconn_t *c = op->c;
  if (op->sent) {
    /* hiredis answers and frees op with a NULL reply as the context goes. */
    drop(c, "a command had no reply within the command timeout");
    return;
  }
  op_answer(op, NULL, CT_ETIMEDOUT);
  waiting_unlink(c, op);
  op_free(op);
}

static void on_loop_command(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  ct__rop_t *op = data;
  ct__rconn_t *c = op->c;
  ev_timer_init(&op->deadline, on_deadline, op->timeout, 0.0);
  op->deadline.data = op;
  ev_timer_start(c->ev, &op->deadline);
  waiting_append(c, op);
  if (c->state == READY)
    send_op(c, op);
}

/* --- connecting --------------------------------------------------------- */

static void first_answer(ct__rconn_t *c, int rc) {
  if (!c->first)
    return;
  call_answer(c->first, NULL, rc);
  c->first = NULL;
}

static void schedule_retry(ct__rconn_t *c) {
  if (c->closing || c->first)
    return; /* the creator gives up after the first attempt */
  conn_log(c, CT_LOG_WARNING, "redis %s: connecting again in %.1f s", c->display, c->backoff);
  ev_timer_set(&c->retry_timer, c->backoff, 0.0);
  ev_timer_start(c->ev, &c->retry_timer);
  c->backoff = fmin(c->backoff * 2, RETRY_MAX);
}

/* The attempt or connection under way has failed: forget it, free it (its
 * sent commands are answered CT_ETIMEDOUT), and try again later. */
static void drop(ct__rconn_t *c, const char *why) {
  redisAsyncContext *ac = c->ac;
  conn_log(c, CT_LOG_ERROR, "redis %s: %s", c->display, why);
  c->ac = NULL;
  atomic_store(&c->client_id, 0);
  atomic_store(&c->up, false);
  c->state = DOWN;
  ev_timer_stop(c->ev, &c->connect_timer);
  ev_timer_stop(c->ev, &c->loading_timer);
  if (ac)
    redisAsyncFree(ac); /* deferred by hiredis inside its own callbacks */
  first_answer(c, CT_ETIMEDOUT);
  schedule_retry(c);
}

/* CLIENT ID's reply, asked for as the connection becomes ready. */
static void on_client_id(redisAsyncContext *ac, void *reply, void *privdata) {
  ct__rconn_t *c = privdata;
  const redisReply *r = reply;
  if (ac == c->ac && r && r->type == REDIS_REPLY_INTEGER)
    atomic_store(&c->client_id, r->integer);
}

static void ready(ct__rconn_t *c) {
  /* First, ahead of every command waiting: a blocking read sent later is
   * then known by this id (a reply not yet come leaves 0: unknown). */
  redisAsyncCommand(c->ac, on_client_id, c, "CLIENT ID");
  c->state = READY;
  while (c->waiting && c->state == READY)
    send_op(c, c->waiting);
}

/* PING's reply while the connection holds its commands for a server that
 * may be loading its data (see "Life of the context"). */
static void on_probe(redisAsyncContext *ac, void *reply, void *privdata) {
  ct__rconn_t *c = privdata;
  const redisReply *r = reply;
  if (ac != c->ac || !r || c->state != LOADING)
    return;
  ev_timer_stop(c->ev, &c->connect_timer);
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "LOADING", 7) == 0) {
    ev_timer_set(&c->loading_timer, LOADING_PAUSE, 0.0);
    ev_timer_start(c->ev, &c->loading_timer);
    return;
  }
  ready(c); /* loaded, or PING refused otherwise (an ACL): nothing to wait for */
}

/* Ask with PING, within the command timeout (the connect timer's: a
 * server that never answers is dropped, as when a command overruns). */
static void probe_loading(ct__rconn_t *c) {
  c->state = LOADING;
  ev_timer_set(&c->connect_timer, c->command_timeout, 0.0);
  ev_timer_start(c->ev, &c->connect_timer);
  redisAsyncCommand(c->ac, on_probe, c, "PING");
}

/* Connected, AUTH and SELECT done: the server is there (said, and the
 * creator's wait ends, as before any command); its commands wait until it
 * has loaded its data. */
static void handshake_done(ct__rconn_t *c) {
  ev_timer_stop(c->ev, &c->connect_timer);
  c->backoff = RETRY_FIRST;
  atomic_store(&c->up, true);
  atomic_fetch_add(&c->made, 1);
  conn_log(c, CT_LOG_INFO, "redis %s: connected", c->display);
  first_answer(c, 0);
  probe_loading(c);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata) {
  ct__rconn_t *c = privdata;
  const redisReply *r = reply;
  if (ac != c->ac || !r)
    return; /* an old context being freed */
  if (r->type == REDIS_REPLY_ERROR) {
    char why[300];
    snprintf(why, sizeof why, "AUTH or SELECT refused: %s", r->str);
    drop(c, why);
  } else if (--c->handshake_left == 0) {
    handshake_done(c);
  }
}

static void send_handshake(ct__rconn_t *c) {
  const char *argv[3];
  size_t argc = 0;
  char db[16];
  c->handshake_left = (c->url.password != NULL) + (c->url.db != 0);
  if (c->handshake_left == 0) {
    handshake_done(c);
    return;
  }
  if (c->url.password) {
    argv[argc++] = "AUTH";
    if (c->url.user)
      argv[argc++] = c->url.user;
    argv[argc++] = c->url.password;
    redisAsyncCommandArgv(c->ac, on_handshake, c, (int)argc, argv, NULL);
  }
  if (c->url.db != 0) {
    snprintf(db, sizeof db, "%d", c->url.db);
    argv[0] = "SELECT";
    argv[1] = db;
    redisAsyncCommandArgv(c->ac, on_handshake, c, 2, argv, NULL);
  }
}

static void on_connect(const redisAsyncContext *ac, int status) {
  ct__rconn_t *c = ac->data;
  if (ac != c->ac)
    return;
  if (status != REDIS_OK) {
    char why[300];
    snprintf(why, sizeof why, "cannot connect: %s", ac->errstr);
    c->ac = NULL; /* hiredis frees it after this callback */
    drop(c, why);
    return;
  }
  send_handshake(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  (void)status;
  ct__rconn_t *c = ac->data;
  if (ac != c->ac)
    return;
  char why[300];
  snprintf(why, sizeof why, "connection lost: %s", ac->err ? ac->errstr : "closed");
  c->ac = NULL; /* hiredis frees it after this callback */
  drop(c, why);
}

static void connect_start(ct__rconn_t *c) {
  redisAsyncContext *ac = c->url.path ? redisAsyncConnectUnix(c->url.path)
                                      : redisAsyncConnect(c->url.host, c->url.port);
  if (!ac || ac->err) {
    char why[300];
    snprintf(why, sizeof why, "cannot connect: %s", ac ? ac->errstr : "out of memory");
    if (ac)
      redisAsyncFree(ac);
    drop(c, why);
    return;
  }
  ac->data = c;
  redisLibevAttach(c->ev, ac);
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  c->ac = ac;
  c->state = CONNECTING;
  ev_timer_set(&c->connect_timer, c->connect_timeout, 0.0);
  ev_timer_start(c->ev, &c->connect_timer);
}

/* The pause while the server loads is over: ask whether it has loaded. */
static void on_loading_pause(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__rconn_t *c = w->data;
  if (c->state == LOADING && c->ac)
    probe_loading(c);
}

static void on_connect_timeout(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__rconn_t *c = w->data;
  drop(c, c->state == LOADING ? "no reply to PING within the command timeout"
                              : "no connection within the connect timeout");
}

static void on_retry(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  connect_start(w->data);
}

/* Before the loop polls: write the commands added in this iteration, all
 * in one write, while connected (during a connect, hiredis's own write
 * watcher finds out when the socket is ready). A write error drops the
 * connection through on_disconnect, as it would from the write watcher. */
static void on_flush(struct ev_loop *ev, ev_prepare *w, int revents) {
  (void)ev;
  (void)revents;
  ct__rconn_t *c = w->data;
  if (c->ac && (c->ac->c.flags & REDIS_CONNECTED) && sdslen(c->ac->c.obuf) > 0)
    redisAsyncHandleWrite(c->ac);
}

/* The loop is ending (ct__rconn_free() stops it, or its supervisor
 * stopped): libev calls this before it destroys the loop, after the last
 * posted call ran. Every command still here is answered CT_ESHUTDOWN:
 * those waiting for a connection now, those sent as hiredis frees the
 * context. */
static void on_cleanup(struct ev_loop *ev, ev_cleanup *w, int revents) {
  (void)revents;
  ct__rconn_t *c = w->data;
  redisAsyncContext *ac = c->ac;
  c->closing = true;
  atomic_store(&c->up, false);
  c->no_reply_rc = CT_ESHUTDOWN;
  c->ac = NULL;
  ev_timer_stop(ev, &c->retry_timer);
  ev_timer_stop(ev, &c->connect_timer);
  ev_timer_stop(ev, &c->loading_timer);
  ev_prepare_stop(ev, &c->flush);
  while (c->waiting) {
    ct__rop_t *op = c->waiting;
    ev_timer_stop(ev, &op->deadline);
    waiting_unlink(c, op);
    op_answer(op, NULL, CT_ESHUTDOWN);
    op_free(op);
  }
  if (ac)
    redisAsyncFree(ac);
  first_answer(c, CT_ESHUTDOWN);
  if (c->on_end)
    c->on_end(c->on_end_data);
}

static void on_loop_start(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ct__rconn_t *c = data;
  c->ev = ev;
  c->loop_thread = pthread_self();
  ev_timer_init(&c->connect_timer, on_connect_timeout, 0.0, 0.0);
  c->connect_timer.data = c;
  ev_timer_init(&c->retry_timer, on_retry, 0.0, 0.0);
  c->retry_timer.data = c;
  ev_timer_init(&c->loading_timer, on_loading_pause, 0.0, 0.0);
  c->loading_timer.data = c;
  ev_prepare_init(&c->flush, on_flush);
  c->flush.data = c;
  ev_prepare_start(ev, &c->flush);
  ev_cleanup_init(&c->cleanup, on_cleanup);
  c->cleanup.data = c;
  ev_cleanup_start(ev, &c->cleanup);
  connect_start(c);
}

/* --- life --------------------------------------------------------------- */

static int conn_init(ct__rconn_t *c, const ct__rconn_opts_t *o) {
  static atomic_uint serial;
  char name[32];
  snprintf(name, sizeof name, "ct-broker-%u", atomic_fetch_add(&serial, 1));
  c->connect_timeout = o->connect_timeout;
  c->command_timeout = o->command_timeout;
  c->log = o->log;
  c->log_data = o->log_data;
  c->backoff = RETRY_FIRST;
  c->no_reply_rc = CT_ETIMEDOUT;
  atomic_init(&c->client_id, 0);
  atomic_init(&c->up, false);
  atomic_init(&c->made, 0);
  c->url = *o->url;
  c->url.host = o->url->host ? strdup(o->url->host) : NULL;
  c->url.path = o->url->path ? strdup(o->url->path) : NULL;
  c->url.user = o->url->user ? strdup(o->url->user) : NULL;
  c->url.password = o->url->password ? strdup(o->url->password) : NULL;
  c->display = ct__redis_url_display(o->url);
  if (!c->display || (o->url->host && !c->url.host) || (o->url->path && !c->url.path) ||
      (o->url->user && !c->url.user) || (o->url->password && !c->url.password))
    return CT_ENOMEM;
  return ct_loop_create(o->sup, name, &c->loop);
}

static void conn_destroy(ct__rconn_t *c) {
  ct__redis_url_free(&c->url);
  free(c->display);
  free(c);
}

/* Ending the loop closes the connection (on_cleanup, on the loop thread),
 * whether it is still running or its supervisor has stopped it. */
void ct__rconn_free(ct__rconn_t *c) {
  if (!c)
    return;
  ct_loop_stop(c->loop, -1);
  conn_destroy(c);
}

int ct__rconn_new(const ct__rconn_opts_t *o, ct__rconn_t **out) {
  ct__rconn_t *c = calloc(1, sizeof *c);
  if (!c)
    return CT_ENOMEM;
  int rc = conn_init(c, o);
  if (rc != 0) {
    conn_destroy(c);
    return rc;
  }
  c->first = call_new(NULL, NULL);
  if (!c->first) {
    ct__rconn_free(c);
    return CT_ENOMEM;
  }
  ct__rcall_t *first = c->first;
  rc = ct_loop_call(c->loop, on_loop_start, c);
  if (rc != 0) {
    call_unref(first);
    call_unref(first);
    ct__rconn_free(c);
    return rc;
  }
  rc = call_wait(first, 2 * c->connect_timeout + 5);
  if (rc != 0) {
    ct__rconn_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

int ct__rconn_command(ct__rconn_t *c, int argc, const char **argv, const size_t *argvlen,
                      ct__rconn_reply_fn on_reply_fn, void *data) {
  return ct__rconn_command_within(c, c->command_timeout, argc, argv, argvlen, on_reply_fn, data);
}

/* A command formatted, with its caller's wait; NULL if out of memory. */
static ct__rop_t *op_new(ct__rconn_t *c, double timeout, int argc, const char **argv,
                         const size_t *argvlen, ct__rconn_reply_fn on_reply_fn, void *data) {
  ct__rop_t *op = calloc(1, sizeof *op);
  if (!op)
    return NULL;
  int len = redisFormatCommandArgv(&op->cmd, argc, argv, argvlen);
  op->call = len < 0 ? NULL : call_new(on_reply_fn, data);
  if (!op->call) {
    op_free(op);
    return NULL;
  }
  op->len = (size_t)len;
  op->c = c;
  op->timeout = timeout;
  return op;
}

/* An op that never reached the loop: both counts of its call go. */
static void op_drop(ct__rop_t *op) {
  call_unref(op->call);
  call_unref(op->call);
  op_free(op);
}

int ct__rconn_command_within(ct__rconn_t *c, double timeout, int argc, const char **argv,
                             const size_t *argvlen, ct__rconn_reply_fn on_reply_fn,
                             void *data) {
  if (pthread_equal(pthread_self(), c->loop_thread))
    return CT_EDEADLK;
  ct__rop_t *op = op_new(c, timeout, argc, argv, argvlen, on_reply_fn, data);
  if (!op)
    return CT_ENOMEM;
  ct__rcall_t *call = op->call;
  int rc = ct_loop_call(c->loop, on_loop_command, op);
  if (rc != 0) {
    op_drop(op);
    return rc;
  }
  return call_wait(call, 2 * timeout + 5);
}

int ct__rconn_open(const ct__rconn_opts_t *o, ct__rconn_t **out) {
  ct__rconn_t *c = calloc(1, sizeof *c);
  if (!c)
    return CT_ENOMEM;
  int rc = conn_init(c, o);
  if (rc != 0) {
    conn_destroy(c);
    return rc;
  }
  rc = ct_loop_call(c->loop, on_loop_start, c);
  if (rc != 0) {
    ct__rconn_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

int ct__rconn_post(ct__rconn_t *c, double timeout, int argc, const char **argv,
                   const size_t *argvlen, ct__rconn_reply_fn reply, ct__rconn_done_fn done,
                   void *data) {
  ct__rop_t *op = calloc(1, sizeof *op);
  if (!op)
    return CT_ENOMEM;
  int len = redisFormatCommandArgv(&op->cmd, argc, argv, argvlen);
  if (len < 0) {
    op_free(op);
    return CT_ENOMEM;
  }
  *op = (ct__rop_t){.c = c, .done = done, .reply = reply, .data = data, .cmd = op->cmd,
                    .len = (size_t)len, .timeout = timeout};
  int rc = ct_loop_call(c->loop, on_loop_command, op);
  if (rc != 0)
    op_free(op);
  return rc;
}

/* The ops of a pipeline, posted together (freed on the loop). */
typedef struct {
  size_t n;
  ct__rop_t *ops[];
} pipeline_t;

static void on_loop_pipeline(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  pipeline_t *p = data;
  for (size_t i = 0; i < p->n; i++)
    on_loop_command(loop, ev, p->ops[i]);
  free(p);
}

int ct__rconn_pipeline(ct__rconn_t *c, double timeout, size_t n, ct__rconn_cmd_t *cmds) {
  if (pthread_equal(pthread_self(), c->loop_thread))
    return CT_EDEADLK;
  pipeline_t *p = calloc(1, sizeof *p + n * sizeof *p->ops);
  ct__rcall_t **calls = calloc(n ? n : 1, sizeof *calls);
  int rc = p && calls ? 0 : CT_ENOMEM;
  for (size_t i = 0; i < n && rc == 0; i++) {
    p->ops[i] = op_new(c, timeout, cmds[i].argc, cmds[i].argv, cmds[i].argvlen,
                       cmds[i].on_reply, cmds[i].data);
    rc = p->ops[i] ? 0 : CT_ENOMEM;
    p->n += rc == 0;
  }
  if (rc == 0) {
    for (size_t i = 0; i < n; i++)
      calls[i] = p->ops[i]->call;
    rc = ct_loop_call(c->loop, on_loop_pipeline, p);
  }
  if (rc != 0) {
    for (size_t i = 0; p && i < p->n; i++)
      op_drop(p->ops[i]);
    free(p);
    free(calls);
    return rc;
  }
  for (size_t i = 0; i < n; i++)
    cmds[i].rc = call_wait(calls[i], 2 * timeout + 5);
  free(calls);
  return 0;
}

ct_loop_t *ct__rconn_loop(ct__rconn_t *c) { return c->loop; }

bool ct__rconn_on_loop_thread(const ct__rconn_t *c) {
  return pthread_equal(pthread_self(), c->loop_thread);
}

/* ct__rconn_on_end()'s request, set on the loop thread, where it is read. */
typedef struct {
  ct__rconn_t *c;
  void (*fn)(void *);
  void *data;
} end_hook_t;

static void set_end_hook(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  end_hook_t *h = data;
  h->c->on_end = h->fn;
  h->c->on_end_data = h->data;
  free(h);
}

int ct__rconn_on_end(ct__rconn_t *c, void (*fn)(void *data), void *data) {
  end_hook_t *h = malloc(sizeof *h);
  if (!h)
    return CT_ENOMEM;
  *h = (end_hook_t){c, fn, data};
  int rc = ct_loop_call(c->loop, set_end_hook, h);
  if (rc != 0)
    free(h);
  return rc;
}

long long ct__rconn_client_id(ct__rconn_t *c) { return atomic_load(&c->client_id); }

bool ct__rconn_up(ct__rconn_t *c) { return atomic_load(&c->up); }

unsigned ct__rconn_made(ct__rconn_t *c) { return atomic_load(&c->made); }

int ct__rconn_loop_send(ct__rconn_t *c, int argc, const char **argv, const size_t *argvlen,
                        redisCallbackFn *fn, void *data) {
  if (c->state != READY)
    return CT_EAGAIN;
  return redisAsyncCommandArgv(c->ac, fn, data, argc, argv, argvlen) == REDIS_OK ? 0 : CT_EAGAIN;
}
