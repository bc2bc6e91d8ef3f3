/* The broker handle, producer side: submit a named task, read its record.
 *
 * A handle is a connection (conn.c) plus the key prefix of its queue,
 * `<ns>:{<queue>}:`: the braces make the queue name the hash tag of every
 * key, so a cluster client finds them all in one slot. The stream entry's
 * fields come from the codec (message.c); the check that the name is
 * registered, the idempotency key and the writes (task record, and the
 * stream entry, or for a delay or ETA ahead the delayed set's member) are
 * one Lua script, so a refused task leaves nothing behind and an accepted
 * one is whole; once the script has found a name registered, the next
 * immediate submissions of it are the same writes in a MULTI/EXEC, which
 * costs Redis less (submit-tx.c). The handle holds no state of its own
 * after creation but idle connections for calls and the names it has
 * found registered: every call is one command on the connection,
 * and the connection serializes them; a call's commands are each bounded
 * by what is left of its own deadline. A call waits on a blocking
 * connection of its own (sync-conn.c, kept idle for the next call) with a
 * blocking read of the task's done list, whose entry carries the answer
 * (status and result): the record is read only for an entry that does not
 * (docs/wire-format.md) or when the read times out. Once the name is
 * known registered, the call's submission goes on that connection too,
 * the read behind it in the same write: no thread wakes for it but the
 * caller's, and the read costs no round trip of its own.
 * Many tasks that share their options go in one script call
 * (ct_broker_submit_many()).
 * The asynchronous calls (async.c, made on first use) send what
 * ct__broker_submit_by() checked and encoded.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/cond.h"
#include "base/log.h"
#include "base/opts.h"
#include "base/utf8.h"
#include "broker-internal.h"
#include "message.h"
#include "metrics.h"
#include "script.h"

#define DEFAULT_TIMEOUT 5.0     /* connect and command timeouts */
#define DEFAULT_TTL 86400.0     /* aio-task's result TTL: a day */
#define TTL_MAX 1e9             /* longest TTL (over 30 years): EXPIRE fails far
                                   beyond it, after the script wrote the record */
#define NAME_PART_MAX 200       /* longest namespace or queue name */
#define DEFAULT_MAX_PAYLOAD (1u << 20) /* bytes of kwargs text a submission may have */
#define CALL_GRACE 0.25         /* seconds a call's command may take past its end */

/* Checks the names set and the idempotency key, writes the record
 * (expiring) and the entry, into its stream or, delayed, into the delayed
 * set (waking idle workers through the wake stream, so that they arm their
 * timers for it). KEYS: names set, stream, record, delayed set, wake
 * stream, and the idempotency key if there is one. ARGV: name, created
 * (ms), ttl (s), seconds to keep the record and the key, due (ms; 0: now),
 * delayed-set member, task id, then the entry's fields and values. Returns
 * {1}, {0} for an unknown name, or {2, id} for a key already used. */
static const char submit_script[] =
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return {0} end\n"
    "if KEYS[6] then\n"
    "  local first = redis.call('GET', KEYS[6])\n"
    "  if first then return {2, first} end\n"
    "  redis.call('SET', KEYS[6], ARGV[7], 'EX', ARGV[4])\n"
    "end\n"
    "local delayed = ARGV[5] ~= '0'\n"
    "redis.call('HSET', KEYS[3], 'status', delayed and 'delayed' or 'queued', 'name', ARGV[1],"
    " 'created', ARGV[2], 'attempts', '0', 'ttl', ARGV[3])\n"
    "redis.call('EXPIRE', KEYS[3], ARGV[4])\n"
    "if delayed then\n"
    "  redis.call('HSET', KEYS[3], 'due', ARGV[5])\n"
    "  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])\n"
    "  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 100, '*', 'due', ARGV[5])\n"
    "else\n"
    "  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 8))\n"
    "end\n"
    "return {1}\n";
static ct__bscript_t submit = CT__BSCRIPT_INIT(submit_script);

const char *const ct__blevel_names[CT__BLEVELS] = {"critical", "high", "normal", "low"};

/* The stream of a priority's class: the supervisor's classes. */
static const char *level_of(int priority) {
  if (priority == CT_PRIORITY_CRITICAL)
    return ct__blevel_names[0];
  if (priority <= CT_PRIORITY_HIGH)
    return ct__blevel_names[1];
  return ct__blevel_names[priority <= CT_PRIORITY_NORMAL ? 2 : 3];
}

/* A namespace or queue name: printable, no space or brace (they would break
 * the hash tag or the key's reading), UTF-8 (it is shown in JSON and in
 * metrics labels). */
static bool name_part_ok(const char *s) {
  size_t len = strlen(s);
  if (len == 0 || len > NAME_PART_MAX || !ct__utf8_valid(s, len))
    return false;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f || s[i] == '{' || s[i] == '}')
      return false;
  return true;
}

/* Each bad field is logged through the struct's own log, once its size
 * says the struct is the one this library knows. */
static int check_opts(const ct_broker_opts_t *o) {
  ct__opts_check_t c = {"ct_broker_opts_t", "ct_broker_new", NULL, NULL, 0};
  if (!o)
    return CT_EINVAL;
  if (o->size != sizeof(ct_broker_opts_t))
    return ct__opts_bad(&c, "size", "%zu is not a size this library knows (%zu)", o->size,
                        sizeof(ct_broker_opts_t));
  c.log = o->log;
  c.log_data = o->log_data;
  if (!o->url)
    ct__opts_bad(&c, "url", "NULL: a Redis URL is required");
  if (o->ns && !name_part_ok(o->ns))
    ct__opts_bad(&c, "ns", "1 to %d printable UTF-8 characters, no space or brace",
                 NAME_PART_MAX);
  if (o->queue && !name_part_ok(o->queue))
    ct__opts_bad(&c, "queue", "1 to %d printable UTF-8 characters, no space or brace",
                 NAME_PART_MAX);
  ct__opts_seconds(&c, "connect_timeout", o->connect_timeout, CT__SEC_LIMIT);
  ct__opts_seconds(&c, "command_timeout", o->command_timeout, CT__SEC_LIMIT);
  return c.rc;
}

