/* What broker.c (the handle, the producer) and worker.c (the worker) share. */
#ifndef CT_BROKER_INTERNAL_H
#define CT_BROKER_INTERNAL_H

#include <pthread.h>

#include "conn.h"
#include "message.h"
#include "ctasker/broker.h"
#include "script.h"
#include "sync-conn.h"
#include "url.h"

/* The streams, highest priority class first. */
#define CT__BLEVELS 4
extern const char *const ct__blevel_names[CT__BLEVELS];

/* The consumer group every worker of a queue reads its streams with. */
#define CT__BGROUP "workers"

typedef struct ct__bhandler ct__bhandler_t;
struct ct__bhandler {
  ct__bhandler_t *next;
  ct_broker_handler_fn fn;
  void *data;
  char name[];
};

typedef struct ct__bworker ct__bworker_t;

/* The asynchronous calls of a handle, and one of them (async.c). */
typedef struct ct__basync ct__basync_t;
typedef struct ct__basync_call ct__basync_call_t;

/* A process handler's settings (process-handler.c). */
typedef struct ct__bproc ct__bproc_t;

/* A loop handler's settings (loop-handler.c). */
typedef struct ct__bloop ct__bloop_t;

/* An idle connection kept for a call (sync-conn.c). */
typedef struct ct__brpc ct__brpc_t;
struct ct__brpc {
  ct__brpc_t *next;
  ct__rsync_t *conn;
};

struct ct_broker {
  ct_supervisor_t *sup;
  ct__redis_url_t url;     /* for the worker's own connection */
  double connect_timeout, command_timeout;
  ct__rconn_t *conn;       /* producer calls, and the worker's writes */
  char *prefix;            /* "<ns>:{<queue>}:" */
  ct_log_fn log;
  void *log_data;
  pthread_mutex_t lock;
  ct__bhandler_t *handlers; /* lock until the worker starts, then read-only */
  ct__bworker_t *worker;    /* lock: set once by ct_broker_worker_start() */
  ct__brpc_t *rpc_idle;     /* lock: connections for calls, idle */
  struct ct__bmetrics *metrics; /* lock: made on first use (metrics.c) */
  ct__bproc_t *procs;           /* lock: process handlers' settings */
  ct__bloop_t *loops;           /* lock: loop handlers' settings */
  ct__basync_t *async;          /* lock: made on first use (async.c) */
  struct ct__bknown *known;     /* lock: names seen registered (submit-tx.c) */
  struct ct__bride *rides;      /* lock: blocking calls under way */
  bool ended;                   /* lock: the handle's loop has ended */
  pthread_cond_t ended_cond;    /* signalled as it ends, for calls pausing */
};

/* A new key "<prefix><a><c>", or NULL. */
char *ct__broker_key(const ct_broker_t *b, const char *a, const char *c);

