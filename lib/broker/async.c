/* Asynchronous producer calls: ct_broker_submit_async(), ct_broker_get_async()
 * and ct_broker_call_async() answer through a callback on a loop of the
 * caller's choice, for event-driven producers.
 *
 * A call is checked and encoded on the caller's thread by the code of the
 * blocking forms (broker.c), so its synchronous errors are theirs; the
 * caller's kwargs are copied by then. From there on it lives on the loop
 * thread of the handle's connection: everything marked L below is touched
 * there only, and nothing there ever waits, since every command is posted
 * (ct__rconn_post()) and its completion comes back to that thread. No lock
 * of its own: the handle's lock only to make this side on first use, the
 * submit script's lock only around its SHA1.
 *
 * Waiting for calls. A call's task pushes its answer (final status and
 * result) onto its done list (docs/wire-format.md), as for
 * ct_broker_call(). The calls of a handle wait on waiters, each a
 * connection made without waiting for it and up to WAIT_KEYS calls (a call
 * waits with the first waiter that has room, a new one if none has): a
 * waiter's one BLPOP names the done lists of its calls, oldest first by
 * the order the server ran their submissions (of several lists with an
 * entry, BLPOP takes the first: the oldest call's; see waiting_append()),
 * bounded at WAIT_BOUND seconds; when it returns, the list that had an
 * entry names its call, which completes with the answer the entry carried
 * (or, for an entry that is a bare status, reads its record with HGETALL
 * on the handle's connection first), and the BLPOP goes again with the
 * lists still waiting. A call that starts waiting while its waiter's
 * BLPOP blocks ends it with CLIENT UNBLOCK (the waiter's client id is
 * asked with CLIENT ID just ahead of each BLPOP),
 * once per BLPOP however many calls start meanwhile; an unblock that
 * misses (the waiter reconnected in between, or the BLPOP reached the
 * server after it) costs at most the bound. The wire format is the
 * blocking call's: any worker answers an asynchronous call.
 * Why WAIT_KEYS: a BLPOP costs Redis O(lists named), and it goes again
 * after every answer. With one waiter for all, n calls in flight cost
 * O(n) per answer, O(n^2) in all: measured here, one BLPOP naming 10,000
 * lists took 1.2-1.6 ms of Redis CPU and 570 kB of command, so that
 * 10,000 calls in flight could be answered at a few hundred a second at
 * most. Bounded, an answer costs what it costs with 256 calls in flight
 * (0.05 ms of Redis CPU, 15 kB), and the price is one
 * connection, with its loop thread, per WAIT_KEYS calls waiting, kept
 * until the handle is freed (a list per handle that workers push task ids
 * onto would need one, but is a change of the wire format for every
 * worker).
 *
 * Deadlines. A call's deadline is a timer on the loop thread, armed as the
 * call reaches it: when it fires the call completes with CT_ETIMEDOUT,
 * whatever its commands are doing (a stalled server holds it no longer),
 * and what they bring later is dropped.
 *
 * Completion. An accepted call completes exactly once: with its outcome,
 * or with CT_ESHUTDOWN when the loop thread ends (the handle freed, the
 * supervisor stopped), from an ev_cleanup watcher. Its callback's record is
 * made with the call, so completing needs no memory; it is posted to the
 * caller's loop, or, if that loop has ended (or the post finds no memory),
 * run at once on the handle's loop thread. A call is freed once it has
 * completed and has no command in flight.
 */
#include <ev.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "broker-internal.h"
#include "message.h"

#define WAIT_BOUND "1" /* seconds a BLPOP blocks at most: an unblock that
                          missed costs no more */
#define WAIT_BOUND_S 1.0
#define WAIT_KEYS 256 /* most done lists one BLPOP names: its cost in Redis,
                         paid once per answer, grows with them */

enum { SUBMIT, GET, CALL };

typedef struct ct__bwaiter ct__bwaiter_t;

/* What a callback gets, made with its call and posted to the caller's
 * loop, which frees it. */