static int make_prefix(ct_broker_t *b, const ct_broker_opts_t *o) {
  const char *ns = o->ns ? o->ns : "ctasker";
  const char *queue = o->queue ? o->queue : "default";
  if (asprintf(&b->prefix, "%s:{%s}:", ns, queue) < 0) {
    b->prefix = NULL;
    return CT_ENOMEM;
  }
  return 0;
}

/* A timeout option: 0 is the default, a huge one is capped at a day (a
 * deadline must still fire). */
static double timeout_or_default(double t) {
  return t == 0 ? DEFAULT_TIMEOUT : fmin(t, DEFAULT_TTL);
}

static void on_handle_end(void *data);

int ct_broker_new(ct_supervisor_t *sup, const ct_broker_opts_t *opts, ct_broker_t **out) {
  if (!out)
    return CT_EINVAL;
  *out = NULL;
  int rc = check_opts(opts);
  ct__redis_url_t url;
  if (rc == 0)
    rc = ct__redis_url_parse(opts->url, &url);
  if (rc != 0)
    return rc;
  ct_broker_t *b = calloc(1, sizeof *b);
  if (!b || pthread_mutex_init(&b->lock, NULL) != 0) {
    free(b);
    ct__redis_url_free(&url);
    return CT_ENOMEM;
  }
  if (ct__cond_init_monotonic(&b->ended_cond) != 0) {
    pthread_mutex_destroy(&b->lock);
    free(b);
    ct__redis_url_free(&url);
    return CT_ENOMEM;
  }
  b->url = url; /* owned by b from here */
  b->sup = sup ? sup : ct_supervisor_default();
  b->connect_timeout = timeout_or_default(opts->connect_timeout);
  b->command_timeout = timeout_or_default(opts->command_timeout);
  b->log = opts->log;
  b->log_data = opts->log_data;
  rc = b->sup ? make_prefix(b, opts) : CT_EINVAL;
  if (rc == 0) {
    ct__rconn_opts_t co = {b->sup, &b->url, b->connect_timeout, b->command_timeout, b->log,
                           b->log_data};
    rc = ct__rconn_new(&co, &b->conn);
  }
  if (rc == 0)
    rc = ct__rconn_on_end(b->conn, on_handle_end, b);
  if (rc != 0) {
    ct_broker_free(b);
    return rc;
  }
  *out = b;
  return 0;
}

void ct_broker_free(ct_broker_t *b) {
  if (!b)
    return;
  ct__bworker_free(b->worker);
  ct__bmetrics_free(b->metrics);
  while (b->rpc_idle) {
    ct__brpc_t *r = b->rpc_idle;
    b->rpc_idle = r->next;
    ct__rsync_free(r->conn);
    free(r);
  }
  ct__rconn_free(b->conn);
  ct__basync_free(b->async); /* after its calls were answered as the loop ended */
  while (b->handlers) {
    ct__bhandler_t *h = b->handlers;
    b->handlers = h->next;
    free(h);
  }
  ct__bprocs_free(b->procs); /* their handlers have ended with the worker */
  ct__bloops_free(b->loops);
  ct__bknown_free(b);
  pthread_cond_destroy(&b->ended_cond);
  pthread_mutex_destroy(&b->lock);
  ct__redis_url_free(&b->url);
  free(b->prefix);
  free(b);
}

char *ct__broker_key(const ct_broker_t *b, const char *a, const char *c) {
  char *k = NULL;
  return asprintf(&k, "%s%s%s", b->prefix, a, c) < 0 ? NULL : k;
}

void ct__broker_log(const ct_broker_t *b, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ct__vlog(b->log, b->log_data, level, fmt, ap);
  va_end(ap);
}

int64_t ct__broker_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int check_submit(const ct_broker_t *b, const char *name, const json_t *kwargs,
                        const ct_broker_submit_opts_t *o) {
  ct__opts_check_t c = {"ct_broker_submit_opts_t", "ct_broker_submit", b->log, b->log_data, 0};
  if (!name || !ct__bmsg_name_ok(name, strlen(name)) || (kwargs && !json_is_object(kwargs)))
    return CT_EINVAL;
  ct__opts_int(&c, "priority", o->priority, CT_PRIORITY_CRITICAL, CT_PRIORITY_MAX);
  ct__opts_seconds(&c, "result_ttl", o->result_ttl, CT__SEC_DELAY);
  ct__opts_seconds(&c, "delay", o->delay, CT__SEC_DELAY);
  ct__opts_seconds(&c, "eta", o->eta, CT__SEC_DELAY);
  /* A record must be able to expire after its task runs (due_of()). */
  if (isfinite(o->delay) && o->delay > TTL_MAX)
    ct__opts_bad(&c, "delay", "over 1e9 seconds (about 31 years)");
  if (isfinite(o->eta) && o->eta > (double)ct__broker_unix_ms() / 1000 + TTL_MAX)
    ct__opts_bad(&c, "eta", "over 1e9 seconds (about 31 years) from now");
  if (o->delay > 0 && o->eta > 0)
    ct__opts_bad(&c, "eta", "give a delay or an eta, not both");
  if (o->key && !ct__bmsg_name_ok(o->key, strlen(o->key)))
    ct__opts_bad(&c, "key", "empty, over 200 bytes or with control characters");
  ct__opts_int(&c, "max_attempts", o->max_attempts, 0, INT_MAX);
  ct__opts_seconds(&c, "backoff", o->backoff, CT__SEC_DELAY);
  ct__opts_seconds(&c, "backoff_max", o->backoff_max, CT__SEC_DELAY);
  ct__opts_seconds(&c, "timeout", o->timeout, CT__SEC_DELAY);
  return c.rc;
}

/* The caller's options over the defaults; an older, shorter struct (the
 * first one published ended at result_ttl) keeps the defaults of the rest. */
static int submit_opts(const ct_broker_t *b, const ct_broker_submit_opts_t *in,
                       ct_broker_submit_opts_t *o) {
  ct__opts_check_t c = {"ct_broker_submit_opts_t", "ct_broker_submit", b->log, b->log_data, 0};
  *o = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  return ct__opts_read(&c, o, sizeof *o, in, offsetof(ct_broker_submit_opts_t, delay));
}

