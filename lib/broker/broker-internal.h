/* What broker.c (the handle, the producer) and worker.c (the worker) share. */
#ifndef CT_BROKER_INTERNAL_H
#define CT_BROKER_INTERNAL_H

#include <pthread.h>

#include "conn.h"
#include "ctasker/broker.h"
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

/* A process handler's settings (process-handler.c). */
typedef struct ct__bproc ct__bproc_t;

/* A loop handler's settings (loop-handler.c). */
typedef struct ct__bloop ct__bloop_t;

/* An idle connection kept for a call's blocking read. */
typedef struct ct__brpc ct__brpc_t;
struct ct__brpc {
  ct__brpc_t *next;
  ct__rconn_t *conn;
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

/* Stop the worker, waiting for its running tasks, and free it. */
void ct__bworker_free(ct__bworker_t *w);

#endif
