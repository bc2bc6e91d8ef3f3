/* The task registry: id -> task, for tasks submitted with a handle, from
 * submission until they are terminal. CT__REGISTRY_SHARDS open-addressing
 * hash tables (linear probing, backward-shift deletion), each under its own
 * lock, chosen by id so that submitting and finishing threads rarely meet.
 * The shard locks are leaves: nothing else is locked while one is held. */
#ifndef CT_LIB_REGISTRY_H
#define CT_LIB_REGISTRY_H

#include <pthread.h>

#include "core/task-internal.h"

#define CT__REGISTRY_SHARDS 16

typedef struct ct__registry_shard {
  _Alignas(64) pthread_mutex_t lock;
  ct_task_t **slots;
  size_t cap, len; /* cap is 0 or a power of two */
} ct__registry_shard_t;

typedef struct ct__registry {
  ct__registry_shard_t shards[CT__REGISTRY_SHARDS];
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
