/* Storing results on a thread of their own, in batches. A handler's pool
 * thread used to store its result itself and wait for the reply (a round
 * trip, and futex hand-offs with the connection's loop thread, per task)
 * before it could take the next task. Now it hands the result here and
 * returns at once; the store thread sends what has queued up (up to
 * BATCH_MAX results) in one script call, waits for the reply, tells each
 * result's owner (its done callback, on this thread), and sends the next
 * batch. No result waits for a batch to fill: a lone result is sent as it
 * comes, and under load the calls grow with the load. A result handed in
 * while the thread is idle, with no batch on its way, is sent by the
 * handing thread itself, without waiting for the reply (ct__rconn_post()):
 * waking the store thread to send it put about 20 us more on every lone
 * result's way (an RPC's, measured); the thread is woken by the reply,
 * tells the owners, and sends again what did not run (NOSCRIPT, or the
 * script's SHA1 not known yet) or timed out. The owner keeps its task's
 * slot taken and its lease renewed until done is called, so the entry is
 * never acknowledged before its result is written, and every result is the
 * script's to store exactly as the single one was (first completion wins,
 * per task, in the same script call). A batch that timed out is sent again,
 * up to `tries` times in all (a connection that comes back within them
 * stores it); a batch the server refuses is sent again one result at a
 * time, so that one result it cannot take (a key of the wrong type, say)
 * holds up no other.
 *
 * Lock: s->lock guards head, tail, idle, ending, sending, posted_rc and
 * posted_ready; one batch at a time is on its way (`sending`), and while it
 * is, posted and posted_n are the sender's, then the store thread's; a
 * batch taken off the queue is the thread's alone, and its requests are
 * their owners' again once done has been called. The thread is woken only
 * by the outcome of a posted batch (its reply, or a post that could not go
 * out) and by the end: it is idle only when nothing is queued, or while a
 * posted batch is on its way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script.h"
#include "store.h"

#define BATCH_MAX 64

/* KEYS: the batch's streams (each once), then per result its record, then
 * the done lists of the results a caller waits for (RPC). ARGV: group,
 * default TTL (s), the count of streams, each stream's count of results
 * (in the order of KEYS), then per result, the results of the first
 * stream first: entry id, status, result, finished (ms), name, the index
 * in KEYS of its done list ('0': nobody waits), the run's number and its
 * start (ms) (both '' for a task that did not run: its caller's deadline
 * had passed). A result's stream is thus named once per batch, not once
 * per result, and a done list only when a caller waits: each argument
 * costs Redis about 0.3 us, and these two cost it about 2 us a result in
 * all, with the table of fields that the usual write no longer builds
 * (medians of 8 alternated runs, 64 results a call). For each: the first
 * completion wins; a waiting
 * caller is woken through the done list, with its answer, `[status,
 * result]`, so that it need not read the record (a late duplicate pushes
 * the bare status of the record instead: the caller reads the first
 * completion's answer there). Then every entry is acknowledged and deleted,
 * with one XACK per stream for all of its entries (each command has a cost
 * of its own, larger than an id's). A stream's few entries (fewer than 16)
 * are deleted with XDEL: trimming cost Redis about 12 us more than that for
 * a lone result, and the two costs met at about 16 results a stream
 * (measured with 1, 4, 16 and 64 results a call). More are trimmed: every
 * entry older than the group's oldest pending one has been delivered and
 * acknowledged, so XTRIM MINID drops them all at once, whole listpack nodes
 * at a time (XDEL scans an id's node for each id: most of the cost of a
 * batch's acknowledgement, measured). The threshold is the oldest pending
 * entry, or, with none, the batch's newest id plus one (nothing after it
 * was delivered); the batch's ids at or past the threshold (finished before
 * an older task still running) get an XDEL. Nothing pending or undelivered
 * is ever trimmed. The results come sorted by stream and entry id
 * (batch_argv()), so each stream's newest id is its last, and only its ids
 * at or past the threshold, at the end, are made sort keys: making one for
 * every id cost Redis about 1.4 us per result, a sixth of the script's time
 * (measured with 64 results a call). Returns the count of results. */