typedef struct {
  int kind;
  int rc;
  union {
    ct_broker_submit_cb submit;
    ct_broker_get_cb get;
    ct_broker_call_cb call;
  } cb;
  void *data;
  char id[CT_BROKER_ID_SIZE];
  ct_broker_info_t info; /* GET: its result is dropped after the callback */
} answer_t;

struct ct__basync_call {
  ct__basync_t *a;
  ct__basync_call_t *prev, *next;   /* L: in a->calls */
  ct__basync_call_t *wprev, *wnext; /* L: in w->waiting while waiting */
  int kind;
  ct_loop_t *loop;       /* the caller's */
  answer_t *answer;      /* L: NULL once posted */
  bool in_flight;        /* L: a command of the call is posted */
  bool waiting;          /* L: in w->waiting */
  ct__bwaiter_t *w;      /* L: its waiter while waiting */
  bool timed;            /* L: timer is armed */
  bool noscript, reloaded; /* L: the server did not know the script; sent again */
  double end;            /* CALL: its deadline, ct_now() time (INFINITY: none) */
  ev_timer timer;        /* L */
  char id[CT_BROKER_ID_SIZE];
  char *key;             /* GET: the record's key; CALL: the done list's */
  ct__bscript_t *script; /* SUBMIT, CALL: the submit script and its command */
  ct__rconn_reply_fn fn;
  int argc;              /* its arguments after the script's own two */
  const char **argv;
  size_t *argvlen;
  ct__bget_t get;        /* the record's reading, into info */
  ct_broker_info_t info; /* L */
};

/* A waiter: a connection and the calls, WAIT_KEYS at most, whose done
 * lists its BLPOP names. */
struct ct__bwaiter {
  ct__basync_t *a;
  ct__rconn_t *conn;           /* L: made on first wait; read by free once ended */
  ct__basync_call_t *waiting;  /* L: calls waiting for their done list, oldest first */
  ct__basync_call_t *waiting_tail; /* L: the newest of them */
  size_t nwaiting;             /* L */
  bool blocked;                /* L: a BLPOP is in flight */
  unsigned gen;                /* L: which BLPOP */
  long long blocked_id;        /* L: the waiter's client id for it; 0: unknown */
  bool unblock_wanted;         /* L: a call started waiting since it was sent */
  bool unblock_sent;           /* L */
};

struct ct__basync {
  ct_broker_t *b;
  ct_loop_t *loop;             /* the handle connection's */
  struct ev_loop *ev;          /* L */
  ev_cleanup cleanup;          /* L */
  ct__basync_call_t *calls;    /* L: every call not freed */
  ct__bwaiter_t **waiters;     /* L: made as needed, kept until free; read by free once ended */
  size_t nwaiters;             /* L */
};

/* A reply of a waiter, carried from its loop thread to the handle's. */
typedef struct {
  ct__bwaiter_t *w;
  unsigned gen;
  bool pop;            /* BLPOP's, else CLIENT ID's */
  int rc;
  long long client_id; /* CLIENT ID */
  char *key;           /* BLPOP: the list that had an entry */
  bool answered;       /* BLPOP: its entry was the answer, in info */
  ct_broker_info_t info;
} wake_t;

static void complete(ct__basync_call_t *call, int rc);
static void kick(ct__bwaiter_t *w);

/* --- the caller's side ------------------------------------------------ */

static void answer_run(answer_t *x) {
  switch (x->kind) {
  case SUBMIT:
    x->cb.submit(x->rc, x->rc == 0 ? x->id : NULL, x->data);
    break;
  case GET:
    x->cb.get(x->rc, x->rc == 0 ? &x->info : NULL, x->data);
    break;
  default:
    x->cb.call(x->rc, x->rc == 0 ? x->info.result : NULL, x->data);
  }
  json_decref(x->info.result);
  free(x);
}

static void on_answer(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  answer_run(data);
}

/* The submission's command is no longer needed (it may be large). */
static void script_forget(ct__basync_call_t *call) {
  free(call->argv); /* with the arguments, in the same block */
  free(call->argvlen);
  call->argv = NULL;
  call->argvlen = NULL;
}