/* data: the new task's id, replaced by the first task's for a used key. */
static int submit_reply(const redisReply *r, void *data) {
  char *id = data;
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_INTEGER)
    return CT_EINVAL; /* a script error: the server is not one we can use */
  long long code = r->element[0]->integer;
  if (code == 2 && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING &&
      ct__bmsg_id_ok(r->element[1]->str, r->element[1]->len)) {
    memcpy(id, r->element[1]->str, CT_BROKER_ID_SIZE); /* with its NUL */
    return 0;
  }
  return code == 1 ? 0 : code == 0 ? CT_ENOENT : CT_EINVAL;
}

/* A submission's times and where it goes. */
typedef struct {
  const char *level; /* its stream's level name */
  double ttl;        /* seconds, from the end */
  int64_t due_ms;    /* Unix ms it may run from; 0: now */
  size_t max_payload;
  const char *key;   /* idempotency key, or NULL */
  double wait;       /* seconds for the reply */
  ct__basync_call_t *post; /* NULL: wait for the reply here; else async.c's */
  ct__bride_t *ride;       /* a blocking call's, or NULL */
} submission_t;

/* The delayed set's member for message m: a JSON array of the level's
 * name, then the entry's fields and values, so that the promotion can write
 * the entry without reading anything else. NULL if out of memory. */
static char *delayed_member(const ct__bmsg_wire_t *w, const char *level) {
  json_t *a = json_array();
  int bad = !a || json_array_append_new(a, json_string(level));
  for (size_t i = 0; !bad && i < w->argc; i++)
    bad = json_array_append_new(a, json_stringn(w->argv[i], w->argvlen[i]));
  char *text = bad ? NULL : json_dumps(a, JSON_COMPACT);
  json_decref(a);
  return text;
}

#define SUBMIT_KEYS 6
#define SUBMIT_ARGS 7

static int ride_connect(ct_broker_t *b, ct__bride_t *ride, double within);
static double call_wait(const ct_broker_t *b, double end);

/* A call's blocking read of the task's done list (argv; secs holds its
 * seconds) for `left` seconds, at least 1 ms and at most a day (a wait
 * for ever goes on a day at a time). Returns those seconds. */
static double done_read_args(const char *argv[3], char secs[32], const char *done,
                             double left) {
  left = fmin(fmax(left, 0.001), DEFAULT_TTL);
  snprintf(secs, 32, "%.3f", left);
  argv[0] = "BLPOP";
  argv[1] = done;
  argv[2] = secs;
  return left;
}

/* An immediate submission of a known name in a MULTI/EXEC (submit-tx.c):
 * a blocking call's on its own connection, with its first read behind,
 * given what is left after connecting. */
static int submit_tx(ct_broker_t *b, ct__bsubmit_tx_t *tx, const submission_t *sub,
                     const char *id) {
  int rc = 0;
  char *done = NULL, secs[32];
  const char *read[3];
  double wait = sub->wait;
  if (sub->ride) {
    rc = ride_connect(b, sub->ride, sub->wait);
    if (rc == 0 && !(done = ct__broker_key(b, "done:", id)))
      rc = CT_ENOMEM;
    done_read_args(read, secs, done, sub->ride->end - ct_now());
    tx->ride = sub->ride;
    tx->read = read;
    wait = call_wait(b, sub->ride->end);
  }
  if (rc == 0)
    rc = ct__bsubmit_tx(b, tx, wait);
  free(done);
  return rc;
}

/* Run the submit script for message m. */
static int run_submit(ct_broker_t *b, const ct__bmsg_t *m, const submission_t *sub, char *id) {
  ct__bmsg_wire_t w;
  char created[24], ttl_s[24], keep_s[24], due_s[24], nkeys[4];
  char *keys[SUBMIT_KEYS] = {ct__broker_key(b, "names", ""),
                             ct__broker_key(b, "stream:", sub->level),
                             ct__broker_key(b, "task:", m->id), ct__broker_key(b, "delayed", ""),
                             ct__broker_key(b, "wake", ""),
                             sub->key ? ct__broker_key(b, "key:", sub->key) : NULL};
  int nk = sub->key ? SUBMIT_KEYS : SUBMIT_KEYS - 1;
  int rc = ct__bmsg_encode(m, &w);
  if (rc == 0 && strlen(w.kwargs_text) > sub->max_payload)
    rc = CT_EINVAL;
  char *member = rc == 0 && sub->due_ms ? delayed_member(&w, sub->level) : NULL;
  for (int i = 0; i < nk; i++)
    if (rc == 0 && !keys[i])
      rc = CT_ENOMEM;
  if (rc == 0 && sub->due_ms && !member)
    rc = CT_ENOMEM;
  if (rc == 0) {
    double wait = sub->due_ms ? fmax(0, (double)(sub->due_ms - m->enqueued_ms) / 1000) : 0;
    snprintf(nkeys, sizeof nkeys, "%d", nk);
    snprintf(created, sizeof created, "%lld", (long long)m->enqueued_ms);
    snprintf(ttl_s, sizeof ttl_s, "%.0f", fmax(1, ceil(sub->ttl)));
    snprintf(keep_s, sizeof keep_s, "%.0f", fmin(TTL_MAX, fmax(1, ceil(sub->ttl + wait))));
    snprintf(due_s, sizeof due_s, "%lld", (long long)sub->due_ms);
    const char *argv[3 + SUBMIT_KEYS + SUBMIT_ARGS + 2 * CT__BMSG_FIELDS] = {
        NULL, NULL, nkeys};
    size_t argvlen[3 + SUBMIT_KEYS + SUBMIT_ARGS + 2 * CT__BMSG_FIELDS];
    int argc = 3;
    for (int i = 0; i < nk; i++)
      argv[argc++] = keys[i];
    const char *args[SUBMIT_ARGS] = {m->name, created, ttl_s, keep_s, due_s,
                                     member ? member : "", m->id};
    memcpy(argv + argc, args, sizeof args);
    argc += SUBMIT_ARGS;
    for (int i = 2; i < argc; i++) /* 0 and 1: the script's, filled when it runs */
      argvlen[i] = strlen(argv[i]);
    memcpy(argv + argc, w.argv, w.argc * sizeof *argv);
    memcpy(argvlen + argc, w.argvlen, w.argc * sizeof *argvlen);
    ct__bsubmit_tx_t tx = {keys[2], keys[1], m->name, created, ttl_s, keep_s, &w, NULL, NULL};
    if (sub->post)
      rc = ct__basync_script(sub->post, &submit, argc + (int)w.argc, argv, argvlen,
                             submit_reply, id);
    else if (!sub->key && !sub->due_ms && ct__bknown_has(b, m->name))
      rc = submit_tx(b, &tx, sub, m->id);
    else if ((rc = ct__bscript_run(b->conn, &submit, sub->wait, argc + (int)w.argc, argv,
                                   argvlen, submit_reply, id)) == 0)
      ct__bknown_add(b, m->name); /* found in the names set */
  }
  free(member);
  ct__bmsg_wire_free(&w);
  for (int i = 0; i < SUBMIT_KEYS; i++)
    free(keys[i]);
  return rc;
}

