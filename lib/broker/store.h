/* Storing results on a thread of their own, several in one script call
 * when they finish together (see store.c). */
#ifndef CT_BROKER_STORE_H
#define CT_BROKER_STORE_H

#include <pthread.h>
#include <stdbool.h>

#include "conn.h"

typedef struct ct__bstore_req ct__bstore_req_t;

/* Called on the store thread once a result has been stored (rc 0) or
 * could not be (the error of its last try); the request is the caller's
 * again. */
typedef void (*ct__bstore_done_fn)(ct__bstore_req_t *req, int rc);

/* One result to store. keys: the task's record, its stream, its done
 * list; args: the entry id, its status (completed, failed or expired), the
 * result JSON, finished (ms), the task's name, "1" if a caller waits
 * (RPC), else "0", the run's number and its start (ms) (both "" for a task
 * that did not run). The strings are the caller's, untouched until done. */
struct ct__bstore_req {
  ct__bstore_req_t *next; /* the store's */
  const char *keys[3];
  const char *args[8];
  ct__bstore_done_fn done;
};

typedef struct ct__bstore {
  ct__rconn_t *conn;          /* borrowed */
  double timeout;             /* seconds a script call may take: the command timeout */
  const char *group;          /* borrowed */
  const char *default_ttl;    /* borrowed: seconds, for a record without its own */
  int tries;                  /* sends of a batch that timed out */
  pthread_t thread;
  bool started;               /* the thread runs (set and read by the owner) */
  pthread_mutex_t lock;
  pthread_cond_t cond;        /* the thread waits on it for results */
  ct__bstore_req_t *head;     /* lock: results waiting to be sent, oldest first */
  ct__bstore_req_t **tail;    /* lock */
  bool idle;                  /* lock: the thread waits on cond */
  bool ending;                /* lock: the thread ends once the queue is empty */
  bool sending;               /* lock: a batch is on its way (sent or posted) */
  ct__bstore_req_t *posted;   /* the batch posted by ct__bstore_put(), while sending */
  size_t posted_n;            /* its results (read by its reply, on the loop thread) */
  int posted_rc;              /* lock: its outcome, once posted_ready */
  bool posted_ready;          /* lock: the posted batch is answered (or failed) */
} ct__bstore_t;

void ct__bstore_init(ct__bstore_t *s, ct__rconn_t *conn, double timeout, const char *group,
                     const char *default_ttl, int tries);

/* Start the store thread (ct-broker-store, signals blocked as the caller
 * blocks them). Returns 0 or CT_EAGAIN. */
int ct__bstore_start(ct__bstore_t *s);

/* End the thread once every result handed to it is done, wait for it, and
 * free what the store holds. */
void ct__bstore_destroy(ct__bstore_t *s);

/* Hand a result to the store thread and return at once (having sent it,
 * without waiting, if the store thread was idle). It is stored (first
 * completion wins), then its entry is acknowledged and deleted and a
 * waiting caller woken, and req->done is called on the store thread.
 * Thread-safety: any thread, once the store has started. */
void ct__bstore_put(ct__bstore_t *s, ct__bstore_req_t *req);

#endif