static const char complete_script[] =
    /* An entry id ("ms-seq", decimal) as digits that sort as the id does
     * (each part padded to 20 digits: Redis's ids are two 64-bit numbers;
     * digits only, so that any collation Lua's comparison may use agrees). */
    "local function sort_key(id)\n"
    "  local ms, seq = string.match(id, '^(%d+)-(%d+)$')\n"
    "  return string.rep('0', 20 - #ms) .. ms .. string.rep('0', 20 - #seq) .. seq\n"
    "end\n"
    /* The id just after `id` (its own, when its sequence number is too
     * large to add one to exactly: the XDEL then deletes it). */
    "local function next_id(id)\n"
    "  local ms, seq = string.match(id, '^(%d+)-(%d+)$')\n"
    "  if #seq > 15 then return id end\n"
    "  return ms .. '-' .. string.format('%.0f', tonumber(seq) + 1)\n"
    "end\n"
    /* Delete the acknowledged ids (sorted) of a stream by trimming (see
     * above). */
    "local function trim(stream, ids)\n"
    "  local min = next_id(ids[#ids])\n"
    "  local min_key = sort_key(min)\n"
    "  local oldest = redis.call('XPENDING', stream, ARGV[1])[2]\n"
    "  if oldest and sort_key(oldest) < min_key then\n"
    "    min, min_key = oldest, sort_key(oldest)\n"
    "  end\n"
    "  redis.call('XTRIM', stream, 'MINID', min)\n"
    "  local rest = {}\n"
    "  for j = #ids, 1, -1 do\n"
    "    if sort_key(ids[j]) < min_key then break end\n"
    "    rest[#rest + 1] = ids[j]\n"
    "  end\n"
    "  if #rest > 0 then redis.call('XDEL', stream, unpack(rest)) end\n"
    "end\n"
    "local nstreams = tonumber(ARGV[3])\n"
    "local i, a = 0, 4 + nstreams\n"
    "for k = 1, nstreams do\n"
    "  local stream, ids = KEYS[k], {}\n"
    "  for _ = 1, tonumber(ARGV[3 + k]) do\n"
    "    i = i + 1\n"
    "    local rec = KEYS[nstreams + i]\n"
    "    local r = redis.call('HMGET', rec, 'status', 'ttl')\n"
    "    local s = r[1]\n"
    "    local ended = s == 'completed' or s == 'failed' or s == 'dead' or s == 'expired'\n"
    /* A record with a status was written whole by its submission: only the
     * outcome (and the run) is new. One gone (expired, deleted) is written
     * whole again. (Reading and writing again the name and creation time of
     * every record cost Redis about 0.8 us a result: 9 of 9 alternated
     * measurements, 64 results a call.) */
    "    if not ended and s and ARGV[a + 6] ~= '' then\n" /* the usual write: no table */
    "      redis.call('HSET', rec, 'status', ARGV[a + 1], 'result', ARGV[a + 2], 'finished',"
    " ARGV[a + 3], 'attempts', ARGV[a + 6], 'started', ARGV[a + 7])\n"
    "    elseif not ended then\n"
    "      local f = {'status', ARGV[a + 1], 'result', ARGV[a + 2], 'finished', ARGV[a + 3]}\n"
    "      if ARGV[a + 6] ~= '' then\n"
    "        f[7], f[8], f[9], f[10] = 'attempts', ARGV[a + 6], 'started', ARGV[a + 7]\n"
    "      end\n"
    "      if not s then\n"
    "        local n = #f\n"
    "        f[n + 1], f[n + 2], f[n + 3], f[n + 4] = 'name', ARGV[a + 4], 'created', ARGV[a + 3]\n"
    "      end\n"
    "      redis.call('HSET', rec, unpack(f))\n"
    "    end\n"
    "    if not ended then redis.call('EXPIRE', rec, r[2] or ARGV[2]) end\n"
    "    ids[#ids + 1] = ARGV[a]\n"
    "    if ARGV[a + 5] ~= '0' then\n"
    "      local done = KEYS[tonumber(ARGV[a + 5])]\n"
    "      redis.call('RPUSH', done,"
    " ended and s or '[\"' .. ARGV[a + 1] .. '\",' .. ARGV[a + 2] .. ']')\n"
    "      redis.call('EXPIRE', done, 60)\n"
    "    end\n"
    "    a = a + 8\n"
    "  end\n"
    "  redis.call('XACK', stream, ARGV[1], unpack(ids))\n"
    "  if #ids < 16 then redis.call('XDEL', stream, unpack(ids)) else trim(stream, ids) end\n"
    "end\n"
    "return i\n";
static ct__bscript_t complete_lua = CT__BSCRIPT_INIT(complete_script);

void ct__bstore_init(ct__bstore_t *s, ct__rconn_t *conn, double timeout, const char *group,
                     const char *default_ttl, int tries) {
  *s = (ct__bstore_t){.conn = conn, .timeout = timeout, .group = group,
                      .default_ttl = default_ttl, .tries = tries};
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->cond, NULL);
  s->tail = &s->head;
}

static int stored_reply(const redisReply *r, void *data) {
  return r->type == REDIS_REPLY_INTEGER && r->integer == *(const long long *)data ? 0
                                                                                  : CT_EINVAL;
}

/* An entry id's two numbers ("ms-seq"; anything else, which the server
 * never gives, reads as 0-0). */
