/* The broker's message codec: a task message <-> the fields of its stream
 * entry, and a task record's fields -> ct_broker_info_t. It knows nothing
 * of Redis: fields go in and out as byte strings with lengths, the way any
 * client hands them over. docs/wire-format.md describes the fields.
 * Nothing is shared; every call works on what it is given. */
#ifndef CT_BROKER_MESSAGE_H
#define CT_BROKER_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "ctasker/broker.h"

/* Longest task name, in bytes. */
#define CT__BMSG_NAME_MAX 200

/* One field of an entry or record: borrowed bytes, not NUL-terminated. */
typedef struct ct__bfield {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} ct__bfield_t;

/* A task message, as a stream entry carries it. */
typedef struct ct__bmsg {
  char id[CT_BROKER_ID_SIZE];
  char name[CT__BMSG_NAME_MAX + 1];
  json_t *kwargs;      /* owned; a JSON object */
  int64_t enqueued_ms; /* Unix time of the submission, milliseconds */
  int64_t deadline_ms; /* Unix ms after which the caller waits no more; 0: none */
  int64_t max_attempts;   /* runs in all; 0: 1 */
  int64_t backoff_ms;     /* pause before the first retry; 0: the default */
  int64_t backoff_max_ms; /* longest pause before a retry; 0: the default */
  int64_t timeout_ms;     /* longest run; 0: none */
} ct__bmsg_t;

/* Fields of the message encoded for a stream entry: argv/argvlen are
 * name, value, name, value...; the strings live in the struct (and in
 * kwargs_text, owned) until ct__bmsg_wire_free(). The first
 * CT__BMSG_FIXED_ARGC strings are always id, name, kwargs and enqueued, in
 * this order, with their values; the optional fields follow. */
#define CT__BMSG_FIELDS 9
#define CT__BMSG_FIXED_ARGC 8
typedef struct ct__bmsg_wire {
  size_t argc;
  const char *argv[2 * CT__BMSG_FIELDS];
  size_t argvlen[2 * CT__BMSG_FIELDS];
  char *kwargs_text;
  char enqueued[24];
  char numbers[5][24]; /* the optional numeric fields' values */
} ct__bmsg_wire_t;

/* A new random (version 4) UUID string in id. Returns 0 or CT_EAGAIN if the
 * system has no randomness to give. */
int ct__bmsg_new_id(char id[CT_BROKER_ID_SIZE]);

/* True if name is a valid task name: 1..CT__BMSG_NAME_MAX bytes of UTF-8
 * (names go into JSON: liveness records, events, metrics labels), none of
 * them a control character. */
bool ct__bmsg_name_ok(const char *name, size_t len);

/* True if s[0..len) is a UUID string in canonical lower-case form. */
bool ct__bmsg_id_ok(const char *s, size_t len);

/* Encode m. Returns 0, CT_EINVAL (a key or string of its kwargs is not
 * UTF-8), or CT_ENOMEM; w is then freed with
 * ct__bmsg_wire_free() (also safe after an error). */
int ct__bmsg_encode(const ct__bmsg_t *m, ct__bmsg_wire_t *w);
void ct__bmsg_wire_free(ct__bmsg_wire_t *w);

/* Decode an entry's fields into *m (m->kwargs is then a new reference; free
 * with ct__bmsg_clear()). Fields it does not know are skipped (a newer
 * producer may add some). Returns 0; CT_EINVAL for a malformed entry, with
 * *reason a static string saying what is wrong (a missing, repeated or bad
 * field); CT_ENOBUFS if kwargs is longer than max_kwargs bytes; CT_ENOMEM.
 * On error *m holds nothing to free. */
int ct__bmsg_decode(const ct__bfield_t *f, size_t n, size_t max_kwargs, ct__bmsg_t *m,
                    const char **reason);
void ct__bmsg_clear(ct__bmsg_t *m);

/* The run an entry is for: its attempt field (the last, if repeated), or 1
 * when that is absent or not decimal digits from 1 to CT__BMSG_ATTEMPT_MAX
 * (the fetch script's rule for the entries it takes over). */
#define CT__BMSG_ATTEMPT_MAX 1000000000
int64_t ct__bmsg_attempt(const ct__bfield_t *f, size_t n);

/* True for a status no task leaves. */
bool ct__bstatus_terminal(ct_broker_status_t s);

/* What an RPC's caller gets for its ended task: 0 (info->result is the
 * answer), or CT_ETIMEDOUT for a task a worker did not run because the
 * caller's deadline had passed (EXPIRED; its result is dropped): the
 * deadline passed first, whichever of the caller's timer and the worker's
 * answer comes first. */
int ct__bcall_outcome(ct_broker_info_t *info);

/* Decode a task record's fields into *info (info->result a new reference or
 * NULL). Returns 0; CT_EINVAL with *reason for a malformed record;
 * CT_ENOMEM. On error *info holds nothing to free. */
int ct__brecord_decode(const ct__bfield_t *f, size_t n, ct_broker_info_t *info,
                       const char **reason);

/* Decode an entry of a task's done list, `["<status>",<result JSON>]`
 * (docs/wire-format.md), into info->status and info->result (a new
 * reference). Returns 0; CT_EAGAIN for anything else (a bare status, as
 * the bury script and workers before this form push, or an entry some
 * other program wrote): the task's record has the answer; CT_ENOMEM. */
int ct__bdone_decode(const char *s, size_t len, ct_broker_info_t *info);

#endif
