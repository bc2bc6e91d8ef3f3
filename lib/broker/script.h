/* A Lua script the broker runs by its SHA1 (see script.c). */
#ifndef CT_BROKER_SCRIPT_H
#define CT_BROKER_SCRIPT_H

#include <pthread.h>

#include "conn.h"

typedef struct ct__bscript {
  const char *text;
  pthread_mutex_t lock;
  char sha[41]; /* lock: "" until the server first gave it */
} ct__bscript_t;

#define CT__BSCRIPT_INIT(t) {.text = (t), .lock = PTHREAD_MUTEX_INITIALIZER, .sha = ""}

/* Run script s: argv[2..argc) are the numkeys, keys and arguments, as for
 * EVAL; argv[0] and argv[1] (and argvlen[0] and argvlen[1] if argvlen is
 * not NULL) are the caller's room, filled here with EVALSHA and the SHA1.
 * The script is loaded (SCRIPT LOAD) first if it has not been yet, and
 * again if the server has forgotten it (NOSCRIPT: say after a restart),
 * then run once more: a NOSCRIPT reply means it did not run. timeout:
 * seconds for all of those commands together, as for
 * ct__rconn_command_within(); <= 0: each within the command timeout.
 * Returns as ct__rconn_command() does; CT_EINVAL if the server refuses the
 * script. Thread-safety: any thread but the connection's loop thread. */
/* The SHA1 kept for s into sha, "" if none yet: for a caller that sends
 * EVALSHA in a pipeline of its own (and takes a NOSCRIPT as "not run").
 * Thread-safety: any thread. */
void ct__bscript_kept_sha(ct__bscript_t *s, char sha[41]);

int ct__bscript_run(ct__rconn_t *c, ct__bscript_t *s, double timeout, int argc,
                    const char **argv, size_t *argvlen, ct__rconn_reply_fn fn, void *data);

#endif