static void id_parts(const char *id, unsigned long long part[2]) {
  char *end;
  part[0] = strtoull(id, &end, 10);
  part[1] = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
  if (*end != '-')
    part[0] = 0;
}

/* qsort() order of results: by stream, then by entry id. */
static int by_stream_and_id(const void *x, const void *y) {
  const ct__bstore_req_t *a = *(ct__bstore_req_t *const *)x, *b = *(ct__bstore_req_t *const *)y;
  int c = strcmp(a->keys[1], b->keys[1]);
  if (c != 0)
    return c;
  unsigned long long pa[2], pb[2];
  id_parts(a->args[0], pa);
  id_parts(b->args[0], pb);
  return pa[0] != pb[0] ? (pa[0] > pb[0]) - (pa[0] < pb[0]) : (pa[1] > pb[1]) - (pa[1] < pb[1]);
}

/* A count's text, written at *buf, which moves past it. */
static const char *count_text(char **buf, size_t value) {
  char *text = *buf;
  *buf += snprintf(text, 24, "%zu", value) + 1;
  return text;
}

/* The complete script's arguments for the n results of batch, sorted as
 * the script wants them (by stream and entry id); argv[0] and argv[1] are
 * left for EVALSHA and the SHA1. Returns argv (one block, with the counts'
 * texts after the pointers: free() it; its other strings are the
 * requests') and *argc, or NULL if out of memory. */
static const char **batch_argv(ct__bstore_t *s, ct__bstore_req_t *batch, size_t n,
                               size_t *argc) {
  ct__bstore_req_t **sorted = calloc(n, sizeof *sorted);
  if (!sorted)
    return NULL;
  ct__bstore_req_t *q = batch;
  for (size_t t = 0; t < n; t++, q = q->next)
    sorted[t] = q;
  qsort(sorted, n, sizeof *sorted, by_stream_and_id);
  size_t streams = 0, waiting = 0;
  for (size_t t = 0; t < n; t++) {
    streams += t == 0 || strcmp(sorted[t]->keys[1], sorted[t - 1]->keys[1]) != 0;
    waiting += strcmp(sorted[t]->args[5], "1") == 0;
  }
  size_t nkeys = streams + n + waiting;
  *argc = 3 + nkeys + 3 + streams + 8 * n;
  const char **argv = malloc(*argc * sizeof *argv + (3 + streams + waiting) * 24);
  if (!argv) {
    free(sorted);
    return NULL;
  }
  char *buf = (char *)(argv + *argc);
  argv[2] = count_text(&buf, nkeys);
  const char **k = argv + 3, **a = argv + 3 + nkeys;
  *a++ = s->group;
  *a++ = s->default_ttl;
  *a++ = count_text(&buf, streams);
  for (size_t t = 0, end; t < n; t = end) { /* each stream, and its count of results */
    for (end = t + 1; end < n && strcmp(sorted[end]->keys[1], sorted[t]->keys[1]) == 0; end++)
      ;
    *k++ = sorted[t]->keys[1];
    *a++ = count_text(&buf, end - t);
  }
  const char **done = k + n;
  size_t done_index = streams + n + 1; /* KEYS counts from 1 */
  for (size_t t = 0; t < n; t++) {
    const char *const *r = sorted[t]->args;
    const char *index = "0";
    if (strcmp(r[5], "1") == 0) {
      *done++ = sorted[t]->keys[2];
      index = count_text(&buf, done_index++);
    }
    *k++ = sorted[t]->keys[0];
    const char *args[8] = {r[0], r[1], r[2], r[3], r[4], index, r[6], r[7]};
    memcpy(a, args, sizeof args);
    a += 8;
  }
  free(sorted);
  return argv;
}

/* Send the n results from batch in one script call and wait for the
 * reply; up to `tries` tries (each bounded by the command timeout) if it
 * times out (none: CT_ETIMEDOUT). */
static int send_batch(ct__bstore_t *s, ct__bstore_req_t *batch, size_t n, int tries) {
  size_t argc;
  const char **argv = batch_argv(s, batch, n, &argc);
  if (!argv)
    return CT_ENOMEM;
  long long want = (long long)n;
  int rc = CT_ETIMEDOUT;
  for (int i = 0; i < tries && rc == CT_ETIMEDOUT; i++)
    rc = ct__bscript_run(s->conn, &complete_lua, 0, (int)argc, argv, NULL, stored_reply, &want);
  free(argv);
  return rc;
}

/* The outcome of a posted batch's reply (on the connection's loop
 * thread): as stored_reply(), and CT_EAGAIN for NOSCRIPT (the server has
 * forgotten the script: it did not run; the store thread loads it and
 * sends the batch again). */
