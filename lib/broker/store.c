/* Storing results in batches. Each stored result was one script call, so
 * one round trip and one script run in Redis per task; results that finish
 * close together now share one call. No result waits for a batch to fill:
 * the first thread to store, finding no call in flight, sends its result
 * at once; results that come while a call is in flight queue up, and when
 * it returns, one of their threads sends all of them (up to BATCH_MAX) in
 * the next call. So a lone result costs what it did, and under load the
 * calls grow with the load. Each result's thread waits until its own is
 * stored: the entry is never acknowledged before its result is written,
 * and every result is the script's to store exactly as the single one was
 * (first completion wins, per task, in the same script call). A batch
 * the server refuses is sent again one result at a time, so that one
 * result it cannot take (a key of the wrong type, say) holds up no other
 * (a batch that timed out has had its tries: each result gets that error).
 *
 * Each waiting thread sleeps on a condition of its own, in its request:
 * the sender wakes the threads of the batch it stored, and the thread at
 * the head of the queue to send the next one, and no other (a broadcast
 * to every waiter would wake them all to find the lock taken and most of
 * them with nothing to do).
 *
 * Lock: s->lock guards head, tail, sending, and the done of every queued
 * request; the sender reads a batch's strings and writes its rc without
 * it, which is safe because their threads wait for done. A request's
 * condition is signaled under the lock, so its thread, which must retake
 * the lock to return, cannot free it under the signal. */
#include <stdio.h>
#include <stdlib.h>

#include "script.h"
#include "store.h"

#define BATCH_MAX 64
#define TASK_KEYS 3
#define TASK_ARGS 6

struct ct__bstore_req {
  ct__bstore_req_t *next;
  const char *const *keys;
  const char *args[TASK_ARGS];
  int rc;    /* the sender's until done */
  bool done; /* lock */
  pthread_cond_t cond; /* its thread waits on it */
};

/* KEYS: per result: record, stream, done list. ARGV: group, default TTL
 * (s), then per result: entry id, status, result, finished (ms), name, "1"
 * if a caller waits (RPC). For each: the first completion wins; a waiting
 * caller is woken through the done list. Then every entry is acknowledged
 * and deleted, with one XACK and one XDEL per stream for all of its
 * entries (each command has a cost of its own, larger than an id's). */
static const char complete_script[] =
    "local acks, streams = {}, {}\n"
    "for i = 0, #KEYS / 3 - 1 do\n"
    "  local rec, stream, a = KEYS[3 * i + 1], KEYS[3 * i + 2], 2 + 6 * i\n"
    "  local r = redis.call('HMGET', rec, 'status', 'ttl', 'created')\n"
    "  local s = r[1]\n"
    "  if s ~= 'completed' and s ~= 'failed' and s ~= 'dead' and s ~= 'expired' then\n"
    "    redis.call('HSET', rec, 'status', ARGV[a + 2], 'result', ARGV[a + 3],"
    " 'finished', ARGV[a + 4], 'name', ARGV[a + 5], 'created', r[3] or ARGV[a + 4])\n"
    "    redis.call('EXPIRE', rec, r[2] or ARGV[2])\n"
    "  end\n"
    "  if not acks[stream] then\n"
    "    acks[stream] = {}\n"
    "    streams[#streams + 1] = stream\n"
    "  end\n"
    "  table.insert(acks[stream], ARGV[a + 1])\n"
    "  if ARGV[a + 6] == '1' then\n"
    "    redis.call('RPUSH', KEYS[3 * i + 3], ARGV[a + 2])\n"
    "    redis.call('EXPIRE', KEYS[3 * i + 3], 60)\n"
    "  end\n"
    "end\n"
    "for _, stream in ipairs(streams) do\n"
    "  redis.call('XACK', stream, ARGV[1], unpack(acks[stream]))\n"
    "  redis.call('XDEL', stream, unpack(acks[stream]))\n"
    "end\n"
    "return #KEYS / 3\n";
static ct__bscript_t complete_lua = CT__BSCRIPT_INIT(complete_script);

