/* The broker's message codec (see message.h and docs/wire-format.md).
 *
 * Decoding is the edge where bytes from the network become a task, so it
 * trusts nothing: every field is checked for presence, repetition, length,
 * embedded NULs and form before anything is allocated for it, and a
 * malformed entry comes back as CT_EINVAL with a reason for the dead
 * letters, never a crash. Numbers are plain decimal, as Redis writes them.
 */
#include "message.h"
#include "base/utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int ct__bmsg_new_id(char id[CT_BROKER_ID_SIZE]) {
  unsigned char b[16];
  size_t have = 0;
  while (have < sizeof b) {
    ssize_t n = getrandom(b + have, sizeof b - have, 0);
    if (n < 0 && errno != EINTR)
      return CT_EAGAIN;
    if (n > 0)
      have += (size_t)n;
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(id, CT_BROKER_ID_SIZE,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
           b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
           b[15]);
  return 0;
}

bool ct__bmsg_name_ok(const char *name, size_t len) {
  if (len == 0 || len > CT__BMSG_NAME_MAX)
    return false;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
      return false;
  return ct__utf8_valid(name, len);
}

bool ct__bmsg_id_ok(const char *s, size_t len) {
  if (len != CT_BROKER_ID_SIZE - 1)
    return false;
  for (size_t i = 0; i < len; i++) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  }
  return true;
}

static void wire_add(ct__bmsg_wire_t *w, const char *name, const char *value, size_t len) {
  w->argv[w->argc] = name;
  w->argvlen[w->argc++] = strlen(name);
  w->argv[w->argc] = value;
  w->argvlen[w->argc++] = len;
}

/* Whether every key and string in j is UTF-8: jansson's *_nocheck calls
 * can make them otherwise. */
static bool texts_utf8(json_t *j) {
  const char *key;
  json_t *v;
  size_t i;
  switch (json_typeof(j)) {
  case JSON_STRING:
    return ct__utf8_valid(json_string_value(j), json_string_length(j));
  case JSON_ARRAY:
    json_array_foreach(j, i, v) {
      if (!texts_utf8(v))
        return false;
    }
    return true;
  case JSON_OBJECT:
    json_object_foreach(j, key, v) {
      if (!ct__utf8_valid(key, strlen(key)) || !texts_utf8(v))
        return false;
    }
    return true;
  default:
    return true;
  }
}

int ct__bmsg_encode(const ct__bmsg_t *m, ct__bmsg_wire_t *w) {
  memset(w, 0, sizeof *w);
  /* json_dumps() refuses a string that is not UTF-8 (which read as a want
   * of memory), and writes such a key as broken JSON that a worker would
   * bury: both are bad input. */
  if (!texts_utf8(m->kwargs))
    return CT_EINVAL;
  w->kwargs_text = json_dumps(m->kwargs, JSON_COMPACT);
  if (!w->kwargs_text)
    return CT_ENOMEM;
  size_t len = strlen(w->kwargs_text);
  snprintf(w->enqueued, sizeof w->enqueued, "%" PRId64, m->enqueued_ms);
  wire_add(w, "id", m->id, strlen(m->id));
  wire_add(w, "name", m->name, strlen(m->name));
  wire_add(w, "kwargs", w->kwargs_text, len);
  wire_add(w, "enqueued", w->enqueued, strlen(w->enqueued));
  /* The optional fields, written only when set: an entry stays as short as
   * the options it uses. */
  const char *names[] = {"deadline", "max_attempts", "backoff", "backoff_max", "timeout"};
  const int64_t values[] = {m->deadline_ms, m->max_attempts, m->backoff_ms,
                            m->backoff_max_ms, m->timeout_ms};
  for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
    if (values[i] <= 0)
      continue;
    snprintf(w->numbers[i], sizeof w->numbers[i], "%" PRId64, values[i]);
    wire_add(w, names[i], w->numbers[i], strlen(w->numbers[i]));
  }
  return 0;
}

void ct__bmsg_wire_free(ct__bmsg_wire_t *w) {
  free(w->kwargs_text);
  w->kwargs_text = NULL;
}

static bool field_is(const ct__bfield_t *f, const char *name) {
  return f->name_len == strlen(name) && memcmp(f->name, name, f->name_len) == 0;
}

/* A non-negative decimal integer of at most 18 digits (no sign, no
 * spaces), as Redis and every producer write it. */