/* When the task may run, Unix ms (0: now), from delay or eta. CT_EINVAL
 * for a time over TTL_MAX seconds away: its record could not expire. */
static int due_of(const ct_broker_submit_opts_t *o, int64_t now_ms, int64_t *due_ms) {
  double due = o->delay > 0 ? (double)now_ms + ceil(o->delay * 1000)
               : o->eta > 0 ? ceil(o->eta * 1000) : 0;
  if (due > (double)now_ms + TTL_MAX * 1000)
    return CT_EINVAL;
  *due_ms = due > (double)now_ms ? (int64_t)due : 0;
  return 0;
}

/* Milliseconds of a seconds option (0 stays 0: the default). */
static int64_t ms_of(double seconds) {
  return seconds > 0 ? (int64_t)fmin(ceil(seconds * 1000), TTL_MAX * 1000) : 0;
}

/* The message of a submission (kwargs copied into it). */
static int message_of(const char *name, const json_t *kwargs, const ct_broker_submit_opts_t *o,
                      int64_t deadline_ms, ct__bmsg_t *m) {
  *m = (ct__bmsg_t){.enqueued_ms = ct__broker_unix_ms(), .deadline_ms = deadline_ms};
  int rc = ct__bmsg_new_id(m->id);
  if (rc != 0)
    return rc;
  strcpy(m->name, name); /* length checked */
  m->max_attempts = o->max_attempts > 1 ? o->max_attempts : 0;
  m->backoff_ms = ms_of(o->backoff);
  m->backoff_max_ms = ms_of(o->backoff_max);
  m->timeout_ms = ms_of(o->timeout);
  m->kwargs = kwargs ? json_deep_copy(kwargs) : json_object();
  return m->kwargs ? 0 : CT_ENOMEM;
}

int ct__broker_submit_by(ct_broker_t *b, const char *name, const json_t *kwargs,
                         const ct_broker_submit_opts_t *in, int64_t deadline_ms, double wait,
                         ct__basync_call_t *post, ct__bride_t *ride,
                         char id[CT_BROKER_ID_SIZE]) {
  ct_broker_submit_opts_t o = CT_BROKER_SUBMIT_OPTS_INIT;
  int rc = b && (id || post) ? submit_opts(b, in, &o) : CT_EINVAL;
  if (rc == 0)
    rc = check_submit(b, name, kwargs, &o);
  if (rc == 0 && deadline_ms && o.key)
    rc = CT_EINVAL; /* an RPC is answered once, to its own caller */
  ct__bmsg_t m = {0};
  if (rc == 0)
    rc = message_of(name, kwargs, &o, deadline_ms, &m);
  submission_t sub = {level_of(o.priority),
                      o.result_ttl > 0 ? fmin(o.result_ttl, TTL_MAX) : DEFAULT_TTL, 0,
                      o.max_payload ? o.max_payload : DEFAULT_MAX_PAYLOAD, o.key, wait, post,
                      ride};
  if (rc == 0)
    rc = due_of(&o, m.enqueued_ms, &sub.due_ms);
  char got[CT_BROKER_ID_SIZE];
  memcpy(got, m.id, CT_BROKER_ID_SIZE);
  if (rc == 0)
    rc = run_submit(b, &m, &sub, got);
  ct__bmsg_clear(&m);
  if (rc == 0 && !post)
    memcpy(id, got, CT_BROKER_ID_SIZE);
  return rc;
}

int ct_broker_submit(ct_broker_t *b, const char *name, const json_t *kwargs,
                     const ct_broker_submit_opts_t *opts, char id[CT_BROKER_ID_SIZE]) {
  return ct__broker_submit_by(b, name, kwargs, opts, 0, b ? b->command_timeout : 0, NULL, NULL,
                              id);
}

int64_t ct__broker_deadline_ms(double timeout) {
  return ct__broker_unix_ms() + (int64_t)ceil(fmin(timeout, TTL_MAX) * 1000);
}

/* --- many submissions in one script ------------------------------------ */

#define MANY_MAX 1024 /* most tasks in one ct_broker_submit_many() */

/* Submits a batch of tasks that share their options, each checked and
 * written on its own as by the submit script (no idempotency key: a key
 * names one task). KEYS: names set, the batch's stream, delayed set, wake
 * stream, then each task's record. ARGV: ttl (s), seconds to keep the
 * record, due (ms; 0: now), the count of optional entry fields, those
 * fields' names and values (the options' fields, the same for every task
 * of the batch: sent once), then per task: id, name, kwargs, enqueued
 * (ms; also its record's creation time) and, when delayed, its
 * delayed-set member. Only what differs from task to task is sent for
 * each: an argument costs Redis about 0.3 us, and sending each task's
 * field names, its creation time and its field count besides cost it
 * about 1.4 us a task of 8 (medians of 8 alternated runs, 64 tasks a
 * call). A task's entry (or member) is written before its record, so that
 * a shared key of the wrong type (another program's doing) fails the
 * script at the first known name, before anything of it is written. Each
 * name is looked up once. Returns, per task, 1 (written) or 0 (a name no
 * worker has registered: nothing written). */
