/* The operator API (broker-admin.h): a queue's counts, its dead letters and
 * its live workers, read with commands whose cost does not grow with the
 * number of tasks.
 *
 * Each call is a command or two on the handle's connection: a Lua script
 * where what it reads must be one consistent view (the counts) or its
 * change atomic (a retry, whose keys come from the dead letter read
 * first: this script names every key it touches, as the wire format
 * asks of every script but the fetch). Replies are turned into JSON on the loop thread, in the
 * reply callback (a redisReply lives only there), and shaped into the
 * documented objects on the caller's thread. Ready entries are the stream's
 * length less its pending ones: acknowledged entries are deleted (XDEL), so
 * a stream holds only entries not yet taken and entries taken but not yet
 * acknowledged.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker-internal.h"
#include "ctasker/broker-admin.h"
#include "message.h"

#define DEAD_LIST_MAX 1000 /* most dead letters one list call returns */

/* KEYS: the four streams (highest class first), dead letters, counters,
 * workers set, delayed set. ARGV: group, now (ms). Per stream: length,
 * pending count, oldest pending entry id ('' if none: a stream without its
 * group yet has none); then the dead letters' length, the counters hash,
 * the live workers and the delayed tasks. */
static const char stats_script[] =
    "local out = {}\n"
    "for i = 1, 4 do\n"
    "  local pending, oldest = 0, ''\n"
    "  local p = redis.pcall('XPENDING', KEYS[i], ARGV[1])\n"
    "  if type(p) == 'table' and not p.err then\n"
    "    pending = p[1]\n"
    "    if p[2] then oldest = p[2] end\n"
    "  end\n"
    "  out[i] = {redis.call('XLEN', KEYS[i]), pending, oldest}\n"
    "end\n"
    "out[5] = redis.call('XLEN', KEYS[5])\n"
    "out[6] = redis.call('HGETALL', KEYS[6])\n"
    "out[7] = redis.call('ZCOUNT', KEYS[7], ARGV[2], '+inf')\n"
    "out[8] = redis.call('ZCARD', KEYS[8])\n"
    "return out\n";

/* KEYS: dead letters, the task's stream, its record. ARGV: entry id, now
 * (ms), task id, level name (the caller read them from the entry, and the
 * script checks that they still hold). The task goes back to its stream
 * with its own fields less the dead letter's and its deadline, and a fresh
 * `enqueued`; its record is queued again (made anew if it has expired).
 * Returns 1, 0 for no such entry, -1 for one that changed or a record
 * that is not a hash. */
static const char retry_script[] =
    "local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])\n"
    "if not e[1] then return 0 end\n"
    "local skip = {reason = true, stream = true, entry = true, deadline = true,"
    " enqueued = true}\n"
    "local f, fields, v = e[1][2], {}, {}\n"
    "for j = 1, #f, 2 do\n"
    "  v[f[j]] = f[j + 1]\n"
    "  if not skip[f[j]] then\n"
    "    fields[#fields + 1] = f[j]\n"
    "    fields[#fields + 1] = f[j + 1]\n"
    "  end\n"
    "end\n"
    "if v.id ~= ARGV[3] or v.stream ~= ARGV[4] or not v.name or not v.kwargs then\n"
    "  return -1\n"
    "end\n"
    "local t = redis.call('TYPE', KEYS[3]).ok\n"
    "if t == 'hash' then\n"
    "  redis.call('HDEL', KEYS[3], 'result', 'finished')\n"
    "  redis.call('HSET', KEYS[3], 'status', 'queued')\n"
    "elseif t == 'none' then\n"
    "  redis.call('HSET', KEYS[3], 'status', 'queued', 'name', v.name, 'created', ARGV[2],"
    " 'attempts', '0', 'ttl', '86400')\n"
    "else\n"
    "  return -1\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[3], redis.call('HGET', KEYS[3], 'ttl') or 86400)\n"
    "fields[#fields + 1] = 'enqueued'\n"
    "fields[#fields + 1] = ARGV[2]\n"
    "redis.call('XADD', KEYS[2], '*', unpack(fields))\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return 1\n";

/* KEYS: dead letters. Deletes them all; returns how many there were. */
static const char purge_script[] =
    "local n = redis.call('XLEN', KEYS[1])\n"
    "redis.call('UNLINK', KEYS[1])\n"
    "return n\n";

