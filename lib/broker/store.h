/* Storing results, several in one script call when they finish together
 * (see store.c). */
#ifndef CT_BROKER_STORE_H
#define CT_BROKER_STORE_H

#include <pthread.h>
#include <stdbool.h>

#include "conn.h"

typedef struct ct__bstore_req ct__bstore_req_t;

typedef struct ct__bstore {
  ct__rconn_t *conn;          /* borrowed */
  const char *group;          /* borrowed */
  const char *default_ttl;    /* borrowed: seconds, for a record without its own */
  int tries;                  /* sends of a batch that timed out */
  pthread_mutex_t lock;
  ct__bstore_req_t *head;     /* lock: results waiting to be sent, oldest first */
  ct__bstore_req_t **tail;    /* lock */
  bool sending;               /* lock: a thread is sending a batch */
} ct__bstore_t;

void ct__bstore_init(ct__bstore_t *s, ct__rconn_t *conn, const char *group,
                     const char *default_ttl, int tries);
void ct__bstore_destroy(ct__bstore_t *s);

/* One result to store (all strings borrowed until the call returns):
 * keys: the task's record, its stream, its done list; the entry id, its
 * status (completed, failed or expired), the result JSON, finished (ms),
 * the task's name, and whether a caller waits (RPC). Stores it (first
 * completion wins), then acknowledges and deletes the entry, and wakes a
 * waiting caller; returns 0 once that is done, or the error of the last
 * try. Thread-safety: any thread but the connection's loop thread. */
int ct__bstore_complete(ct__bstore_t *s, const char *const keys[3], const char *entry,
                        const char *status, const char *result, const char *finished,
                        const char *name, bool waited);

#endif