/* A log line through the handle's callback, if any. */
void ct__broker_log(const ct_broker_t *b, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Unix time in milliseconds: task times cross machines. */
int64_t ct__broker_unix_ms(void);

/* Free a list of process handlers' settings (NULL does nothing). */
void ct__bprocs_free(ct__bproc_t *p);

/* Free a list of loop handlers' settings (NULL does nothing). */
void ct__bloops_free(ct__bloop_t *h);

/* A blocking call (ct_broker_call()) under way: its end (ct_now() time),
 * its own connection (NULL until it takes one; set and cleared under the
 * handle's lock, so that the handle's end can interrupt it), whether its
 * first blocking read was sent behind its submission (ct__bsubmit_tx()),
 * the pause before its next connection after one that failed, and the
 * next call under way (the handle's lock). */
typedef struct ct__bride {
  double end;
  ct__rsync_t *conn;
  bool sent;
  double pause;
  struct ct__bride *next;
} ct__bride_t;

/* Check and encode a submission as ct_broker_submit() does, with the
 * caller's deadline (Unix ms; 0: none) in the entry, then run its script:
 * here, waiting `wait` seconds for the reply, which writes the task id to
 * id (post NULL), or through ct__basync_script() for `post` (id unused:
 * the call's own gets it). For a blocking call (ride), an immediate
 * submission of a known name goes on the call's own connection, its first
 * read behind it. Returns ct_broker_submit()'s codes; with post, 0 once
 * the command is ready to send. */
int ct__broker_submit_by(ct_broker_t *b, const char *name, const json_t *kwargs,
                         const ct_broker_submit_opts_t *opts, int64_t deadline_ms, double wait,
                         ct__basync_call_t *post, ct__bride_t *ride,
                         char id[CT_BROKER_ID_SIZE]);

/* The Unix ms of a call's deadline, `timeout` seconds (> 0) from now. */
int64_t ct__broker_deadline_ms(double timeout);

/* Check a task id as ct_broker_get() does and make its record's key.
 * Returns 0 and *key (free it); CT_EINVAL; CT_ENOMEM. */
int ct__broker_record_key(const ct_broker_t *b, const char *id, char **key);

/* The fields of a reply of name, value... pairs (a stream entry's, a
 * hash's) as codec fields borrowed from it; an element that is not a
 * string reads as empty bytes (the codec then finds its field malformed
 * or unknown). NULL if out of memory; free() it. */
ct__bfield_t *ct__bfields_of(const redisReply *pairs, size_t *n);

/* What a task record's reply (HGETALL) says, as ct_broker_get() reads it:
 * a ct__rconn_reply_fn whose data is a ct__bget_t. */
typedef struct ct__bget {
  ct_broker_t *b;
  const char *id;
  ct_broker_info_t *info; /* zeroed by the caller */
} ct__bget_t;
int ct__broker_get_reply(const redisReply *r, void *data);

/* Take a submission's script command (argv as for ct__bscript_run(); the
 * reply goes to fn with the call's own copy of id) for the call to send:
 * copies what it needs. Returns 0 or CT_ENOMEM. */
int ct__basync_script(ct__basync_call_t *call, ct__bscript_t *s, int argc, const char **argv,
                      const size_t *argvlen, ct__rconn_reply_fn fn, const char *id);

/* End a handle's asynchronous side once its connection's loop has ended
 * (every call has been answered): NULL does nothing. */
void ct__basync_free(ct__basync_t *a);

/* Whether a submission through the submit script has found the name
 * registered (a set that only grows), and keep that it has. Thread-safety:
 * any thread. */
bool ct__bknown_has(ct_broker_t *b, const char *name);
void ct__bknown_add(ct_broker_t *b, const char *name);

/* Free what the handle keeps of known names (as the handle is freed). */
void ct__bknown_free(ct_broker_t *b);

/* An immediate submission of a known name, its strings the caller's: the
 * task's record and stream keys, name, created (ms), TTL and seconds to
 * keep the record, and its entry's encoded fields. */
typedef struct ct__bsubmit_tx {
  const char *record, *stream, *name, *created, *ttl, *keep;
  const struct ct__bmsg_wire *w;
  ct__bride_t *ride;  /* NULL, or the call it starts: */
  const char **read; /* its blocking read's three arguments */
} ct__bsubmit_tx_t;

/* Write it as the submit script does, in one MULTI/EXEC sent in one go,
 * each command given `wait` seconds (<= 0: the command timeout): on the
 * handle's connection, or, for a call (t->ride), on the call's own
 * connection with the call's first blocking read of its done list behind
 * it in the same write (ride->sent; its reply is left to read). Returns 0
 * or as ct__rconn_pipeline() (ct__rsync_read()) does; CT_EINVAL if the
 * server refuses it. Thread-safety: any thread but the handle's
 * connection's loop thread. */
int ct__bsubmit_tx(ct_broker_t *b, const ct__bsubmit_tx_t *t, double wait);

/* Stop the worker, waiting for its running tasks, and free it. */
void ct__bworker_free(ct__bworker_t *w);

#endif