const char *ct_broker_status_name(ct_broker_status_t status) {
  static const char *const names[] = {"queued", "running",  "completed", "failed",
                                      "dead",   "delayed", "retrying",  "expired"};
  return status >= 0 && status < (int)(sizeof names / sizeof *names) ? names[status] : NULL;
}

/* --- replies as JSON ---------------------------------------------------- */

typedef struct {
  const ct_broker_t *b;
  json_t *json;
} json_reply_t;

/* A reply as JSON: strings (bytes that are not UTF-8 replaced), integers,
 * nil as null, arrays; NULL for an error reply or no memory. */
static json_t *reply_json(const redisReply *r) {
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS: {
    json_t *s = json_stringn(r->str, r->len);
    return s ? s : json_string("(not UTF-8)");
  }
  case REDIS_REPLY_INTEGER:
    return json_integer(r->integer);
  case REDIS_REPLY_NIL:
    return json_null();
  case REDIS_REPLY_ARRAY: {
    json_t *a = json_array();
    for (size_t i = 0; a && i < r->elements; i++)
      if (json_array_append_new(a, reply_json(r->element[i])) != 0) {
        json_decref(a);
        a = NULL;
      }
    return a;
  }
  default:
    return NULL;
  }
}

static int json_reply(const redisReply *r, void *data) {
  json_reply_t *j = data;
  if (r->type == REDIS_REPLY_ERROR) {
    ct__broker_log(j->b, CT_LOG_ERROR, "an operator read failed: %s", r->str);
    return CT_EINVAL;
  }
  j->json = reply_json(r);
  return j->json ? 0 : CT_ENOMEM;
}

/* Run argv on the handle's connection; *out the reply as JSON. */
static int command_json(ct_broker_t *b, int argc, const char **argv, json_t **out) {
  json_reply_t j = {b, NULL};
  int rc = ct__rconn_command(b->conn, argc, argv, NULL, json_reply, &j);
  *out = rc == 0 ? j.json : NULL;
  if (rc != 0)
    json_decref(j.json);
  return rc;
}

/* --- queue stats -------------------------------------------------------- */

static long long int_at(const json_t *a, size_t i) {
  return json_integer_value(json_array_get(a, i));
}

/* Milliseconds of a stream entry id "<ms>-<seq>". */
static long long entry_ms(const char *id) { return id ? strtoll(id, NULL, 10) : 0; }

/* A counter "<level>:<what>" from the HGETALL reply (a flat array). */
static long long counter(const json_t *flat, const char *level, const char *what) {
  char field[64];
  snprintf(field, sizeof field, "%s:%s", level, what);
  for (size_t i = 0; i + 1 < json_array_size(flat); i += 2)
    if (strcmp(json_string_value(json_array_get(flat, i)) ?: "", field) == 0)
      return strtoll(json_string_value(json_array_get(flat, i + 1)) ?: "0", NULL, 10);
  return 0;
}

static json_t *level_stats(const json_t *r, int i, long long now_ms) {
  const json_t *s = json_array_get(r, (size_t)i);
  const json_t *flat = json_array_get(r, 5);
  long long len = int_at(s, 0), pending = int_at(s, 1);
  const char *oldest = json_string_value(json_array_get(s, 2));
  double age = oldest && *oldest ? (double)(now_ms - entry_ms(oldest)) / 1000.0 : 0.0;
  const char *level = ct__blevel_names[i];
  return json_pack("{s:s,s:I,s:I,s:f,s:I,s:I,s:I,s:I}", "level", level, "ready",
                   (json_int_t)(len > pending ? len - pending : 0), "pending",
                   (json_int_t)pending, "oldest_pending_age", age > 0 ? age : 0.0,
                   "completed", (json_int_t)counter(flat, level, "completed"), "failed",
                   (json_int_t)counter(flat, level, "failed"), "retried",
                   (json_int_t)counter(flat, level, "retried"), "expired",
                   (json_int_t)counter(flat, level, "expired"));
}