static const char submit_many_script[] =
    "local delayed = ARGV[3] ~= '0'\n"
    "local options = {unpack(ARGV, 5, 4 + 2 * tonumber(ARGV[4]))}\n"
    "local out, known, a = {}, {}, 5 + #options\n"
    "for i = 5, #KEYS do\n"
    "  local name, enqueued = ARGV[a + 1], ARGV[a + 3]\n"
    "  if known[name] == nil then known[name] = redis.call('SISMEMBER', KEYS[1], name) end\n"
    "  if known[name] == 0 then\n"
    "    out[#out + 1] = 0\n"
    "  else\n"
    "    if delayed then\n"
    "      redis.call('ZADD', KEYS[3], ARGV[3], ARGV[a + 4])\n"
    "      redis.call('HSET', KEYS[i], 'status', 'delayed', 'name', name, 'created',"
    " enqueued, 'attempts', '0', 'ttl', ARGV[1], 'due', ARGV[3])\n"
    "    else\n"
    "      redis.call('XADD', KEYS[2], '*', 'id', ARGV[a], 'name', name, 'kwargs', ARGV[a + 2],"
    " 'enqueued', enqueued, unpack(options))\n"
    "      redis.call('HSET', KEYS[i], 'status', 'queued', 'name', name, 'created',"
    " enqueued, 'attempts', '0', 'ttl', ARGV[1])\n"
    "    end\n"
    "    redis.call('EXPIRE', KEYS[i], ARGV[2])\n"
    "    out[#out + 1] = 1\n"
    "  end\n"
    "  a = a + (delayed and 5 or 4)\n"
    "end\n"
    "if delayed then\n"
    "  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100, '*', 'due', ARGV[3])\n"
    "end\n"
    "return out\n";
static ct__bscript_t submit_many_lua = CT__BSCRIPT_INIT(submit_many_script);

/* One task of a batch, ready to send: its message and what the script
 * needs of it (all owned). */
typedef struct {
  ct__bmsg_t m;
  ct__bmsg_wire_t w;
  char *record, *member;
  int *rc; /* the caller's rcs[i] */
} many_task_t;

typedef struct {
  many_task_t **t; /* the tasks sent, in order */
  size_t n;
} many_ctx_t;

static int many_reply(const redisReply *r, void *data) {
  many_ctx_t *x = data;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != x->n)
    return CT_EINVAL; /* a script error: the server is not one we can use */
  for (size_t i = 0; i < x->n; i++) {
    const redisReply *e = r->element[i];
    if (e->type != REDIS_REPLY_INTEGER || (e->integer != 0 && e->integer != 1))
      return CT_EINVAL;
  }
  for (size_t i = 0; i < x->n; i++)
    *x->t[i]->rc = r->element[i]->integer == 1 ? 0 : CT_ENOENT;
  return 0;
}

/* Make one task of a batch ready; its own error (CT_EINVAL for a bad name,
 * kwargs or payload, CT_ENOMEM) is left in *t->rc. */
static void many_prepare(ct_broker_t *b, const char *name, const json_t *kwargs,
                         const ct_broker_submit_opts_t *o, const submission_t *sub,
                         many_task_t *t) {
  int rc = name && ct__bmsg_name_ok(name, strlen(name)) && (!kwargs || json_is_object(kwargs))
               ? message_of(name, kwargs, o, 0, &t->m)
               : CT_EINVAL;
  if (rc == 0)
    rc = ct__bmsg_encode(&t->m, &t->w);
  if (rc == 0 && strlen(t->w.kwargs_text) > sub->max_payload)
    rc = CT_EINVAL;
  if (rc == 0 && sub->due_ms && !(t->member = delayed_member(&t->w, sub->level)))
    rc = CT_ENOMEM;
  if (rc == 0 && !(t->record = ct__broker_key(b, "task:", t->m.id)))
    rc = CT_ENOMEM;
  *t->rc = rc;
}

/* The arguments of the submit-many script for the k tasks of ready. */
typedef struct {
  const char **argv;
  size_t *argvlen;
  size_t argc;
} many_args_t;

static void many_put(many_args_t *a, const char *s, size_t len) {
  a->argv[a->argc] = s;
  a->argvlen[a->argc++] = len;
}

/* Send the k ready tasks in one script call; each one's outcome goes to
 * its *rc (the call's own error, if it fails as a whole). */
static void many_send(ct_broker_t *b, many_task_t **ready, size_t k, const submission_t *sub,
                      char *const shared_keys[4]) {
  const ct__bmsg_wire_t *first = &ready[0]->w; /* its options' fields are every task's */
  size_t noptions = (first->argc - CT__BMSG_FIXED_ARGC) / 2;
  /* the script's 2, the key count and 4 keys, records, 4, options, 5 a task at most */
  size_t max = 2 + 5 + k + 4 + 2 * noptions + 5 * k;
  many_args_t a = {calloc(max, sizeof *a.argv), calloc(max, sizeof *a.argvlen), 2};
  char nkeys[24], ttl_s[24], keep_s[24], due_s[24], noptions_s[24];
  int rc = a.argv && a.argvlen ? 0 : CT_ENOMEM;
  if (rc == 0) {
    double wait = sub->due_ms ? fmax(0, (double)(sub->due_ms - ready[0]->m.enqueued_ms) / 1000)
                              : 0;
    snprintf(nkeys, sizeof nkeys, "%zu", 4 + k);
    snprintf(ttl_s, sizeof ttl_s, "%.0f", fmax(1, ceil(sub->ttl)));
    snprintf(keep_s, sizeof keep_s, "%.0f", fmin(TTL_MAX, fmax(1, ceil(sub->ttl + wait))));
    snprintf(due_s, sizeof due_s, "%lld", (long long)sub->due_ms);
    snprintf(noptions_s, sizeof noptions_s, "%zu", noptions);
    const char *fixed[] = {nkeys, shared_keys[0], shared_keys[1], shared_keys[2],
                           shared_keys[3]}; /* 0 and 1: the script's, filled when it runs */
    for (size_t i = 0; i < 5; i++)
      many_put(&a, fixed[i], strlen(fixed[i]));
    for (size_t i = 0; i < k; i++)
      many_put(&a, ready[i]->record, strlen(ready[i]->record));
    const char *head[] = {ttl_s, keep_s, due_s, noptions_s};
    for (size_t i = 0; i < 4; i++)
      many_put(&a, head[i], strlen(head[i]));
    for (size_t j = CT__BMSG_FIXED_ARGC; j < first->argc; j++)
      many_put(&a, first->argv[j], first->argvlen[j]);
    for (size_t i = 0; i < k; i++) {
      const ct__bmsg_wire_t *w = &ready[i]->w;
      for (size_t j = 1; j < CT__BMSG_FIXED_ARGC; j += 2) /* the values of id, name, ... */
        many_put(&a, w->argv[j], w->argvlen[j]);
      if (ready[i]->member)
        many_put(&a, ready[i]->member, strlen(ready[i]->member));
    }
    many_ctx_t x = {ready, k};
    rc = ct__bscript_run(b->conn, &submit_many_lua, 0, (int)a.argc, a.argv, a.argvlen,
                         many_reply, &x);
  }
  for (size_t i = 0; i < k && rc != 0; i++)
    *ready[i]->rc = rc;
  free(a.argv);
  free(a.argvlen);
}

