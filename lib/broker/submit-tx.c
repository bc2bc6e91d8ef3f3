/* Submitting a task without a script, once its name is known registered.
 *
 * The submit script (broker.c) costs Redis about as much again as the
 * commands it runs: a script call and each redis.call() inside it have a
 * price of their own, paid on every task. Only one of its checks needs a
 * script: whether the name is registered. The names set only grows (a
 * worker adds its names as it starts; nothing removes them) while the
 * server keeps its data, so once a submission through the script has found
 * a name there, the handle keeps it here, for as long as its connection
 * lasts (a server that restarted may have lost the set; its workers add
 * their names again as they find their groups gone), and the next
 * immediate submissions of that name (no idempotency key, no delay: those
 * keep the script) write the record and the entry in one MULTI/EXEC
 * transaction instead, sent in one go: the same writes, as atomic (a
 * connection lost before EXEC writes nothing), and the same guarantee (a
 * name no worker has ever registered is refused: it is never kept). A
 * handle keeps at most KNOWN_MAX names; past them, the script.
 * A blocking call's transaction goes on the call's own connection, its
 * blocking read of the done list sent behind it (send_riding()).
 *
 * Lock: b->lock guards b->known.
 */
#include <stdlib.h>
#include <string.h>

#include "broker-internal.h"
#include "message.h"

#define KNOWN_MAX 64 /* names one handle keeps */

struct ct__bknown {
  unsigned made; /* the connection they were learnt on (ct__rconn_made()) */
  size_t n;
  char *names[KNOWN_MAX];
};

/* Forget the names learnt on an earlier connection. Lock held. */
static void known_refresh(ct_broker_t *b) {
  unsigned made = ct__rconn_made(b->conn);
  if (!b->known || b->known->made == made)
    return;
  for (size_t i = 0; i < b->known->n; i++)
    free(b->known->names[i]);
  b->known->n = 0;
  b->known->made = made;
}

bool ct__bknown_has(ct_broker_t *b, const char *name) {
  bool found = false;
  pthread_mutex_lock(&b->lock);
  known_refresh(b);
  for (size_t i = 0; b->known && i < b->known->n && !found; i++)
    found = strcmp(b->known->names[i], name) == 0;
  pthread_mutex_unlock(&b->lock);
  return found;
}

void ct__bknown_add(ct_broker_t *b, const char *name) {
  pthread_mutex_lock(&b->lock);
  if (!b->known && (b->known = calloc(1, sizeof *b->known)))
    b->known->made = ct__rconn_made(b->conn);
  known_refresh(b);
  bool found = !b->known;
  for (size_t i = 0; !found && i < b->known->n; i++)
    found = strcmp(b->known->names[i], name) == 0;
  if (!found && b->known->n < KNOWN_MAX && (b->known->names[b->known->n] = strdup(name)))
    b->known->n++;
  pthread_mutex_unlock(&b->lock); /* out of memory: the script, as before */
}

void ct__bknown_free(ct_broker_t *b) {
  for (size_t i = 0; b->known && i < b->known->n; i++)
    free(b->known->names[i]);
  free(b->known);
  b->known = NULL;
}

static int status_reply(const redisReply *r, void *data) {
  (void)data;
  return r->type == REDIS_REPLY_STATUS ? 0 : CT_EINVAL;
}

/* EXEC's reply: HSET's and EXPIRE's integers, XADD's entry id. Anything
 * else (a key of another type: another program's doing) is the server
 * refusing the task, as the script's error would be. */
static int exec_reply(const redisReply *r, void *data) {
  (void)data;
  return r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                 r->element[0]->type == REDIS_REPLY_INTEGER &&
                 r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer == 1 &&
                 r->element[2]->type == REDIS_REPLY_STRING
             ? 0
             : CT_EINVAL;
}

/* The transaction's five commands on the call's own connection, its first
 * blocking read behind them. The read is owed once sent, whatever the
 * transaction's fate. */
static int send_riding(const ct__bsubmit_tx_t *t, double wait, ct__rconn_cmd_t cmds[5]) {
  ct__rconn_cmd_t all[6];
  memcpy(all, cmds, 5 * sizeof *all);
  all[5] = (ct__rconn_cmd_t){3, t->read, NULL, NULL, NULL, 0};
  int rc = ct__rsync_send(t->ride->conn, wait, 6, all);
  t->ride->sent = rc == 0;
  for (size_t i = 0; i < 5 && rc == 0; i++)
    rc = ct__rsync_read(t->ride->conn, wait, &cmds[i]);
  return rc;
}

int ct__bsubmit_tx(ct_broker_t *b, const ct__bsubmit_tx_t *t, double wait) {
  const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
  const char *hset[] = {"HSET",    t->record, "status", "queued", "name", t->name,
                        "created", t->created, "attempts", "0",  "ttl",  t->ttl};
  const char *expire[] = {"EXPIRE", t->record, t->keep};
  size_t n = 3 + t->w->argc;
  const char **xadd = calloc(n, sizeof *xadd);
  size_t *xlen = calloc(n, sizeof *xlen);
  if (!xadd || !xlen) {
    free(xadd);
    free(xlen);
    return CT_ENOMEM;
  }
  const char *head[] = {"XADD", t->stream, "*"};
  for (size_t i = 0; i < 3; i++) {
    xadd[i] = head[i];
    xlen[i] = strlen(head[i]);
  }
  memcpy(xadd + 3, t->w->argv, t->w->argc * sizeof *xadd);
  memcpy(xlen + 3, t->w->argvlen, t->w->argc * sizeof *xlen);
  ct__rconn_cmd_t cmds[] = {{1, multi, NULL, status_reply, NULL, 0},
                            {12, hset, NULL, status_reply, NULL, 0},
                            {3, expire, NULL, status_reply, NULL, 0},
                            {(int)n, xadd, xlen, status_reply, NULL, 0},
                            {1, exec, NULL, exec_reply, NULL, 0}};
  wait = wait > 0 ? wait : b->command_timeout;
  int rc = t->ride ? send_riding(t, wait, cmds) : ct__rconn_pipeline(b->conn, wait, 5, cmds);
  for (size_t i = 0; i < 5 && rc == 0; i++)
    rc = cmds[i].rc;
  free(xadd);
  free(xlen);
  return rc;
}
