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
 * at once get the same SHA1: the lock guards only the copy. */
#include <stdbool.h>
#include <string.h>

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

/* The script's SHA1 into sha: the one kept, or (reload, or none kept) the
 * server's answer to SCRIPT LOAD, then kept. */
static int script_sha(ct__rconn_t *c, ct__bscript_t *s, bool reload, char sha[41]) {
  ct__bscript_kept_sha(s, sha);
  if (sha[0] && !reload)
    return 0;
  const char *argv[] = {"SCRIPT", "LOAD", s->text};
  int rc = ct__rconn_command(c, 3, argv, NULL, sha_reply, sha);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&s->lock);
  memcpy(s->sha, sha, 41);
  pthread_mutex_unlock(&s->lock);
  return 0;
}

static int run_once(ct__rconn_t *c, double timeout, int argc, const char **argv,
                    const size_t *argvlen, run_ctx_t *x) {
  return timeout > 0 ? ct__rconn_command_within(c, timeout, argc, argv, argvlen, run_reply, x)
                     : ct__rconn_command(c, argc, argv, argvlen, run_reply, x);
}

int ct__bscript_run(ct__rconn_t *c, ct__bscript_t *s, double timeout, int argc,
                    const char **argv, size_t *argvlen, ct__rconn_reply_fn fn, void *data) {
  char sha[41];
  run_ctx_t x = {fn, data, false};
  int rc = script_sha(c, s, false, sha);
  argv[0] = "EVALSHA";
  argv[1] = sha;
  if (argvlen) {
    argvlen[0] = 7;
    argvlen[1] = 40;
  }
  if (rc == 0)
    rc = run_once(c, timeout, argc, argv, argvlen, &x);
  if (x.noscript && (rc = script_sha(c, s, true, sha)) == 0)
    rc = run_once(c, timeout, argc, argv, argvlen, &x);
  argv[1] = NULL; /* sha is gone */
  return rc;
}