static bool parse_count(const char *s, size_t len, int64_t *out) {
  if (len == 0 || len > 18)
    return false;
  int64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

/* The value of the one field named `name`: NULL if absent; *repeated set
 * if it occurs more than once. */
static const ct__bfield_t *find_field(const ct__bfield_t *f, size_t n, const char *name,
                                      bool *repeated) {
  const ct__bfield_t *found = NULL;
  for (size_t i = 0; i < n; i++) {
    if (!field_is(&f[i], name))
      continue;
    if (found)
      *repeated = true;
    found = &f[i];
  }
  return found;
}

int64_t ct__bmsg_attempt(const ct__bfield_t *f, size_t n) {
  bool repeated = false;
  const ct__bfield_t *v = find_field(f, n, "attempt", &repeated);
  int64_t a;
  return v && parse_count(v->value, v->value_len, &a) && a >= 1 && a <= CT__BMSG_ATTEMPT_MAX
             ? a
             : 1;
}

/* Parse JSON text that must be an object (kwargs) or any value (results). */
static json_t *parse_json(const ct__bfield_t *v, bool object_only, int *err) {
  json_error_t jerr;
  json_t *j = json_loadb(v->value, v->value_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                         &jerr);
  if (!j) {
    *err = json_error_code(&jerr) == json_error_out_of_memory ? CT_ENOMEM : CT_EINVAL;
    return NULL;
  }
  if (object_only && !json_is_object(j)) {
    json_decref(j);
    *err = CT_EINVAL;
    return NULL;
  }
  return j;
}

static const char *check_message_fields(const ct__bfield_t *id, const ct__bfield_t *name,
                                        const ct__bfield_t *kwargs, const ct__bfield_t *enq,
                                        bool repeated) {
  if (repeated)
    return "a field occurs twice";
  if (!id || !ct__bmsg_id_ok(id->value, id->value_len))
    return "missing or bad id";
  if (!name || !ct__bmsg_name_ok(name->value, name->value_len))
    return "missing or bad name";
  if (!kwargs)
    return "missing kwargs";
  if (!enq)
    return "missing enqueued";
  return NULL;
}

/* The optional numeric fields: each absent, or once, a positive decimal. */
static const char *decode_optional(const ct__bfield_t *f, size_t n, ct__bmsg_t *m) {
  static const char *const names[] = {"deadline", "max_attempts", "backoff", "backoff_max",
                                      "timeout"};
  static const char *const bad[] = {"bad deadline", "bad max_attempts", "bad backoff",
                                    "bad backoff_max", "bad timeout"};
  int64_t *values[] = {&m->deadline_ms, &m->max_attempts, &m->backoff_ms, &m->backoff_max_ms,
                       &m->timeout_ms};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    bool repeated = false;
    const ct__bfield_t *v = find_field(f, n, names[i], &repeated);
    if (repeated)
      return "a field occurs twice";
    if (v && (!parse_count(v->value, v->value_len, values[i]) || *values[i] == 0))
      return bad[i];
  }
  return NULL;
}

int ct__bmsg_decode(const ct__bfield_t *f, size_t n, size_t max_kwargs, ct__bmsg_t *m,
                    const char **reason) {
  bool repeated = false;
  const ct__bfield_t *id = find_field(f, n, "id", &repeated);
  const ct__bfield_t *name = find_field(f, n, "name", &repeated);
  const ct__bfield_t *kwargs = find_field(f, n, "kwargs", &repeated);
  const ct__bfield_t *enq = find_field(f, n, "enqueued", &repeated);
  memset(m, 0, sizeof *m);
  *reason = check_message_fields(id, name, kwargs, enq, repeated);
  if (!*reason && !parse_count(enq->value, enq->value_len, &m->enqueued_ms))
    *reason = "bad enqueued";
  if (!*reason)
    *reason = decode_optional(f, n, m);
  if (*reason)
    return CT_EINVAL;
  if (kwargs->value_len > max_kwargs) {
    *reason = "kwargs over the payload limit";
    return CT_ENOBUFS;
  }
  int err = 0;
  m->kwargs = parse_json(kwargs, true, &err);
  if (!m->kwargs) {
    *reason = "kwargs is not a JSON object";
    return err;
  }
  memcpy(m->id, id->value, id->value_len);
  memcpy(m->name, name->value, name->value_len);
  return 0;
}

void ct__bmsg_clear(ct__bmsg_t *m) {
  json_decref(m->kwargs);
  m->kwargs = NULL;
}