static void call_free(ct__basync_call_t *call) {
  free(call->answer);
  json_decref(call->info.result);
  free(call->key);
  script_forget(call);
  free(call);
}

/* A call of `kind` and its answer, or NULL. */
static ct__basync_call_t *call_new(ct_broker_t *b, int kind, ct_loop_t *loop, void *data) {
  ct__basync_call_t *call = calloc(1, sizeof *call);
  answer_t *x = calloc(1, sizeof *x);
  if (!call || !x) {
    free(call);
    free(x);
    return NULL;
  }
  if (!loop)
    ct_loop_get(b->sup, NULL, &loop);
  *x = (answer_t){.kind = kind, .data = data};
  call->kind = kind;
  call->loop = loop;
  call->answer = x;
  call->end = INFINITY;
  call->get = (ct__bget_t){b, call->id, &call->info};
  return call;
}

int ct__basync_script(ct__basync_call_t *call, ct__bscript_t *s, int argc, const char **argv,
                      const size_t *argvlen, ct__rconn_reply_fn fn, const char *id) {
  size_t n = (size_t)argc - 2, bytes = 0;
  for (size_t i = 0; i < n; i++)
    bytes += argvlen[i + 2];
  /* The pointers, then the arguments' bytes, in one block. */
  call->argv = malloc(n * sizeof *call->argv + bytes + 1);
  call->argvlen = malloc(n * sizeof *call->argvlen);
  if (!call->argv || !call->argvlen)
    return CT_ENOMEM;
  char *p = (char *)(call->argv + n);
  for (size_t i = 0; i < n; i++) {
    memcpy(p, argv[i + 2], argvlen[i + 2]);
    call->argv[i] = p;
    call->argvlen[i] = argvlen[i + 2];
    p += argvlen[i + 2];
  }
  call->argc = (int)n;
  call->script = s;
  call->fn = fn;
  memcpy(call->id, id, CT_BROKER_ID_SIZE);
  return 0;
}

/* --- commands of a call, on the loop thread --------------------------- */

static void call_unlink(ct__basync_call_t *call) {
  ct__basync_t *a = call->a;
  if (call->prev)
    call->prev->next = call->next;
  else
    a->calls = call->next;
  if (call->next)
    call->next->prev = call->prev;
}

static void waiting_remove(ct__basync_call_t *call) {
  ct__bwaiter_t *w = call->w;
  if (!call->waiting)
    return;
  if (call->wprev)
    call->wprev->wnext = call->wnext;
  else
    w->waiting = call->wnext;
  if (call->wnext)
    call->wnext->wprev = call->wprev;
  else
    w->waiting_tail = call->wprev;
  call->waiting = false;
  w->nwaiting--;
}

/* A waiter with room for one more call, made if none has; NULL if out of
 * memory. */
static ct__bwaiter_t *waiter_with_room(ct__basync_t *a) {
  for (size_t i = 0; i < a->nwaiters; i++)
    if (a->waiters[i]->nwaiting < WAIT_KEYS)
      return a->waiters[i];
  ct__bwaiter_t **more = realloc(a->waiters, (a->nwaiters + 1) * sizeof *more);
  if (!more)
    return NULL;
  a->waiters = more;
  ct__bwaiter_t *w = calloc(1, sizeof *w);
  if (w) {
    w->a = a;
    a->waiters[a->nwaiters++] = w;
  }
  return w;
}

/* The call waits with a waiter that has room, the newest at the end.
 * Calls join as their submissions' replies come, in the order the server
 * ran the submissions, and BLPOP takes the first of its lists that has an
 * entry: of the answers a BLPOP finds waiting, the oldest call's, nearest
 * its deadline. Oldest by the server's order, not by the calls': a
 * submission sent again after NOSCRIPT runs after those sent meanwhile,
 * and ordering by call could not hold anyway while a BLPOP sent before
 * an older call joined still blocks (it names the calls that waited when
 * it was sent: a prefix of the server's order, never of the calls').
 * Returns the waiter, or NULL if out of memory. */
