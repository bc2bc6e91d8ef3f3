/* Scripts run by SHA1. Each EVAL would carry the whole script (up to a few
 * KB) to the server, which hashes it again on every call; EVALSHA carries
 * 40 bytes. The SHA1 is the server's answer to SCRIPT LOAD, kept with the
 * script (one per process: a server's script cache is shared by every
 * connection), so the library needs no hash of its own.
 *
 * The server may forget its scripts (a restart, SCRIPT FLUSH, a failover
 * to a replica that never saw them): it then answers NOSCRIPT without
 * running anything, and the script is loaded again and run once more, so
 * a caller never sees the difference. Two threads loading the same script
 * at once get the same SHA1: the lock guards only the copy. A run with a
 * timeout of its own keeps it for all of its commands together (SCRIPT
 * LOAD, EVALSHA, and both again after NOSCRIPT): each used to have the
 * whole timeout, or the command timeout for SCRIPT LOAD, and a call with a
 * deadline could wait several times past it on a stalled server. */
#include <stdbool.h>
#include <string.h>

#include "base/clock.h"
#include "script.h"

typedef struct {
  ct__rconn_reply_fn fn;
  void *data;
  bool noscript;
} run_ctx_t;

static int sha_reply(const redisReply *r, void *data) {
  if (r->type != REDIS_REPLY_STRING || r->len != 40)
    return CT_EINVAL;
  memcpy(data, r->str, 41);
  return 0;
}

static int run_reply(const redisReply *r, void *data) {
  run_ctx_t *x = data;
  x->noscript = r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
  return x->noscript ? CT_EINVAL : x->fn(r, x->data);
}

void ct__bscript_kept_sha(ct__bscript_t *s, char sha[41]) {
  pthread_mutex_lock(&s->lock);
  memcpy(sha, s->sha, 41);
  pthread_mutex_unlock(&s->lock);
}

/* Send one command: within what is left until `end` (ct__now(); 0: none,
 * then within the connection's command timeout). */
static int command_until(ct__rconn_t *c, double end, int argc, const char **argv,
                         const size_t *argvlen, ct__rconn_reply_fn fn, void *data) {
  if (end == 0)
    return ct__rconn_command(c, argc, argv, argvlen, fn, data);
  double left = end - ct__now();
  return left > 0 ? ct__rconn_command_within(c, left, argc, argv, argvlen, fn, data)
                  : CT_ETIMEDOUT;
}

/* The script's SHA1 into sha: the one kept, or (reload, or none kept) the
 * server's answer to SCRIPT LOAD, then kept. */
static int script_sha(ct__rconn_t *c, ct__bscript_t *s, bool reload, double end,
                      char sha[41]) {
  ct__bscript_kept_sha(s, sha);
  if (sha[0] && !reload)
    return 0;
  const char *argv[] = {"SCRIPT", "LOAD", s->text};
  int rc = command_until(c, end, 3, argv, NULL, sha_reply, sha);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&s->lock);
  memcpy(s->sha, sha, 41);
  pthread_mutex_unlock(&s->lock);
  return 0;
}

int ct__bscript_run(ct__rconn_t *c, ct__bscript_t *s, double timeout, int argc,
                    const char **argv, size_t *argvlen, ct__rconn_reply_fn fn, void *data) {
  char sha[41];
  run_ctx_t x = {fn, data, false};
  double end = timeout > 0 ? ct__now() + timeout : 0;
  int rc = script_sha(c, s, false, end, sha);
  argv[0] = "EVALSHA";
  argv[1] = sha;
  if (argvlen) {
    argvlen[0] = 7;
    argvlen[1] = 40;
  }
  if (rc == 0)
    rc = command_until(c, end, argc, argv, argvlen, run_reply, &x);
  if (x.noscript && (rc = script_sha(c, s, true, end, sha)) == 0)
    rc = command_until(c, end, argc, argv, argvlen, run_reply, &x);
  argv[1] = NULL; /* sha is gone */
  return rc;
}