/* The options of a batch, checked once, and where its tasks go. Returns 0
 * or CT_EINVAL (logged). */
static int many_options(ct_broker_t *b, const ct_broker_submit_opts_t *in,
                        ct_broker_submit_opts_t *o, submission_t *sub) {
  int rc = submit_opts(b, in, o);
  /* A name that passes, so that only the options are judged (and logged). */
  if (rc == 0)
    rc = check_submit(b, "ct_broker_submit_many", NULL, o);
  if (rc == 0 && o->key) {
    ct__broker_log(b, CT_LOG_ERROR, "ct_broker_submit_many: ct_broker_submit_opts_t.key: "
                   "a key names one task: give none");
    rc = CT_EINVAL;
  }
  *sub = (submission_t){level_of(o->priority),
                        o->result_ttl > 0 ? fmin(o->result_ttl, TTL_MAX) : DEFAULT_TTL, 0,
                        o->max_payload ? o->max_payload : DEFAULT_MAX_PAYLOAD, NULL,
                        b->command_timeout, NULL, NULL};
  if (rc == 0)
    rc = due_of(o, ct__broker_unix_ms(), &sub->due_ms);
  return rc;
}

static void many_free(many_task_t *t, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ct__bmsg_clear(&t[i].m);
    ct__bmsg_wire_free(&t[i].w);
    free(t[i].record);
    free(t[i].member);
  }
  free(t);
}

int ct_broker_submit_many(ct_broker_t *b, size_t n, const char *const names[],
                          const json_t *const kwargs[], const ct_broker_submit_opts_t *opts,
                          char (*ids)[CT_BROKER_ID_SIZE], int rcs[]) {
  if (!b || n > MANY_MAX || (n > 0 && (!names || !ids || !rcs))) {
    /* As for every other refusal of the whole call, but for a count over
     * the limit: that count is what is wrong, and may not be the array's. */
    for (size_t i = 0; rcs && n <= MANY_MAX && i < n; i++)
      rcs[i] = CT_EINVAL;
    return CT_EINVAL;
  }
  ct_broker_submit_opts_t o;
  submission_t sub;
  int rc = many_options(b, opts, &o, &sub);
  many_task_t *t = rc == 0 && n > 0 ? calloc(n, sizeof *t) : NULL;
  many_task_t **ready = t ? calloc(n, sizeof *ready) : NULL;
  char *shared[4] = {NULL};
  if (rc == 0 && n > 0) {
    shared[0] = ct__broker_key(b, "names", "");
    shared[1] = ct__broker_key(b, "stream:", sub.level);
    shared[2] = ct__broker_key(b, "delayed", "");
    shared[3] = ct__broker_key(b, "wake", "");
    rc = ready && shared[0] && shared[1] && shared[2] && shared[3] ? 0 : CT_ENOMEM;
  }
  size_t k = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    t[i].rc = &rcs[i];
    many_prepare(b, names[i], kwargs ? kwargs[i] : NULL, &o, &sub, &t[i]);
    if (rcs[i] == 0)
      ready[k++] = &t[i];
  }
  if (rc == 0 && k > 0)
    many_send(b, ready, k, &sub, shared);
  for (size_t i = 0; i < n; i++) {
    if (rc != 0)
      rcs[i] = rc;
    else if (rcs[i] == 0)
      memcpy(ids[i], t[i].m.id, CT_BROKER_ID_SIZE);
  }
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = rcs[i];
  if (t)
    many_free(t, n);
  free(ready);
  for (int i = 0; i < 4; i++)
    free(shared[i]);
  return rc;
}

/* An idle connection still of use, or NULL (those no longer of use are
 * freed). */
static ct__rsync_t *rpc_idle_take(ct_broker_t *b) {
  for (;;) {
    pthread_mutex_lock(&b->lock);
    ct__brpc_t *r = b->rpc_idle;
    if (r)
      b->rpc_idle = r->next;
    pthread_mutex_unlock(&b->lock);
    if (!r)
      return NULL;
    ct__rsync_t *c = r->conn;
    free(r);
    if (ct__rsync_usable(c))
      return c;
    ct__rsync_free(c);
  }
}

/* Pause a call before it tries again: ride->pause seconds (0.1 s, doubling
 * up to 1 s), at most until `end` (ct_now() time), cut short as the
 * handle's loop ends. Returns 0, or CT_ESHUTDOWN once it has ended: a call
 * whose server had gone away went on trying to connect after a stop, until
 * its own end (for ever with an infinite timeout). */
static int ride_pause(ct_broker_t *b, ct__bride_t *ride, double end) {
  double until = fmin(ct_now() + fmax(ride->pause, 0.1), end);
  ride->pause = fmin(fmax(ride->pause, 0.1) * 2, 1);
  struct timespec at = ct__timespec_at(until);
  pthread_mutex_lock(&b->lock);
  while (!b->ended && ct_now() < until &&
         pthread_cond_timedwait(&b->ended_cond, &b->lock, &at) == 0)
    ;
  bool ended = b->ended;
  pthread_mutex_unlock(&b->lock);
  return ended ? CT_ESHUTDOWN : 0;
}

/* Keep a call's connection for the next call if it is still of use (else,
 * or out of memory, close it). NULL does nothing. */