static ct__bwaiter_t *waiting_append(ct__basync_call_t *call) {
  ct__bwaiter_t *w = waiter_with_room(call->a);
  if (!w)
    return NULL;
  call->w = w;
  call->waiting = true;
  call->wnext = NULL;
  call->wprev = w->waiting_tail;
  if (w->waiting_tail)
    w->waiting_tail->wnext = call;
  else
    w->waiting = call;
  w->waiting_tail = call;
  w->nwaiting++;
  return w;
}

static void maybe_free(ct__basync_call_t *call) {
  if (call->answer || call->in_flight)
    return;
  call_unlink(call);
  call_free(call);
}

static int sha_keep(const redisReply *r, void *data) {
  ct__bscript_t *s = data;
  if (r->type != REDIS_REPLY_STRING || r->len != 40)
    return CT_EINVAL;
  pthread_mutex_lock(&s->lock);
  memcpy(s->sha, r->str, 41);
  pthread_mutex_unlock(&s->lock);
  return 0;
}

static int script_reply(const redisReply *r, void *data) {
  ct__basync_call_t *call = data;
  call->noscript = r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
  return call->noscript ? CT_EINVAL : call->fn(r, call->id);
}

static void send_script(ct__basync_call_t *call);
static void send_get(ct__basync_call_t *call);

/* The submission's reply: a submit is done; a call starts waiting for its
 * done list. A server that forgot the script has run nothing: the command
 * goes again with the script's text. */
static void script_done(int rc, void *data) {
  ct__basync_call_t *call = data;
  call->in_flight = false;
  if (call->noscript && !call->reloaded && call->answer) {
    call->reloaded = true;
    send_script(call);
    maybe_free(call);
    return;
  }
  script_forget(call);
  if (rc != 0 || call->kind == SUBMIT || !call->answer) {
    complete(call, rc);
    maybe_free(call);
    return;
  }
  call->key = ct__broker_key(call->a->b, "done:", call->id);
  ct__bwaiter_t *w = call->key ? waiting_append(call) : NULL;
  if (!w) {
    complete(call, CT_ENOMEM);
    maybe_free(call);
    return;
  }
  kick(w);
}

/* EVALSHA while the SHA1 is known (and not refused); else EVAL with the
 * text, which the server keeps too, and SCRIPT LOAD for the SHA1. */
static void send_script(ct__basync_call_t *call) {
  ct__basync_t *a = call->a;
  char sha[41];
  pthread_mutex_lock(&call->script->lock);
  memcpy(sha, call->script->sha, sizeof sha);
  pthread_mutex_unlock(&call->script->lock);
  bool text = !sha[0] || call->reloaded;
  int argc = call->argc + 2;
  const char **argv = malloc((size_t)argc * sizeof *argv);
  size_t *argvlen = malloc((size_t)argc * sizeof *argvlen);
  int rc = argv && argvlen ? 0 : CT_ENOMEM;
  if (rc == 0) {
    argv[0] = text ? "EVAL" : "EVALSHA";
    argv[1] = text ? call->script->text : sha;
    argvlen[0] = strlen(argv[0]);
    argvlen[1] = strlen(argv[1]);
    memcpy(argv + 2, call->argv, (size_t)call->argc * sizeof *argv);
    memcpy(argvlen + 2, call->argvlen, (size_t)call->argc * sizeof *argvlen);
    if (text && !sha[0]) {
      const char *load[] = {"SCRIPT", "LOAD", call->script->text};
      ct__rconn_post(a->b->conn, a->b->command_timeout, 3, load, NULL, sha_keep, NULL,
                     call->script);
    }
    rc = ct__rconn_post(a->b->conn, a->b->command_timeout, argc, argv, argvlen, script_reply,
                        script_done, call);
  }
  free(argv);
  free(argvlen);
  call->in_flight = rc == 0;
  if (rc != 0)
    complete(call, rc);
}

static int get_reply(const redisReply *r, void *data) {
  ct__basync_call_t *call = data;
  return ct__broker_get_reply(r, &call->get);
}

static void get_done(int rc, void *data) {
  ct__basync_call_t *call = data;
  call->in_flight = false;
  complete(call, rc);
  maybe_free(call);
}

