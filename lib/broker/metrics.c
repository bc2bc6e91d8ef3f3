/* A worker's task events: the user's observer, and the queue's counters.
 *
 * worker.c calls ct__bmetrics_start() before a task's handler, on the
 * pool thread that runs it, and ct__bmetrics_end() once its outcome is
 * stored, on the worker's store thread (on the pool thread for an outcome
 * that stores nothing), and ct__bmetrics_dead() on its fetch thread for each entry it
 * moved to the dead letters (by the name the bury script read from the
 * entry itself). The observer (ct_broker_worker_observe()) hears all
 * three; the dead letters' count in Redis is their stream's length. The
 * counters of completed and failed tasks per level, which operators read
 * (and retried and expired ones) per level, which operators read
 * with ct_broker_queue_stats(), live in Redis (`<prefix>stats`, a hash) so
 * that every worker's count adds up; writing them once per task would cost
 * a round trip per task, so they are kept here and added to the hash in one
 * command at most once a second while tasks run, and at most every tenth of
 * a second once none runs: when the last one ends, or when the fetch thread
 * is about to wait for work (ct__bmetrics_idle(), at least once a second
 * while it waits), and at most once a second while it waits for a slot
 * (ct__bmetrics_due(): runs that hold every slot for an hour held the
 * counts of the runs before them back as long). So counts reach Redis
 * within about a second of a task's end; writing them whenever no task ran
 * cost a write per task or two to a worker whose tasks came one at a time. A retiring worker writes what is
 * left (ct__bmetrics_final()). A write that fails is kept for the next one.
 *
 * Lock: m->lock guards the counts, in_flight and last_flush; the write to
 * Redis is made outside it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "broker-internal.h"
#include "ctasker/broker-admin.h"
#include "metrics.h"
#include "script.h"

#define FLUSH_EVERY 1.0       /* seconds between counter writes while tasks run */
#define IDLE_FLUSH_EVERY 0.1  /* ... and while none runs */

/* The counters, by outcome: the hash's fields are "<level>:<name>". */
#define NCOUNTERS 4
static const char *const counter_names[NCOUNTERS] = {"completed", "failed", "retried",
                                                     "expired"};

/* The counter of an outcome, or -1 for one not counted (a lost lease). */
static int counter_of(ct_broker_status_t outcome) {
  switch (outcome) {
  case CT_BROKER_COMPLETED:
    return 0;
  case CT_BROKER_FAILED:
    return 1;
  case CT_BROKER_RETRYING:
    return 2;
  case CT_BROKER_EXPIRED:
    return 3;
  default:
    return -1;
  }
}

/* KEYS: the counters hash. ARGV: field, increment, field, increment... */
static const char add_script[] =
    "for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end\n"
    "return 1\n";
static ct__bscript_t add_lua = CT__BSCRIPT_INIT(add_script);

struct ct__bmetrics {
  ct_broker_observe_fn fn; /* set before the worker starts, then read-only */
  void *data;
  pthread_mutex_t lock;
  long long counts[CT__BLEVELS][NCOUNTERS]; /* lock: not yet written */
  int in_flight;                    /* lock */
  double last_flush;                /* lock: ct_now() of the last write */
};

/* The handle's metrics, made on first use (under the handle's lock). */
static ct__bmetrics_t *metrics_of(ct_broker_t *b) {
  pthread_mutex_lock(&b->lock);
  if (!b->metrics) {
    ct__bmetrics_t *m = calloc(1, sizeof *m);
    if (m && pthread_mutex_init(&m->lock, NULL) != 0) {
      free(m);
      m = NULL;
    }
    if (m)
      m->last_flush = ct_now();
    b->metrics = m;
  }
  ct__bmetrics_t *m = b->metrics;
  pthread_mutex_unlock(&b->lock);
  if (!m)
    ct__broker_log(b, CT_LOG_WARNING, "no memory for the worker's counters: a task goes uncounted");
  return m;
}

int ct_broker_worker_observe(ct_broker_t *b, ct_broker_observe_fn fn, void *data) {
  if (!b)
    return CT_EINVAL;
  ct__bmetrics_t *m = metrics_of(b);
  if (!m)
    return CT_ENOMEM;
  pthread_mutex_lock(&b->lock);
  int rc = b->worker ? CT_EBUSY : 0;
  if (rc == 0) {
    m->fn = fn;
    m->data = data;
  }
  pthread_mutex_unlock(&b->lock);
  return rc;
}

static void tell(const ct__bmetrics_t *m, const ct__bmsg_t *msg, int level,
                 ct_broker_event_kind_t kind, ct_broker_status_t status, double wait,
                 double run) {
  if (!m->fn)
    return;
  ct_broker_event_t e = {kind, msg->name, msg->id, ct__blevel_names[level], status,
                         wait, run};
  m->fn(&e, m->data);
}

double ct__bmetrics_start(ct_broker_t *b, const ct__bmsg_t *msg, int level) {
  double now = ct_now();
  ct__bmetrics_t *m = metrics_of(b);
  if (!m)
    return now;
  pthread_mutex_lock(&m->lock);
  m->in_flight++;
  pthread_mutex_unlock(&m->lock);
  double wait = (double)(ct__broker_unix_ms() - msg->enqueued_ms) / 1000.0;
  tell(m, msg, level, CT_BROKER_EVENT_START, CT_BROKER_RUNNING, fmax(wait, 0.0), 0.0);
  return now;
}

