/* The broker handle, producer side: submit a named task, read its record.
 *
 * A handle is a connection (conn.c) plus the key prefix of its queue,
 * `<ns>:{<queue>}:`: the braces make the queue name the hash tag of every
 * key, so a cluster client finds them all in one slot. The stream entry's
 * fields come from the codec (message.c); the check that the name is
 * registered and the writes (task record, stream entry) are one Lua script,
 * so a refused task leaves nothing behind and an accepted one is whole.
 * The handle holds no state of its own after creation: every call is one
 * command on the connection, and the connection serializes them.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker-internal.h"
#include "message.h"
#include "metrics.h"

#define DEFAULT_TIMEOUT 5.0     /* connect and command timeouts */
#define DEFAULT_TTL 86400.0     /* aio-task's result TTL: a day */
#define TTL_MAX 1e9             /* longest TTL (over 30 years): EXPIRE fails far
                                   beyond it, after the script wrote the record */
#define NAME_PART_MAX 200       /* longest namespace or queue name */

/* Checks the names set, writes the record (expiring) and the entry.
 * KEYS: names set, stream, record. ARGV: name, created (ms), ttl (s), then
 * the entry's fields and values. Returns 0 for an unknown name, else 1. */
static const char submit_script[] =
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
    "redis.call('HSET', KEYS[3], 'status', 'queued', 'name', ARGV[1],"
    " 'created', ARGV[2], 'attempts', '0', 'ttl', ARGV[3])\n"
    "redis.call('EXPIRE', KEYS[3], ARGV[3])\n"
    "redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))\n"
    "return 1\n";

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
 * the hash tag or the key's reading). */
static bool name_part_ok(const char *s) {
  size_t len = strlen(s);
  if (len == 0 || len > NAME_PART_MAX)
    return false;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f || s[i] == '{' || s[i] == '}')
      return false;
  return true;
}

static bool timeout_ok(double t) { return !isnan(t) && t >= 0; }

static int check_opts(const ct_broker_opts_t *o) {
  if (!o || o->size != sizeof(ct_broker_opts_t) || !o->url)
    return CT_EINVAL;
  if ((o->ns && !name_part_ok(o->ns)) || (o->queue && !name_part_ok(o->queue)))
    return CT_EINVAL;
  if (!timeout_ok(o->connect_timeout) || !timeout_ok(o->command_timeout))
    return CT_EINVAL;
  return 0;
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
    ct__rconn_free(r->conn);
    free(r);
  }
  ct__rconn_free(b->conn);
  while (b->handlers) {
    ct__bhandler_t *h = b->handlers;
    b->handlers = h->next;
    free(h);
  }
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
  if (!b->log)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  b->log(level, msg, b->log_data);
}

int64_t ct__broker_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int check_submit(const char *name, const json_t *kwargs,
                        const ct_broker_submit_opts_t *o) {
  if (!name || !ct__bmsg_name_ok(name, strlen(name)) || (kwargs && !json_is_object(kwargs)))
    return CT_EINVAL;
  if (o && (o->size != sizeof *o || o->priority < CT_PRIORITY_CRITICAL ||
            o->priority > CT_PRIORITY_MAX || isnan(o->result_ttl) || o->result_ttl < 0 ||
            isinf(o->result_ttl)))
    return CT_EINVAL;
  return 0;
}

static int submit_reply(const redisReply *r, void *data) {
  (void)data;
  if (r->type == REDIS_REPLY_INTEGER)
    return r->integer == 1 ? 0 : CT_ENOENT;
  return CT_EINVAL; /* a script error: the server is not one we can use */
}

/* Run the submit script for message m. */
static int run_submit(ct_broker_t *b, const ct__bmsg_t *m, const char *level, double ttl) {
  ct__bmsg_wire_t w;
  char created[24], ttl_s[24];
  char *keys[3] = {ct__broker_key(b, "names", ""), ct__broker_key(b, "stream:", level),
                   ct__broker_key(b, "task:", m->id)};
  int rc = ct__bmsg_encode(m, &w);
  if (rc == 0 && (!keys[0] || !keys[1] || !keys[2]))
    rc = CT_ENOMEM;
  if (rc == 0) {
    snprintf(created, sizeof created, "%lld", (long long)m->enqueued_ms);
    snprintf(ttl_s, sizeof ttl_s, "%.0f", fmax(1, ceil(ttl)));
    const char *argv[9 + 2 * CT__BMSG_FIELDS] = {"EVAL", submit_script, "3", keys[0], keys[1],
                                                 keys[2], m->name, created, ttl_s};
    size_t argvlen[9 + 2 * CT__BMSG_FIELDS];
    for (int i = 0; i < 9; i++)
      argvlen[i] = strlen(argv[i]);
    memcpy(argv + 9, w.argv, w.argc * sizeof *argv);
    memcpy(argvlen + 9, w.argvlen, w.argc * sizeof *argvlen);
    rc = ct__rconn_command(b->conn, 9 + (int)w.argc, argv, argvlen, submit_reply, NULL);
  }
  ct__bmsg_wire_free(&w);
  for (int i = 0; i < 3; i++)
    free(keys[i]);
  return rc;
}

