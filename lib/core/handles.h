/* The handle table: id -> task for tasks submitted with a handle, from
 * submission until they are terminal (see handles.c). An id names a slot
 * and the slot's generation, so a lookup goes straight to its slot and an
 * id whose task has left answers nothing, even once the slot serves
 * another task. No shared lock: a lookup and a removal each hold only
 * their slot's lock bit, for a few instructions; an insertion none. */
#ifndef CT_LIB_HANDLES_H
#define CT_LIB_HANDLES_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/task-internal.h"

#define CT__HANDLE_CHUNK_BITS 12
#define CT__HANDLE_CHUNKS 4096 /* of 4096 slots: at most 2^24 tasks at once */

/* Set in every id from the table, so that no id of an untracked task (a
 * count from 1) is ever one of them. */
#define CT__HANDLE_ID_MARK (UINT64_C(1) << 62)

/* Free stacks: each thread takes slots from its own (see handles.c). */
#define CT__HANDLE_SHARDS 8

struct ct__handle_slot;

/* Guards: A: atomic, any thread.  G: grow_lock. */
typedef struct ct__handles {
  struct { /* each a stack: tag << 32 | index + 1 of its top slot */
    _Alignas(64) atomic_uint_fast64_t top; /* A: free slots, taken by the shard's threads */
    _Alignas(64) atomic_uint_fast64_t returned; /* A: given back, taken as a whole */
  } free[CT__HANDLE_SHARDS];
  _Alignas(64) pthread_mutex_t grow_lock;
  atomic_uint used;                           /* A (written under G): slots ever handed out */
  _Atomic(struct ct__handle_slot *) chunks[CT__HANDLE_CHUNKS]; /* A (written under G) */
} ct__handles_t;

int ct__handles_init(ct__handles_t *h);
/* Drop the table's reference to every task still in it, free the table. */
void ct__handles_destroy(ct__handles_t *h);

/* Give a task that no other thread can reach yet a slot and its id
 * (t->id); the table takes a reference (a plain store: see handles.c).
 * Lookups do not find it before ct__handles_publish().
 * Returns 0 or CT_ENOMEM (nothing taken, t->id unchanged). */
int ct__handles_add(ct__handles_t *h, ct_task_t *t);

/* Make an added task findable by ct__handles_get(): once its submission has
 * handed it over. No-op if it has left the table already. The caller holds
 * a reference to t. */
void ct__handles_publish(ct__handles_t *h, ct_task_t *t);

/* Take the task out of its slot and drop the table's reference (no-op if
 * it is not there). */
void ct__handles_remove(ct__handles_t *h, ct_task_t *t);

/* A new reference to the published task with this id, or NULL. */
ct_task_t *ct__handles_get(ct__handles_t *h, uint64_t id);

/* How many tasks the table holds (a pass over the slots). */
size_t ct__handles_size(ct__handles_t *h);

#endif
