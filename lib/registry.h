/* The task registry: id -> task, for tasks submitted with a handle, from
 * submission until they are terminal. An open-addressing hash table with
 * linear probing and backward-shift deletion, under its own lock (a leaf:
 * nothing else is locked while it is held). */
#ifndef CT_LIB_REGISTRY_H
#define CT_LIB_REGISTRY_H

#include <pthread.h>

#include "task-internal.h"

typedef struct ct__registry {
  pthread_mutex_t lock;
  ct_task_t **slots;
  size_t cap, len; /* cap is 0 or a power of two */
} ct__registry_t;

int ct__registry_init(ct__registry_t *r);
void ct__registry_destroy(ct__registry_t *r);

/* Insert a task with a non-zero id; the registry takes a reference.
 * Returns 0 or CT_ENOMEM (nothing inserted). */
int ct__registry_add(ct__registry_t *r, ct_task_t *t);

/* Remove the task and drop the registry's reference (no-op if absent). */
void ct__registry_remove(ct__registry_t *r, ct_task_t *t);

/* A new reference to the task with this id, or NULL. */
ct_task_t *ct__registry_get(ct__registry_t *r, uint64_t id);

size_t ct__registry_size(ct__registry_t *r);

#endif