static void send_get(ct__basync_call_t *call) {
  ct__basync_t *a = call->a;
  memset(&call->info, 0, sizeof call->info);
  char *key = call->kind == GET ? call->key : ct__broker_key(a->b, "task:", call->id);
  const char *argv[] = {"HGETALL", key};
  int rc = key ? ct__rconn_post(a->b->conn, a->b->command_timeout, 2, argv, NULL, get_reply,
                                get_done, call)
               : CT_ENOMEM;
  if (key != call->key)
    free(key);
  call->in_flight = rc == 0;
  if (rc != 0)
    complete(call, rc);
}

/* Answer the call once, and post the answer to the caller's loop. */
static void complete(ct__basync_call_t *call, int rc) {
  answer_t *x = call->answer;
  if (!x)
    return;
  call->answer = NULL;
  waiting_remove(call);
  if (call->timed)
    ev_timer_stop(call->a->ev, &call->timer);
  call->timed = false;
  x->rc = rc;
  if (rc == 0 && call->kind == SUBMIT)
    memcpy(x->id, call->id, CT_BROKER_ID_SIZE);
  if (rc == 0 && call->kind == CALL)
    rc = x->rc = ct__bcall_outcome(&call->info);
  if (rc == 0 && call->kind != SUBMIT) {
    x->info = call->info; /* the result moves to the answer */
    call->info.result = NULL;
  }
  if (ct_loop_call(call->loop, on_answer, x) != 0)
    answer_run(x); /* that loop has ended: here, rather than never */
}

static void on_deadline(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__basync_call_t *call = w->data;
  call->timed = false;
  complete(call, CT_ETIMEDOUT);
  maybe_free(call);
}

/* The call reaches the loop thread. */
static void on_start(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ct__basync_call_t *call = data;
  ct__basync_t *a = call->a;
  call->next = a->calls;
  if (call->next)
    call->next->prev = call;
  a->calls = call;
  if (isfinite(call->end)) {
    ev_now_update(ev); /* so that the timer cannot fire before the deadline */
    ev_timer_init(&call->timer, on_deadline, fmax(0, call->end - ct_now()), 0.0);
    call->timer.data = call;
    ev_timer_start(ev, &call->timer);
    call->timed = true;
  }
  if (call->kind == GET)
    send_get(call);
  else
    send_script(call);
  maybe_free(call);
}

/* --- the waiter ------------------------------------------------------- */

static void fail_waiting(ct__bwaiter_t *w, int rc) {
  while (w->waiting) {
    ct__basync_call_t *call = w->waiting;
    complete(call, rc);
    maybe_free(call);
  }
}

static void on_wake(ct_loop_t *loop, struct ev_loop *ev, void *data);

/* A waiter's reply goes to the handle's loop thread (if it has ended, its
 * cleanup has answered every call). */
static void wake_post(int rc, void *data) {
  wake_t *m = data;
  m->rc = rc;
  if (ct_loop_call(m->w->a->loop, on_wake, m) != 0) {
    json_decref(m->info.result);
    free(m->key);
    free(m);
  }
}

static int id_reply(const redisReply *r, void *data) {
  wake_t *m = data;
  m->client_id = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  return 0;
}

static int pop_reply(const redisReply *r, void *data) {
  wake_t *m = data;
  if (r->type == REDIS_REPLY_NIL)
    return CT_ETIMEDOUT; /* the bound, or an unblock */
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
      r->element[0]->type != REDIS_REPLY_STRING) {
    ct__broker_log(m->w->a->b, CT_LOG_ERROR, "asynchronous calls: BLPOP refused: %s",
                   r->type == REDIS_REPLY_ERROR ? r->str : "an odd reply");
    return CT_EINVAL;
  }
  m->key = strndup(r->element[0]->str, r->element[0]->len);
  const redisReply *v = r->element[1];
  /* An entry without the answer (or no memory to decode it): the record
   * has it. */
  m->answered = m->key && v->type == REDIS_REPLY_STRING &&
                ct__bdone_decode(v->str, v->len, &m->info) == 0;
  return m->key ? 0 : CT_ENOMEM;
}