static json_t *shape_stats(const ct_broker_t *b, const json_t *r) {
  long long now_ms = ct__broker_unix_ms();
  json_t *levels = json_array();
  for (int i = 0; levels && i < CT__BLEVELS; i++)
    if (json_array_append_new(levels, level_stats(r, i, now_ms)) != 0) {
      json_decref(levels);
      levels = NULL;
    }
  /* The queue's name, from the prefix "<ns>:{<queue>}:". */
  const char *open = strchr(b->prefix, '{');
  int qlen = (int)(strchr(open, '}') - open - 1);
  return levels ? json_pack("{s:s%,s:o,s:I,s:I,s:I}", "queue", open + 1, (size_t)qlen,
                            "levels", levels, "delayed", (json_int_t)int_at(r, 7), "dead",
                            (json_int_t)int_at(r, 4), "workers", (json_int_t)int_at(r, 6))
                : NULL;
}

int ct_broker_queue_stats(ct_broker_t *b, json_t **out) {
  if (!b || !out)
    return CT_EINVAL;
  *out = NULL;
  char *keys[8] = {NULL};
  int rc = 0;
  for (int i = 0; i < CT__BLEVELS; i++)
    keys[i] = ct__broker_key(b, "stream:", ct__blevel_names[i]);
  keys[4] = ct__broker_key(b, "dead", "");
  keys[5] = ct__broker_key(b, "stats", "");
  keys[6] = ct__broker_key(b, "workers", "");
  keys[7] = ct__broker_key(b, "delayed", "");
  for (int i = 0; i < 8; i++)
    if (!keys[i])
      rc = CT_ENOMEM;
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)ct__broker_unix_ms());
  json_t *r = NULL;
  if (rc == 0) {
    const char *argv[] = {"EVAL", stats_script, "8", keys[0], keys[1], keys[2], keys[3],
                          keys[4], keys[5], keys[6], keys[7], CT__BGROUP, now};
    rc = command_json(b, 13, argv, &r);
  }
  if (rc == 0 && !(*out = shape_stats(b, r)))
    rc = CT_ENOMEM;
  json_decref(r);
  for (int i = 0; i < 8; i++)
    free(keys[i]);
  return rc;
}

/* --- dead letters ------------------------------------------------------- */

/* An entry id as XADD makes them: "<ms>-<seq>", both decimal. */
static bool entry_id_ok(const char *s) {
  size_t n = strspn(s, "0123456789");
  return n > 0 && n <= 20 && s[n] == '-' && strspn(s + n + 1, "0123456789") > 0 &&
         s[n + 1 + strspn(s + n + 1, "0123456789")] == '\0' && strlen(s) < 48;
}

/* One [id, [field, value...]] entry as an object: its own id as
 * "dead_entry" (its field "entry" is the id it had in its stream). */
static json_t *dead_object(const json_t *e) {
  const json_t *f = json_array_get(e, 1);
  json_t *o = json_pack("{s:O}", "dead_entry", json_array_get(e, 0));
  for (size_t i = 0; o && i + 1 < json_array_size(f); i += 2) {
    const char *k = json_string_value(json_array_get(f, i));
    if (k && json_object_set(o, k, json_array_get(f, i + 1)) != 0) {
      json_decref(o);
      o = NULL;
    }
  }
  return o;
}

static int dead_range(ct_broker_t *b, const char *start, const char *end, size_t count,
                      json_t **out) {
  char *key = ct__broker_key(b, "dead", "");
  char n[24];
  snprintf(n, sizeof n, "%zu", count);
  json_t *r = NULL;
  const char *argv[] = {"XRANGE", key, start, end, "COUNT", n};
  int rc = key ? command_json(b, 6, argv, &r) : CT_ENOMEM;
  free(key);
  json_t *list = rc == 0 ? json_array() : NULL;
  for (size_t i = 0; rc == 0 && i < json_array_size(r); i++)
    if (!list || json_array_append_new(list, dead_object(json_array_get(r, i))) != 0)
      rc = CT_ENOMEM;
  json_decref(r);
  if (rc != 0)
    json_decref(list);
  *out = rc == 0 ? list : NULL;
  return rc;
}

int ct_broker_dead_list(ct_broker_t *b, const char *after, size_t count, json_t **out) {
  if (out)
    *out = NULL;
  if (!b || !out || count < 1 || count > DEAD_LIST_MAX || (after && !entry_id_ok(after)))
    return CT_EINVAL;
  char start[64] = "-";
  if (after)
    snprintf(start, sizeof start, "(%s", after);
  return dead_range(b, start, "+", count, out);
}