static int add_reply(const redisReply *r, void *data) {
  (void)data;
  return r->type == REDIS_REPLY_ERROR ? CT_EINVAL : 0;
}

/* Write the counts taken out of m; those that could not be written go
 * back. */
static void flush(ct_broker_t *b, ct__bmetrics_t *m,
                  long long counts[CT__BLEVELS][NCOUNTERS]) {
  char *key = ct__broker_key(b, "stats", "");
  char fields[CT__BLEVELS * NCOUNTERS][40], values[CT__BLEVELS * NCOUNTERS][24];
  /* 0 and 1: EVALSHA and the SHA1, filled when the script runs */
  const char *argv[4 + 2 * CT__BLEVELS * NCOUNTERS] = {NULL, NULL, "1", key};
  int argc = 4;
  for (int l = 0; l < CT__BLEVELS; l++)
    for (int f = 0; f < NCOUNTERS; f++) {
      if (counts[l][f] == 0)
        continue;
      int i = (argc - 4) / 2;
      snprintf(fields[i], sizeof fields[i], "%s:%s", ct__blevel_names[l], counter_names[f]);
      snprintf(values[i], sizeof values[i], "%lld", counts[l][f]);
      argv[argc++] = fields[i];
      argv[argc++] = values[i];
    }
  int rc = key ? ct__bscript_run(b->conn, &add_lua, 0, argc, argv, NULL, add_reply, NULL)
               : CT_ENOMEM;
  free(key);
  if (rc == 0)
    return;
  ct__broker_log(b, CT_LOG_WARNING, "the queue's counters were not written (%s): kept for later",
                 ct_strerror(rc));
  pthread_mutex_lock(&m->lock);
  for (int l = 0; l < CT__BLEVELS; l++)
    for (int f = 0; f < NCOUNTERS; f++)
      m->counts[l][f] += counts[l][f];
  pthread_mutex_unlock(&m->lock);
}

/* Under m->lock: if some counts are not yet written and the last write is
 * at least `every` seconds old, move them to taken; true if it did. */
static bool take_due(ct__bmetrics_t *m, double now, double every,
                     long long taken[CT__BLEVELS][NCOUNTERS]) {
  static const long long none[CT__BLEVELS][NCOUNTERS];
  if (now - m->last_flush < every || memcmp(m->counts, none, sizeof none) == 0)
    return false;
  memcpy(taken, m->counts, sizeof m->counts);
  memset(m->counts, 0, sizeof m->counts);
  m->last_flush = now;
  return true;
}

void ct__bmetrics_end(ct_broker_t *b, const ct__bmsg_t *msg, int level,
                      ct_broker_status_t outcome, double started) {
  ct__bmetrics_t *m = metrics_of(b);
  if (!m)
    return;
  double now = ct_now();
  tell(m, msg, level, CT_BROKER_EVENT_END, outcome, 0.0, fmax(now - started, 0.0));
  long long taken[CT__BLEVELS][NCOUNTERS];
  int counter = counter_of(outcome);
  pthread_mutex_lock(&m->lock);
  m->in_flight--;
  if (counter >= 0)
    m->counts[level][counter]++;
  bool due = take_due(m, now, m->in_flight == 0 ? IDLE_FLUSH_EVERY : FLUSH_EVERY, taken);
  pthread_mutex_unlock(&m->lock);
  if (due)
    flush(b, m, taken);
}

/* Write what is not yet written if the last write is at least `idle`
 * seconds old while no task runs, `busy` seconds while some do (INFINITY:
 * not then). */
static void flush_older(ct_broker_t *b, double idle, double busy) {
  ct__bmetrics_t *m = metrics_of(b);
  if (!m)
    return;
  long long taken[CT__BLEVELS][NCOUNTERS];
  pthread_mutex_lock(&m->lock);
  bool due = take_due(m, ct_now(), m->in_flight == 0 ? idle : busy, taken);
  pthread_mutex_unlock(&m->lock);
  if (due)
    flush(b, m, taken);
}

void ct__bmetrics_idle(ct_broker_t *b) { flush_older(b, IDLE_FLUSH_EVERY, INFINITY); }

void ct__bmetrics_due(ct_broker_t *b) { flush_older(b, FLUSH_EVERY, FLUSH_EVERY); }

void ct__bmetrics_final(ct_broker_t *b) { flush_older(b, 0, INFINITY); }

/* The name comes from a malformed entry as it was (and cut to fit): it is
 * made UTF-8 for the observer, who may put it in JSON or a metrics label
 * (a label that is not UTF-8 spoils a whole Prometheus scrape). */
void ct__bmetrics_dead(ct_broker_t *b, const char *name, const char *id, int level) {
  ct__bmetrics_t *m = metrics_of(b);
  if (!m || !m->fn)
    return;
  bool valid = ct__utf8_valid(name, strlen(name));
  char *repaired = valid ? NULL : ct__utf8_repair(name);
  ct_broker_event_t e = {CT_BROKER_EVENT_DEAD, valid ? name : repaired ? repaired : "", id,
                         level >= 0 ? ct__blevel_names[level] : "delayed", CT_BROKER_DEAD,
                         0.0, 0.0};
  m->fn(&e, m->data);
  free(repaired);
}

void ct__bmetrics_free(ct__bmetrics_t *m) {
  if (!m)
    return;
  pthread_mutex_destroy(&m->lock);
  free(m);
}
