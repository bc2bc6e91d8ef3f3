/* Submitting a task without a script, once its name is known registered.
 *
 * The submit script (broker.c) costs Redis about as much again as the
 * commands it runs: a script call and each redis.call() inside it have a
 * price of their own, paid on every task. Only one of its checks needs a
 * script: whether the name is registered. The names set only grows (a
 * worker adds its names as it starts; nothing removes them), so once a
 * submission through the script has found a name there, the handle keeps
 * it here, and the next immediate submissions of that name (no idempotency
 * key, no delay: those keep the script) write the record and the entry in
 * one MULTI/EXEC transaction instead, sent in one go: the same writes, as
 * atomic (a connection lost before EXEC writes nothing), and the same
 * guarantee (a name no worker has ever registered is refused: it is never
 * kept). A batch of ct_broker_submit_many() whose names are all known goes
 * in one transaction too: its script's cost per task was three times that
 * of the commands it runs (INFO commandstats and SLOWLOG, bench-broker).
 * The commands queued between MULTI and EXEC are sent unheard: nobody
 * waits on their replies, as EXEC's says how each went (a command refused
 * as it is queued fails EXEC as a whole). A handle keeps at most KNOWN_MAX
 * names; past them, the script.
 *
 * Lock: b->lock guards b->known.
 */
#include <stdlib.h>
#include <string.h>

#include "broker-internal.h"
#include "message.h"

#define KNOWN_MAX 64 /* names one handle keeps */

struct ct__bknown {
  size_t n;
  char *names[KNOWN_MAX];
};

bool ct__bknown_has(ct_broker_t *b, const char *name) {
  bool found = false;
  pthread_mutex_lock(&b->lock);
  for (size_t i = 0; b->known && i < b->known->n && !found; i++)
    found = strcmp(b->known->names[i], name) == 0;
  pthread_mutex_unlock(&b->lock);
  return found;
}

void ct__bknown_add(ct_broker_t *b, const char *name) {
  pthread_mutex_lock(&b->lock);
  if (!b->known)
    b->known = calloc(1, sizeof *b->known);
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

/* EXEC's reply: per task, HSET's and EXPIRE's integers and XADD's entry
 * id, each task's outcome into its rcs[i]. Anything else for a task (a key
 * of another type: another program's doing) is the server refusing that
 * task, as the script's error would be; a reply of another shape refuses
 * them all. */
typedef struct {
  size_t n;
  int *rcs;
} exec_ctx_t;

static int exec_reply(const redisReply *r, void *data) {
  exec_ctx_t *x = data;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 * x->n)
    return CT_EINVAL;
  for (size_t i = 0; i < x->n; i++) {
    redisReply *const *e = r->element + 3 * i;
    x->rcs[i] = e[0]->type == REDIS_REPLY_INTEGER && e[1]->type == REDIS_REPLY_INTEGER &&
                        e[1]->integer == 1 && e[2]->type == REDIS_REPLY_STRING
                    ? 0
                    : CT_EINVAL;
  }
  return 0;
}

/* The three commands of task t, into cmds, their arguments into the
 * task's share of args (HSET_ARGC + EXPIRE_ARGC + 3 + its fields). */
#define HSET_ARGC 12
#define EXPIRE_ARGC 3

static void task_commands(const ct__bsubmit_tx_t *t, const char **args, size_t *lens,
                          ct__rconn_cmd_t cmds[3]) {
  const char *hset[HSET_ARGC] = {"HSET",    t->record,  "status",   "queued", "name", t->name,
                                 "created", t->created, "attempts", "0",      "ttl",  t->ttl};
  const char *expire[EXPIRE_ARGC] = {"EXPIRE", t->record, t->keep};
  const char *xadd[3] = {"XADD", t->stream, "*"};
  const char **a = args;
  size_t *l = lens;
  memcpy(a, hset, sizeof hset);
  memcpy(a + HSET_ARGC, expire, sizeof expire);
  memcpy(a + HSET_ARGC + EXPIRE_ARGC, xadd, sizeof xadd);
  for (size_t i = 0; i < HSET_ARGC + EXPIRE_ARGC + 3; i++)
    l[i] = strlen(a[i]);
  memcpy(a + HSET_ARGC + EXPIRE_ARGC + 3, t->w->argv, t->w->argc * sizeof *a);
  memcpy(l + HSET_ARGC + EXPIRE_ARGC + 3, t->w->argvlen, t->w->argc * sizeof *l);
  /* Unheard: a command refused as it is queued fails EXEC as a whole. */
  cmds[0] = (ct__rconn_cmd_t){HSET_ARGC, a, l, NULL, NULL, 0, true};
  cmds[1] = (ct__rconn_cmd_t){EXPIRE_ARGC, a + HSET_ARGC, l + HSET_ARGC, NULL, NULL, 0, true};
  cmds[2] = (ct__rconn_cmd_t){(int)(3 + t->w->argc), a + HSET_ARGC + EXPIRE_ARGC,
                              l + HSET_ARGC + EXPIRE_ARGC, NULL, NULL, 0, true};
}

int ct__bsubmit_tx(ct_broker_t *b, const ct__bsubmit_tx_t *t, size_t n, double wait, int rcs[]) {
  static const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
  size_t nargs = 0, ncmds = 2 + 3 * n;
  for (size_t i = 0; i < n; i++)
    nargs += HSET_ARGC + EXPIRE_ARGC + 3 + t[i].w->argc;
  const char **args = calloc(nargs, sizeof *args);
  size_t *lens = calloc(nargs, sizeof *lens);
  ct__rconn_cmd_t *cmds = calloc(ncmds, sizeof *cmds);
  int rc = args && lens && cmds ? 0 : CT_ENOMEM;
  exec_ctx_t x = {n, rcs};
  if (rc == 0) {
    cmds[0] = (ct__rconn_cmd_t){1, multi, NULL, status_reply, NULL, 0, false};
    for (size_t i = 0, at = 0; i < n; i++) {
      task_commands(&t[i], args + at, lens + at, cmds + 1 + 3 * i);
      at += HSET_ARGC + EXPIRE_ARGC + 3 + t[i].w->argc;
    }
    cmds[ncmds - 1] = (ct__rconn_cmd_t){1, exec, NULL, exec_reply, &x, 0, false};
    rc = ct__rconn_pipeline(b->conn, wait > 0 ? wait : b->command_timeout, ncmds, cmds);
  }
  for (size_t i = 0; i < ncmds && rc == 0; i++)
    rc = cmds[i].rc;
  for (size_t i = 0; i < n && rc != 0; i++)
    rcs[i] = rc;
  free(args);
  free(lens);
  free(cmds);
  return rc;
}