int ct_broker_dead_get(ct_broker_t *b, const char *entry, json_t **out) {
  if (out)
    *out = NULL;
  if (!b || !out || !entry || !entry_id_ok(entry))
    return CT_EINVAL;
  json_t *list;
  int rc = dead_range(b, entry, entry, 1, &list);
  if (rc == 0 && json_array_size(list) == 0)
    rc = CT_ENOENT;
  if (rc == 0)
    *out = json_incref(json_array_get(list, 0));
  json_decref(list);
  return rc;
}

/* The level its "stream" field names (one of ct__blevel_names), or NULL. */
static const char *level_field(const ct__bfield_t *f, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (f[i].name_len != 6 || memcmp(f[i].name, "stream", 6) != 0)
      continue;
    for (int l = 0; l < CT__BLEVELS; l++)
      if (f[i].value_len == strlen(ct__blevel_names[l]) &&
          memcmp(f[i].value, ct__blevel_names[l], f[i].value_len) == 0)
        return ct__blevel_names[l];
  }
  return NULL;
}

/* A dead letter read for a retry: its task id and level, if a worker
 * would run it. */
typedef struct {
  const ct_broker_t *b;
  const char *entry;
  char id[CT_BROKER_ID_SIZE];
  const char *level;
} dead_check_t;

/* The reply to XRANGE of one dead letter. Its fields are decoded as a
 * worker decodes them, from their bytes as stored (as JSON, a name that is
 * not UTF-8 shows with its bad bytes replaced, and passed a name check):
 * 0 and d->id, d->level; CT_EINVAL, logged, if a worker would bury it
 * again or it names no level; CT_ENOENT. */
static int dead_check_reply(const redisReply *r, void *data) {
  dead_check_t *d = data;
  if (r->type == REDIS_REPLY_ERROR) {
    ct__broker_log(d->b, CT_LOG_ERROR, "an operator read failed: %s", r->str);
    return CT_EINVAL;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0)
    return CT_ENOENT;
  const redisReply *e = r->element[0];
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[1]->type != REDIS_REPLY_ARRAY)
    return CT_EINVAL;
  size_t n;
  ct__bfield_t *f = ct__bfields_of(e->element[1], &n);
  if (!f)
    return CT_ENOMEM;
  ct__bmsg_t m;
  const char *reason = "it names no level";
  int rc = (d->level = level_field(f, n)) ? ct__bmsg_decode(f, n, SIZE_MAX, &m, &reason)
                                          : CT_EINVAL;
  free(f);
  if (rc == 0) {
    memcpy(d->id, m.id, CT_BROKER_ID_SIZE);
    ct__bmsg_clear(&m);
  } else if (rc == CT_EINVAL) {
    ct__broker_log(d->b, CT_LOG_ERROR,
                   "dead letter %s is not retried: a worker would bury it again: %s", d->entry,
                   reason);
  }
  return rc;
}

int ct_broker_dead_retry(ct_broker_t *b, const char *entry, char id[CT_BROKER_ID_SIZE]) {
  if (!b || !entry || !id || !entry_id_ok(entry))
    return CT_EINVAL;
  dead_check_t d = {.b = b, .entry = entry};
  char *keys[3] = {ct__broker_key(b, "dead", ""), NULL, NULL};
  const char *read[] = {"XRANGE", keys[0], entry, entry};
  int rc = keys[0] ? ct__rconn_command(b->conn, 4, read, NULL, dead_check_reply, &d) : CT_ENOMEM;
  if (rc != 0) {
    free(keys[0]);
    return rc;
  }
  keys[1] = ct__broker_key(b, "stream:", d.level);
  keys[2] = ct__broker_key(b, "task:", d.id);
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)ct__broker_unix_ms());
  json_t *r = NULL;
  const char *argv[] = {"EVAL", retry_script, "3", keys[0], keys[1], keys[2],
                        entry, now, d.id, d.level};
  rc = keys[1] && keys[2] ? command_json(b, 10, argv, &r) : CT_ENOMEM;
  if (rc == 0)
    rc = json_integer_value(r) == 1 ? 0 : json_integer_value(r) == 0 ? CT_ENOENT : CT_EINVAL;
  if (rc == 0)
    memcpy(id, d.id, CT_BROKER_ID_SIZE);
  json_decref(r);
  for (int i = 0; i < 3; i++)
    free(keys[i]);
  return rc;
}