static int posted_reply(const redisReply *r, void *data) {
  const ct__bstore_t *s = data;
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
    return CT_EAGAIN;
  long long want = (long long)s->posted_n;
  return stored_reply(r, &want);
}

/* A posted batch is answered (or not: rc), on the connection's loop
 * thread: the store thread tells its owners. */
static void posted_done(int rc, void *data) {
  ct__bstore_t *s = data;
  pthread_mutex_lock(&s->lock);
  s->posted_rc = rc;
  s->posted_ready = true;
  pthread_cond_signal(&s->cond);
  pthread_mutex_unlock(&s->lock);
}

/* Send the batch s->posted from the calling thread without waiting for
 * its reply (posted_done() takes it). Returns false if it cannot be sent
 * so (the script's SHA1 not known yet, or no memory): the store thread
 * sends it then. */
static bool post_batch(ct__bstore_t *s) {
  char sha[41];
  ct__bscript_kept_sha(&complete_lua, sha);
  size_t argc;
  const char **argv = sha[0] ? batch_argv(s, s->posted, s->posted_n, &argc) : NULL;
  if (!argv)
    return false;
  argv[0] = "EVALSHA";
  argv[1] = sha;
  int rc = ct__rconn_post(s->conn, s->timeout, (int)argc, argv, NULL, posted_reply,
                          posted_done, s);
  free(argv);
  return rc == 0;
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

/* A batch has been sent (rc: its outcome): tell each result's owner, after
 * sending each result again alone if the server refused the batch. */
static void finish_batch(ct__bstore_t *s, ct__bstore_req_t *batch, size_t n, int rc) {
  for (ct__bstore_req_t *q = batch, *next; q; q = next) {
    next = q->next;
    q->next = NULL; /* a batch of one, if sent again alone */
    int own = rc == 0 || n == 1 || rc == CT_ETIMEDOUT || rc == CT_ESHUTDOWN
                  ? rc
                  : send_batch(s, q, 1, s->tries);
    q->done(q, own);
  }
}

/* A posted batch's outcome: one that did not run (NOSCRIPT, or not sent)
 * is sent from here, one that timed out is sent again while tries are
 * left; then its owners are told. */
static void finish_posted(ct__bstore_t *s, ct__bstore_req_t *batch, size_t n, int rc) {
  if (rc == CT_EAGAIN)
    rc = send_batch(s, batch, n, s->tries);
  else if (rc == CT_ETIMEDOUT)
    rc = send_batch(s, batch, n, s->tries - 1);
  finish_batch(s, batch, n, rc);
}

static void *store_main(void *arg) {
  ct__bstore_t *s = arg;
  pthread_setname_np(pthread_self(), "ct-broker-store");
  pthread_mutex_lock(&s->lock);
  for (;;) {
    if (s->posted_ready) {
      ct__bstore_req_t *batch = s->posted;
      size_t n = s->posted_n;
      int rc = s->posted_rc;
      s->posted_ready = false;
      pthread_mutex_unlock(&s->lock);
      finish_posted(s, batch, n, rc);
      pthread_mutex_lock(&s->lock);
      s->sending = false;
    } else if (s->head && !s->sending) {
      size_t n;
      ct__bstore_req_t *batch = take_batch(s, &n);
      s->sending = true;
      pthread_mutex_unlock(&s->lock);
      finish_batch(s, batch, n, send_batch(s, batch, n, s->tries));
      pthread_mutex_lock(&s->lock);
      s->sending = false;
    } else if (s->ending && !s->head && !s->sending) {
      break;
    } else {
      s->idle = true;
      pthread_cond_wait(&s->cond, &s->lock);
      s->idle = false;
    }
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

int ct__bstore_start(ct__bstore_t *s) {
  s->started = pthread_create(&s->thread, NULL, store_main, s) == 0;
  return s->started ? 0 : CT_EAGAIN;
}

void ct__bstore_destroy(ct__bstore_t *s) {
  if (s->started) {
    pthread_mutex_lock(&s->lock);
    s->ending = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
  }
  pthread_cond_destroy(&s->cond);
  pthread_mutex_destroy(&s->lock);
}

void ct__bstore_put(ct__bstore_t *s, ct__bstore_req_t *req) {
  req->next = NULL;
  pthread_mutex_lock(&s->lock);
  *s->tail = req;
  s->tail = &req->next;
  /* The thread idle and no batch on its way: this thread sends it. */
  bool post = s->idle && !s->sending;
  if (post) {
    s->posted = take_batch(s, &s->posted_n);
    s->sending = true;
  }
  pthread_mutex_unlock(&s->lock);
  if (post && !post_batch(s))
    posted_done(CT_EAGAIN, s); /* not sent: the store thread sends it */
}