static void send_unblock(ct__bwaiter_t *w) {
  if (!w->blocked || !w->blocked_id || !w->unblock_wanted || w->unblock_sent)
    return;
  char id[24];
  snprintf(id, sizeof id, "%lld", w->blocked_id);
  const char *argv[] = {"CLIENT", "UNBLOCK", id};
  ct_broker_t *b = w->a->b;
  w->unblock_sent = ct__rconn_post(b->conn, b->command_timeout, 3, argv, NULL, NULL, NULL,
                                   NULL) == 0;
}

/* The call whose done list had an entry completes with the answer the
 * entry carried, or else reads its record. */
static void popped(ct__bwaiter_t *w, wake_t *m) {
  for (ct__basync_call_t *call = w->waiting; call; call = call->wnext)
    if (strcmp(call->key, m->key) == 0) {
      waiting_remove(call);
      if (m->answered) {
        call->info = m->info; /* the result moves to the call */
        m->info.result = NULL;
        complete(call, 0);
      } else {
        send_get(call);
      }
      maybe_free(call);
      return;
    }
  /* A call that has timed out: its entry is dropped. */
}

static void on_wake(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  wake_t *m = data;
  ct__bwaiter_t *w = m->w;
  if (m->gen == w->gen && w->blocked) {
    if (!m->pop) {
      w->blocked_id = m->client_id;
      send_unblock(w);
    } else {
      w->blocked = false;
      if (m->key)
        popped(w, m);
      if (m->rc == CT_ETIMEDOUT || m->rc == 0)
        kick(w);
      else
        fail_waiting(w, m->rc); /* the waiter's loop ended, a refusal, no memory */
    }
  }
  json_decref(m->info.result);
  free(m->key);
  free(m);
}

static int waiter_open(ct__bwaiter_t *w) {
  if (w->conn)
    return 0;
  ct_broker_t *b = w->a->b;
  ct__rconn_opts_t co = {b->sup, &b->url, b->connect_timeout, b->command_timeout, b->log,
                         b->log_data};
  return ct__rconn_open(&co, &w->conn);
}

/* BLPOP on the done lists of every call waiting, after CLIENT ID. */
static int send_blpop(ct__bwaiter_t *w) {
  size_t n = w->nwaiting + 2, i = 0;
  const char **argv = malloc(n * sizeof *argv);
  wake_t *idm = calloc(1, sizeof *idm), *pop = calloc(1, sizeof *pop);
  int rc = argv && idm && pop ? waiter_open(w) : CT_ENOMEM;
  if (rc == 0) {
    argv[i++] = "BLPOP";
    for (ct__basync_call_t *call = w->waiting; call; call = call->wnext)
      argv[i++] = call->key;
    argv[i++] = WAIT_BOUND;
    w->gen++;
    *idm = (wake_t){.w = w, .gen = w->gen};
    *pop = (wake_t){.w = w, .gen = w->gen, .pop = true};
    const char *id_argv[] = {"CLIENT", "ID"};
    double timeout = w->a->b->command_timeout;
    if (ct__rconn_post(w->conn, timeout, 2, id_argv, NULL, id_reply, wake_post, idm) != 0)
      free(idm); /* no unblock for this one: the bound serves */
    idm = NULL;
    rc = ct__rconn_post(w->conn, timeout + WAIT_BOUND_S, (int)n, argv, NULL, pop_reply,
                        wake_post, pop);
  }
  if (rc == 0)
    pop = NULL;
  free(idm);
  free(pop);
  free(argv);
  return rc;
}

/* A call has started waiting, or a BLPOP has returned: block again on
 * what waits now, or, while a BLPOP blocks, have it end. */
static void kick(ct__bwaiter_t *w) {
  if (!w->waiting)
    return;
  if (w->blocked) {
    w->unblock_wanted = true;
    send_unblock(w);
    return;
  }
  w->blocked = true;
  w->blocked_id = 0;
  w->unblock_wanted = w->unblock_sent = false;
  int rc = send_blpop(w);
  if (rc != 0) {
    w->blocked = false;
    fail_waiting(w, rc);
  }
}

/* --- the handle's side ------------------------------------------------ */