int ct_broker_dead_purge(ct_broker_t *b, const char *entry, long long *removed) {
  if (removed)
    *removed = 0;
  if (!b || (entry && !entry_id_ok(entry)))
    return CT_EINVAL;
  char *key = ct__broker_key(b, "dead", "");
  json_t *r = NULL;
  int rc = CT_ENOMEM;
  if (key && entry) {
    const char *argv[] = {"XDEL", key, entry};
    rc = command_json(b, 3, argv, &r);
  } else if (key) {
    const char *argv[] = {"EVAL", purge_script, "1", key};
    rc = command_json(b, 4, argv, &r);
  }
  free(key);
  if (rc == 0 && removed)
    *removed = json_integer_value(r);
  json_decref(r);
  return rc;
}

/* --- workers ------------------------------------------------------------ */

/* {consumer, expiry ms, record JSON} as the record's object with
 * "consumer" and "expires" added; a record that is not a JSON object (a
 * foreign writer's) keeps only those two. */
static json_t *worker_object(const json_t *w) {
  const char *text = json_string_value(json_array_get(w, 2));
  json_t *o = text ? json_loads(text, 0, NULL) : NULL;
  if (!json_is_object(o)) {
    json_decref(o);
    o = json_object();
  }
  double expires = (double)strtoll(json_string_value(json_array_get(w, 1)) ?: "0", NULL, 10);
  if (o && (json_object_set(o, "consumer", json_array_get(w, 0)) != 0 ||
            json_object_set_new(o, "expires", json_real(expires / 1000.0)) != 0)) {
    json_decref(o);
    o = NULL;
  }
  return o;
}

/* The records (MGET) of the live workers in the flat [name, score...]
 * reply of ZRANGEBYSCORE ... WITHSCORES. */
static int worker_records(ct_broker_t *b, const json_t *live, json_t **out) {
  size_t n = json_array_size(live) / 2;
  const char **argv = calloc(n + 1, sizeof *argv);
  char **keys = calloc(n + 1, sizeof *keys);
  int rc = argv && keys ? 0 : CT_ENOMEM;
  if (rc == 0)
    argv[0] = "MGET";
  for (size_t i = 0; rc == 0 && i < n; i++) {
    keys[i] = ct__broker_key(b, "worker:", json_string_value(json_array_get(live, 2 * i)));
    argv[i + 1] = keys[i];
    if (!keys[i])
      rc = CT_ENOMEM;
  }
  if (rc == 0)
    rc = command_json(b, (int)n + 1, argv, out);
  for (size_t i = 0; keys && i < n; i++)
    free(keys[i]);
  free(keys);
  free(argv);
  return rc;
}

int ct_broker_workers(ct_broker_t *b, json_t **out) {
  if (out)
    *out = NULL;
  if (!b || !out)
    return CT_EINVAL;
  char *key = ct__broker_key(b, "workers", "");
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)ct__broker_unix_ms());
  json_t *live = NULL, *recs = NULL;
  const char *argv[] = {"ZRANGEBYSCORE", key, now, "+inf", "WITHSCORES"};
  int rc = key ? command_json(b, 5, argv, &live) : CT_ENOMEM;
  free(key);
  if (rc == 0 && json_array_size(live) > 0)
    rc = worker_records(b, live, &recs);
  json_t *list = rc == 0 ? json_array() : NULL;
  for (size_t i = 0; rc == 0 && i < json_array_size(recs); i++) {
    const json_t *rec = json_array_get(recs, i);
    if (json_is_null(rec))
      continue; /* expired between the two reads */
    json_t *w = json_pack("[O,O,O]", json_array_get(live, 2 * i), json_array_get(live, 2 * i + 1),
                          rec);
    if (!list || !w || json_array_append_new(list, worker_object(w)) != 0)
      rc = CT_ENOMEM;
    json_decref(w);
  }
  json_decref(live);
  json_decref(recs);
  if (rc != 0)
    json_decref(list);
  *out = rc == 0 ? list : NULL;
  return rc;
}