static void rpc_give(ct_broker_t *b, ct__rsync_t *c) {
  ct__brpc_t *r = c && ct__rsync_usable(c) ? malloc(sizeof *r) : NULL;
  if (!r) {
    ct__rsync_free(c);
    return;
  }
  r->conn = c;
  pthread_mutex_lock(&b->lock);
  r->next = b->rpc_idle;
  b->rpc_idle = r;
  pthread_mutex_unlock(&b->lock);
}

/* The call's connection, set (or taken away: NULL) under the handle's
 * lock; CT_ESHUTDOWN (c freed) once the handle's loop has ended. */
static int ride_set(ct_broker_t *b, ct__bride_t *ride, ct__rsync_t *c) {
  pthread_mutex_lock(&b->lock);
  bool ended = b->ended;
  ct__rsync_t *old = ride->conn;
  ride->conn = ended ? NULL : c;
  pthread_mutex_unlock(&b->lock);
  ct__rsync_free(old);
  if (ended)
    ct__rsync_free(c);
  return ended ? CT_ESHUTDOWN : 0;
}

/* The connection for a blocking call, unless it has one: an idle one
 * still of use, or a new one, made again while attempts fail (the server
 * may be restarting; paused 0.1 s, doubling up to 1 s) for `within`
 * seconds, each attempt bounded by the connect timeout. Returns 0;
 * CT_ESHUTDOWN; ct__rsync_new()'s codes. */
static int ride_connect(ct_broker_t *b, ct__bride_t *ride, double within) {
  double end = ct_now() + within;
  while (!ride->conn) {
    ct__rsync_t *c = rpc_idle_take(b);
    double left = fmax(end - ct_now(), CALL_GRACE);
    int rc = c ? 0
               : ct__rsync_new(&b->url, fmin(b->connect_timeout, left), b->log, b->log_data,
                               &c);
    if (rc == 0)
      return ride_set(b, ride, c);
    if (rc != CT_ETIMEDOUT || end - ct_now() <= 0)
      return rc;
    if ((rc = ride_pause(b, ride, end)) != 0)
      return rc;
    if (end - ct_now() <= 0)
      return CT_ETIMEDOUT;
  }
  return 0;
}

/* A call begins (CT_ESHUTDOWN once the handle's loop has ended) and ends:
 * the handle knows it meanwhile, and keeps its connection for the next
 * call if it is still of use. */
static int ride_begin(ct_broker_t *b, ct__bride_t *ride) {
  pthread_mutex_lock(&b->lock);
  bool ended = b->ended;
  if (!ended) {
    ride->next = b->rides;
    b->rides = ride;
  }
  pthread_mutex_unlock(&b->lock);
  return ended ? CT_ESHUTDOWN : 0;
}

static void ride_end(ct_broker_t *b, ct__bride_t *ride) {
  pthread_mutex_lock(&b->lock);
  ct__bride_t **p = &b->rides;
  while (*p && *p != ride)
    p = &(*p)->next;
  if (*p)
    *p = ride->next;
  ct__rsync_t *c = ride->conn;
  ride->conn = NULL;
  pthread_mutex_unlock(&b->lock);
  rpc_give(b, c);
}

/* The handle's loop has ended (its supervisor stopped, or it is freed):
 * calls under way are woken from their reads, and they and later ones
 * answer CT_ESHUTDOWN. On the loop thread. */
static void on_handle_end(void *data) {
  ct_broker_t *b = data;
  pthread_mutex_lock(&b->lock);
  b->ended = true;
  pthread_cond_broadcast(&b->ended_cond);
  for (ct__bride_t *r = b->rides; r; r = r->next)
    if (r->conn)
      ct__rsync_interrupt(r->conn);
  pthread_mutex_unlock(&b->lock);
}

/* Seconds a command of a call may take from now: what is left before the
 * call's end, but at least CALL_GRACE (a reply already due still gets its
 * chance) and at most the command timeout. */
static double call_wait(const ct_broker_t *b, double end) {
  return fmin(b->command_timeout, fmax(end - ct_now(), CALL_GRACE));
}

static int wait_result(ct_broker_t *b, const char *id, ct__bride_t *ride,
                       ct_broker_info_t *info);

int ct_broker_call(ct_broker_t *b, const char *name, const json_t *kwargs,
                   const ct_broker_submit_opts_t *opts, double timeout, json_t **result) {
  if (!result || !(timeout > 0)) /* INFINITY waits for ever */
    return CT_EINVAL;
  *result = NULL;
  if (!b)
    return CT_EINVAL;
  if (ct__rconn_on_loop_thread(b->conn))
    return CT_EDEADLK; /* its replies, and the worker's, come on this thread */
  ct__bride_t ride = {ct_now() + timeout, NULL, false, 0, NULL};
  char id[CT_BROKER_ID_SIZE];
  int rc = ride_begin(b, &ride);
  if (rc == 0)
    rc = ct__broker_submit_by(b, name, kwargs, opts, ct__broker_deadline_ms(timeout),
                              call_wait(b, ride.end), NULL, &ride, id);
  ct_broker_info_t info;
  if (rc == 0)
    rc = wait_result(b, id, &ride, &info);
  ride_end(b, &ride);
  if (rc == 0)
    rc = ct__bcall_outcome(&info);
  if (rc == 0)
    *result = info.result;
  return rc;
}

ct__bfield_t *ct__bfields_of(const redisReply *pairs, size_t *n) {
  *n = pairs->elements / 2;
  ct__bfield_t *f = calloc(*n ? *n : 1, sizeof *f);
  if (!f)
    return NULL;
  for (size_t i = 0; i < *n; i++) {
    const redisReply *k = pairs->element[2 * i], *v = pairs->element[2 * i + 1];
    f[i] = (ct__bfield_t){k->str ? k->str : "", k->str ? k->len : 0, v->str ? v->str : "",
                          v->str ? v->len : 0};
  }
  return f;
}