/* Submit, with the caller's deadline (Unix ms; 0: none) in the entry. */
static int submit_by(ct_broker_t *b, const char *name, const json_t *kwargs,
                     const ct_broker_submit_opts_t *opts, int64_t deadline_ms,
                     char id[CT_BROKER_ID_SIZE]) {
  int rc = b && id ? check_submit(name, kwargs, opts) : CT_EINVAL;
  if (rc != 0)
    return rc;
  ct__bmsg_t m = {.enqueued_ms = ct__broker_unix_ms(), .deadline_ms = deadline_ms};
  rc = ct__bmsg_new_id(m.id);
  if (rc != 0)
    return rc;
  strcpy(m.name, name); /* length checked above */
  m.kwargs = kwargs ? json_deep_copy(kwargs) : json_object();
  if (!m.kwargs)
    return CT_ENOMEM;
  int priority = opts ? opts->priority : CT_PRIORITY_NORMAL;
  double ttl = opts && opts->result_ttl > 0 ? fmin(opts->result_ttl, TTL_MAX) : DEFAULT_TTL;
  rc = run_submit(b, &m, level_of(priority), ttl);
  ct__bmsg_clear(&m);
  if (rc == 0)
    memcpy(id, m.id, CT_BROKER_ID_SIZE);
  return rc;
}

int ct_broker_submit(ct_broker_t *b, const char *name, const json_t *kwargs,
                     const ct_broker_submit_opts_t *opts, char id[CT_BROKER_ID_SIZE]) {
  return submit_by(b, name, kwargs, opts, 0, id);
}

/* An idle connection for a call's blocking read, or a new one. */
static int rpc_take(ct_broker_t *b, ct__rconn_t **out) {
  pthread_mutex_lock(&b->lock);
  ct__brpc_t *r = b->rpc_idle;
  if (r)
    b->rpc_idle = r->next;
  pthread_mutex_unlock(&b->lock);
  if (r) {
    *out = r->conn;
    free(r);
    return 0;
  }
  ct__rconn_opts_t co = {b->sup, &b->url, b->connect_timeout, b->command_timeout, b->log,
                         b->log_data};
  return ct__rconn_new(&co, out);
}

/* Keep a connection for the next call (or close it if out of memory). */
static void rpc_give(ct_broker_t *b, ct__rconn_t *c) {
  ct__brpc_t *r = malloc(sizeof *r);
  if (!r) {
    ct__rconn_free(c);
    return;
  }
  r->conn = c;
  pthread_mutex_lock(&b->lock);
  r->next = b->rpc_idle;
  b->rpc_idle = r;
  pthread_mutex_unlock(&b->lock);
}

static int blpop_reply(const redisReply *r, void *data) {
  (void)data;
  if (r->type == REDIS_REPLY_NIL)
    return CT_ETIMEDOUT;
  return r->type == REDIS_REPLY_ARRAY ? 0 : CT_EINVAL;
}

/* Block on the task's done list until `remaining` seconds have passed. */
static int wait_done(ct_broker_t *b, const char *id, double remaining) {
  char *k = ct__broker_key(b, "done:", id);
  char secs[32];
  snprintf(secs, sizeof secs, "%.3f", remaining);
  ct__rconn_t *c = NULL;
  int rc = !k ? CT_ENOMEM : remaining < 0.001 ? CT_ETIMEDOUT : rpc_take(b, &c);
  if (rc == 0) {
    const char *argv[] = {"BLPOP", k, secs};
    rc = ct__rconn_command_within(c, remaining + b->command_timeout, 3, argv, NULL,
                                  blpop_reply, NULL);
    rpc_give(b, c);
  }
  free(k);
  return rc;
}

int ct_broker_call(ct_broker_t *b, const char *name, const json_t *kwargs,
                   const ct_broker_submit_opts_t *opts, double timeout, json_t **result) {
  if (!result || !(timeout > 0 && timeout <= DEFAULT_TTL))
    return CT_EINVAL;
  *result = NULL;
  double end = ct_now() + timeout;
  char id[CT_BROKER_ID_SIZE];
  int rc = submit_by(b, name, kwargs, opts,
                     ct__broker_unix_ms() + (int64_t)ceil(timeout * 1000), id);
  if (rc == 0)
    rc = wait_done(b, id, end - ct_now());
  ct_broker_info_t info;
  if (rc == 0)
    rc = ct_broker_get(b, id, &info);
  if (rc == 0)
    *result = info.result;
  return rc;
}

typedef struct {
  ct_broker_t *b;
  const char *id;
  ct_broker_info_t *info;
} get_ctx_t;

static int get_reply(const redisReply *r, void *data) {
  get_ctx_t *g = data;
  if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
    /* Say why, as for a malformed hash: WRONGTYPE names a key some other
     * program wrote where the record belongs. */
    ct__broker_log(g->b, CT_LOG_ERROR, "task %s: its record is malformed: not a hash: %s",
                   g->id, r->type == REDIS_REPLY_ERROR ? r->str : "an odd reply");
    return CT_EINVAL;
  }
  if (r->elements == 0)
    return CT_ENOENT;
  size_t n = r->elements / 2;
  ct__bfield_t *f = calloc(n, sizeof *f);
  if (!f)
    return CT_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const redisReply *k = r->element[2 * i], *v = r->element[2 * i + 1];
    if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
      free(f);
      return CT_EINVAL;
    }
    f[i] = (ct__bfield_t){k->str, k->len, v->str, v->len};
  }
  const char *reason = NULL;
  int rc = ct__brecord_decode(f, n, g->info, &reason);
  free(f);
  if (rc == CT_EINVAL)
    ct__broker_log(g->b, CT_LOG_ERROR, "task %s: its record is malformed: %s", g->id, reason);
  return rc;
}

int ct_broker_get(ct_broker_t *b, const char *id, ct_broker_info_t *out) {
  if (!b || !id || !out || !ct__bmsg_id_ok(id, strlen(id)))
    return CT_EINVAL;
  memset(out, 0, sizeof *out);
  char *k = ct__broker_key(b, "task:", id);
  if (!k)
    return CT_ENOMEM;
  get_ctx_t g = {b, id, out};
  const char *argv[2] = {"HGETALL", k};
  int rc = ct__rconn_command(b->conn, 2, argv, NULL, get_reply, &g);
  free(k);
  return rc;
}