/* The loop ends: every call still here is answered. Its commands in
 * flight are answered by the connection's own cleanup, which frees them. */
static void on_cleanup(struct ev_loop *ev, ev_cleanup *w, int revents) {
  (void)ev;
  (void)revents;
  ct__basync_t *a = w->data;
  for (ct__basync_call_t *call = a->calls, *next; call; call = next) {
    next = call->next;
    complete(call, CT_ESHUTDOWN);
    maybe_free(call);
  }
}

static void on_init(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ct__basync_t *a = data;
  a->ev = ev;
  ev_cleanup_init(&a->cleanup, on_cleanup);
  a->cleanup.data = a;
  ev_cleanup_start(ev, &a->cleanup);
}

/* The handle's asynchronous side, made on first use. */
static int async_of(ct_broker_t *b, ct__basync_t **out) {
  int rc = 0;
  pthread_mutex_lock(&b->lock);
  if (!b->async) {
    ct__basync_t *a = calloc(1, sizeof *a);
    rc = a ? 0 : CT_ENOMEM;
    if (a) {
      a->b = b;
      a->loop = ct__rconn_loop(b->conn);
      rc = ct_loop_call(a->loop, on_init, a);
    }
    if (rc == 0)
      b->async = a;
    else
      free(a);
  }
  *out = b->async;
  pthread_mutex_unlock(&b->lock);
  return rc;
}

/* Hand a checked call to the loop thread, or free it. */
static int call_start(ct_broker_t *b, ct__basync_call_t *call, int rc) {
  if (rc == 0)
    rc = async_of(b, &call->a);
  if (rc == 0)
    rc = ct_loop_call(call->a->loop, on_start, call);
  if (rc != 0)
    call_free(call);
  return rc;
}

void ct__basync_free(ct__basync_t *a) {
  if (!a)
    return;
  for (size_t i = 0; i < a->nwaiters; i++)
    ct__rconn_free(a->waiters[i]->conn); /* its replies find the loop thread ended */
  for (size_t i = 0; i < a->nwaiters; i++)
    free(a->waiters[i]);
  free(a->waiters);
  free(a);
}

/* --- the calls -------------------------------------------------------- */

int ct_broker_submit_async(ct_broker_t *b, const char *name, const json_t *kwargs,
                           const ct_broker_submit_opts_t *opts, ct_loop_t *loop,
                           ct_broker_submit_cb cb, void *data) {
  if (!b || !cb)
    return CT_EINVAL;
  ct__basync_call_t *call = call_new(b, SUBMIT, loop, data);
  if (!call)
    return CT_ENOMEM;
  call->answer->cb.submit = cb;
  return call_start(b, call, ct__broker_submit_by(b, name, kwargs, opts, 0, 0, call, NULL, NULL));
}

int ct_broker_get_async(ct_broker_t *b, const char *id, ct_loop_t *loop, ct_broker_get_cb cb,
                        void *data) {
  if (!b || !cb)
    return CT_EINVAL;
  ct__basync_call_t *call = call_new(b, GET, loop, data);
  if (!call)
    return CT_ENOMEM;
  call->answer->cb.get = cb;
  int rc = ct__broker_record_key(b, id, &call->key);
  if (rc == 0)
    memcpy(call->id, id, CT_BROKER_ID_SIZE);
  return call_start(b, call, rc);
}

int ct_broker_call_async(ct_broker_t *b, const char *name, const json_t *kwargs,
                         const ct_broker_submit_opts_t *opts, double timeout, ct_loop_t *loop,
                         ct_broker_call_cb cb, void *data) {
  if (!b || !cb || !(timeout > 0)) /* INFINITY waits for ever */
    return CT_EINVAL;
  ct__basync_call_t *call = call_new(b, CALL, loop, data);
  if (!call)
    return CT_ENOMEM;
  call->answer->cb.call = cb;
  call->end = ct_now() + timeout;
  return call_start(b, call,
                    ct__broker_submit_by(b, name, kwargs, opts, ct__broker_deadline_ms(timeout),
                                         0, call, NULL, NULL));
}