int ct__broker_get_reply(const redisReply *r, void *data) {
  ct__bget_t *g = data;
  if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
    /* Say why, as for a malformed hash: WRONGTYPE names a key some other
     * program wrote where the record belongs. */
    ct__broker_log(g->b, CT_LOG_ERROR, "task %s: its record is malformed: not a hash: %s",
                   g->id, r->type == REDIS_REPLY_ERROR ? r->str : "an odd reply");
    return CT_EINVAL;
  }
  if (r->elements == 0)
    return CT_ENOENT;
  size_t n;
  ct__bfield_t *f = ct__bfields_of(r, &n);
  if (!f)
    return CT_ENOMEM;
  const char *reason = NULL;
  int rc = ct__brecord_decode(f, n, g->info, &reason);
  free(f);
  if (rc == CT_EINVAL)
    ct__broker_log(g->b, CT_LOG_ERROR, "task %s: its record is malformed: %s", g->id, reason);
  return rc;
}

/* A call's blocking read of its done list: the answer it brought. */
typedef struct {
  ct_broker_info_t *info;
  int rc;   /* 0: info holds the answer; else the record has it */
  bool nil; /* the server answered that the read timed out */
} done_read_t;

static int done_reply(const redisReply *r, void *data) {
  done_read_t *d = data;
  d->nil = r->type == REDIS_REPLY_NIL;
  if (d->nil)
    return CT_ETIMEDOUT;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
      r->element[1]->type != REDIS_REPLY_STRING)
    return CT_EINVAL;
  d->rc = ct__bdone_decode(r->element[1]->str, r->element[1]->len, d->info);
  return 0; /* even out of memory: the record has the answer too */
}

static int get_record(ct_broker_t *b, ct__rsync_t *own, const char *id, double wait,
                      ct_broker_info_t *out);

/* One wait of a call: a blocking read of the task's done list for `left`
 * seconds (sent already behind the submission if `sent`). Its entry is
 * the answer (docs/wire-format.md): no read of the record, unless the
 * entry is a bare status (a dead letter, a late duplicate, an older
 * worker) or the server says the read timed out (the task may have ended
 * just after). Returns 0 and *info once the task has ended; CT_ETIMEDOUT
 * (nothing yet, or the connection failed: it is then of no use); or an
 * error. */
static int wait_once(ct_broker_t *b, ct__rsync_t *c, bool sent, const char *done,
                     const char *id, double left, ct_broker_info_t *info) {
  char secs[32];
  const char *blpop[3];
  left = done_read_args(blpop, secs, done, left);
  done_read_t d = {info, CT_EAGAIN, false};
  memset(info, 0, sizeof *info);
  ct__rconn_cmd_t read = {3, blpop, NULL, done_reply, &d, 0};
  int rc = sent ? 0 : ct__rsync_send(c, fmin(b->command_timeout, left + CALL_GRACE), 1, &read);
  if (rc == 0)
    rc = ct__rsync_read(c, left + CALL_GRACE, &read);
  if (rc == 0 && d.rc == 0)
    return 0; /* the answer came with the wake */
  if (rc != 0 && !d.nil)
    return rc; /* a server that stalls gets no second command */
  int got = get_record(b, c, id, CALL_GRACE, info);
  if (rc == 0)
    return got; /* woken: the record is terminal */
  if (got == 0 && ct__bstatus_terminal(info->status))
    return 0; /* it ended just after the read timed out */
  if (got == 0)
    json_decref(info->result);
  return CT_ETIMEDOUT;
}

/* Wait for the task's end until the call's end (ct_now() time, may be
 * INFINITY: the wait goes on a day at a time), on the call's own
 * connection, made again if it fails (the server may be restarting).
 * Each blocking read is given CALL_GRACE beyond its own server-side
 * timeout, so that a server that stalls cannot hold the call past its end
 * by more than that. */
static int wait_result(ct_broker_t *b, const char *id, ct__bride_t *ride,
                       ct_broker_info_t *info) {
  char *k = ct__broker_key(b, "done:", id);
  int rc = k ? CT_ETIMEDOUT : CT_ENOMEM;
  for (double left; rc == CT_ETIMEDOUT && (left = ride->end - ct_now()) >= 0.001;) {
    if (ride->conn && !ride->sent && !ct__rsync_usable(ride->conn)) {
      /* It failed: paused before the next (a server that drops every
       * read must not make this a loop), unless the handle has ended. */
      if ((rc = ride_set(b, ride, NULL)) != 0 || (rc = ride_pause(b, ride, ride->end)) != 0)
        break;
      rc = CT_ETIMEDOUT;
      continue;
    }
    if ((rc = ride_connect(b, ride, left)) != 0)
      break;
    if ((left = ride->end - ct_now()) < 0.001 && !ride->sent) {
      rc = CT_ETIMEDOUT; /* connecting took what was left */
      break;
    }
    rc = wait_once(b, ride->conn, ride->sent, k, id, left, info);
    ride->sent = false;
  }
  free(k);
  return rc;
}

int ct_broker_get(ct_broker_t *b, const char *id, ct_broker_info_t *out) {
  return b ? get_record(b, NULL, id, b->command_timeout, out) : CT_EINVAL;
}

int ct__broker_record_key(const ct_broker_t *b, const char *id, char **key) {
  if (!b || !id || !ct__bmsg_id_ok(id, strlen(id)))
    return CT_EINVAL;
  *key = ct__broker_key(b, "task:", id);
  return *key ? 0 : CT_ENOMEM;
}

/* ct_broker_get() on the handle's connection, or on a call's own, the
 * command given `wait` seconds. */
static int get_record(ct_broker_t *b, ct__rsync_t *own, const char *id, double wait,
                      ct_broker_info_t *out) {
  char *k = NULL;
  int rc = out ? ct__broker_record_key(b, id, &k) : CT_EINVAL;
  if (rc != 0)
    return rc;
  memset(out, 0, sizeof *out);
  ct__bget_t g = {b, id, out};
  const char *argv[2] = {"HGETALL", k};
  ct__rconn_cmd_t get = {2, argv, NULL, ct__broker_get_reply, &g, 0};
  if (!own)
    rc = ct__rconn_command_within(b->conn, wait, 2, argv, NULL, ct__broker_get_reply, &g);
  else if ((rc = ct__rsync_send(own, wait, 1, &get)) == 0)
    rc = ct__rsync_read(own, wait, &get);
  free(k);
  return rc;
}