void ct__bstore_init(ct__bstore_t *s, ct__rconn_t *conn, const char *group,
                     const char *default_ttl, int tries) {
  *s = (ct__bstore_t){.conn = conn, .group = group, .default_ttl = default_ttl,
                      .tries = tries};
  pthread_mutex_init(&s->lock, NULL);
  s->tail = &s->head;
}

void ct__bstore_destroy(ct__bstore_t *s) {
  pthread_mutex_destroy(&s->lock);
}

static int stored_reply(const redisReply *r, void *data) {
  return r->type == REDIS_REPLY_INTEGER && r->integer == *(const long long *)data ? 0
                                                                                  : CT_EINVAL;
}

/* Send the n results from batch in one script call; a few tries (each
 * bounded by the command timeout) if it times out. */
static int send_batch(ct__bstore_t *s, ct__bstore_req_t *batch, size_t n) {
  size_t argc = 5 + n * (TASK_KEYS + TASK_ARGS);
  const char **argv = calloc(argc, sizeof *argv);
  if (!argv)
    return CT_ENOMEM;
  char nkeys[24];
  snprintf(nkeys, sizeof nkeys, "%zu", n * TASK_KEYS);
  argv[2] = nkeys; /* 0 and 1: EVALSHA and the SHA1 */
  const char **k = argv + 3, **a = argv + 3 + n * TASK_KEYS;
  *a++ = s->group;
  *a++ = s->default_ttl;
  ct__bstore_req_t *q = batch;
  for (size_t t = 0; t < n; t++, q = q->next) {
    for (int i = 0; i < TASK_KEYS; i++)
      *k++ = q->keys[i];
    for (int i = 0; i < TASK_ARGS; i++)
      *a++ = q->args[i];
  }
  long long want = (long long)n;
  int rc = CT_ETIMEDOUT;
  for (int i = 0; i < s->tries && rc == CT_ETIMEDOUT; i++)
    rc = ct__bscript_run(s->conn, &complete_lua, 0, (int)argc, argv, NULL, stored_reply, &want);
  free(argv);
  return rc;
}

/* Under the lock: take the oldest waiting results (up to BATCH_MAX) off
 * the queue; *n: how many. */
static ct__bstore_req_t *take_batch(ct__bstore_t *s, size_t *n) {
  ct__bstore_req_t *batch = s->head, *last = s->head;
  for (*n = 1; *n < BATCH_MAX && last->next; ++*n)
    last = last->next;
  s->head = last->next;
  last->next = NULL;
  if (!s->head)
    s->tail = &s->head;
  return batch;
}

int ct__bstore_complete(ct__bstore_t *s, const char *const keys[3], const char *entry,
                        const char *status, const char *result, const char *finished,
                        const char *name, bool waited) {
  ct__bstore_req_t req = {.keys = keys,
                          .args = {entry, status, result, finished, name, waited ? "1" : "0"}};
  pthread_cond_init(&req.cond, NULL);
  pthread_mutex_lock(&s->lock);
  *s->tail = &req;
  s->tail = &req.next;
  while (!req.done) {
    if (s->sending) {
      pthread_cond_wait(&req.cond, &s->lock);
      continue;
    }
    size_t n;
    ct__bstore_req_t *batch = take_batch(s, &n);
    s->sending = true;
    pthread_mutex_unlock(&s->lock);
    int rc = send_batch(s, batch, n);
    for (ct__bstore_req_t *q = batch; q; q = q->next)
      q->rc = rc == 0 || n == 1 || rc == CT_ETIMEDOUT || rc == CT_ESHUTDOWN
                  ? rc
                  : send_batch(s, q, 1);
    pthread_mutex_lock(&s->lock);
    for (ct__bstore_req_t *q = batch; q; q = q->next) {
      q->done = true;
      pthread_cond_signal(&q->cond);
    }
    s->sending = false;
    if (s->head) /* the next batch's sender */
      pthread_cond_signal(&s->head->cond);
  }
  int rc = req.rc;
  pthread_mutex_unlock(&s->lock);
  pthread_cond_destroy(&req.cond);
  return rc;
}