static const char *const status_names[] = {
    [CT_BROKER_QUEUED] = "queued",       [CT_BROKER_RUNNING] = "running",
    [CT_BROKER_COMPLETED] = "completed", [CT_BROKER_FAILED] = "failed",
    [CT_BROKER_DEAD] = "dead",           [CT_BROKER_DELAYED] = "delayed",
    [CT_BROKER_RETRYING] = "retrying",   [CT_BROKER_EXPIRED] = "expired",
};

bool ct__bstatus_terminal(ct_broker_status_t s) {
  return s == CT_BROKER_COMPLETED || s == CT_BROKER_FAILED || s == CT_BROKER_DEAD ||
         s == CT_BROKER_EXPIRED;
}

int ct__bcall_outcome(ct_broker_info_t *info) {
  if (info->status != CT_BROKER_EXPIRED)
    return 0;
  json_decref(info->result);
  info->result = NULL;
  return CT_ETIMEDOUT;
}

static bool parse_status(const ct__bfield_t *v, ct_broker_status_t *out) {
  for (size_t i = 0; i < sizeof status_names / sizeof *status_names; i++) {
    if (v->value_len == strlen(status_names[i]) &&
        memcmp(v->value, status_names[i], v->value_len) == 0) {
      *out = (ct_broker_status_t)i;
      return true;
    }
  }
  return false;
}

/* An optional millisecond time field as seconds (0 if absent). */
static bool parse_time(const ct__bfield_t *v, double *out) {
  int64_t ms = 0;
  if (v && !parse_count(v->value, v->value_len, &ms))
    return false;
  *out = (double)ms / 1000.0;
  return true;
}

static const char *decode_record_scalars(const ct__bfield_t *f, size_t n,
                                         ct_broker_info_t *info) {
  bool repeated = false;
  const ct__bfield_t *status = find_field(f, n, "status", &repeated);
  const ct__bfield_t *attempts = find_field(f, n, "attempts", &repeated);
  const ct__bfield_t *created = find_field(f, n, "created", &repeated);
  const ct__bfield_t *started = find_field(f, n, "started", &repeated);
  const ct__bfield_t *finished = find_field(f, n, "finished", &repeated);
  int64_t count = 0;
  if (repeated)
    return "a field occurs twice";
  if (!status || !parse_status(status, &info->status))
    return "missing or bad status";
  if (attempts && (!parse_count(attempts->value, attempts->value_len, &count) ||
                   count > 1000000000))
    return "bad attempts";
  info->attempts = (int)count;
  if (!created || !parse_time(created, &info->created))
    return "missing or bad created";
  if (!parse_time(started, &info->started) || !parse_time(finished, &info->finished))
    return "bad started or finished";
  return NULL;
}

int ct__brecord_decode(const ct__bfield_t *f, size_t n, ct_broker_info_t *info,
                       const char **reason) {
  memset(info, 0, sizeof *info);
  *reason = decode_record_scalars(f, n, info);
  if (*reason)
    return CT_EINVAL;
  bool repeated = false;
  const ct__bfield_t *result = find_field(f, n, "result", &repeated);
  if (!ct__bstatus_terminal(info->status))
    return 0; /* a result of an earlier run that failed is not the answer */
  if (!result || repeated) {
    *reason = "a terminal record without one result";
    return CT_EINVAL;
  }
  int err = 0;
  info->result = parse_json(result, false, &err);
  if (!info->result) {
    *reason = "result is not JSON";
    return err;
  }
  return 0;
}

int ct__bdone_decode(const char *s, size_t len, ct_broker_info_t *info) {
  memset(info, 0, sizeof *info);
  if (len == 0 || s[0] != '[')
    return CT_EAGAIN;
  json_error_t jerr;
  json_t *a = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!a)
    return json_error_code(&jerr) == json_error_out_of_memory ? CT_ENOMEM : CT_EAGAIN;
  json_t *status = json_array_get(a, 0);
  ct__bfield_t v = {NULL, 0, json_string_value(status), json_string_length(status)};
  int rc = json_array_size(a) == 2 && v.value && parse_status(&v, &info->status) &&
                   ct__bstatus_terminal(info->status)
               ? 0
               : CT_EAGAIN;
  if (rc == 0)
    info->result = json_incref(json_array_get(a, 1));
  json_decref(a);
  return rc;
}
