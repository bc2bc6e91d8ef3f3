/* The run queue: one FIFO per priority value (0..255) and a bitmap of the
 * non-empty ones, so push and pop cost the same whatever the queue holds.
 * Not locked: its owner (the thread pool, the process pool) holds its own
 * lock around every call. Tasks are linked through ct_task.link; the queue
 * allocates nothing.
 */
#ifndef CT_LIB_RUNQUEUE_H
#define CT_LIB_RUNQUEUE_H

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "core/task-internal.h"

#define CT__RQ_LEVELS 256

struct ct__rq_fifo {
  ct_task_t *head, *tail;
};

typedef struct ct__runqueue {
  uint64_t nonempty[CT__RQ_LEVELS / 64];
  size_t len; /* tasks linked in, canceled ones not yet dropped included */
  struct ct__rq_fifo fifo[CT__RQ_LEVELS];
} ct__runqueue_t;

static inline void ct__rq_init(ct__runqueue_t *rq) { memset(rq, 0, sizeof *rq); }

static inline void ct__rq_push(ct__runqueue_t *rq, ct_task_t *t) {
  struct ct__rq_fifo *f = &rq->fifo[t->priority];
  t->link = NULL;
  if (f->tail)
    ((ct_task_t *)f->tail)->link = t;
  else
    f->head = t;
  f->tail = t;
  rq->nonempty[t->priority >> 6] |= UINT64_C(1) << (t->priority & 63);
  rq->len++;
}

/* The first task (lowest priority value, earliest pushed), or NULL. */
static inline ct_task_t *ct__rq_peek(const ct__runqueue_t *rq) {
  for (int w = 0; w < CT__RQ_LEVELS / 64; w++)
    if (rq->nonempty[w])
      return rq->fifo[w * 64 + __builtin_ctzll(rq->nonempty[w])].head;
  return NULL;
}

/* Remove and return the first task, or NULL. */
static inline ct_task_t *ct__rq_pop(ct__runqueue_t *rq) {
  ct_task_t *t = ct__rq_peek(rq);
  if (!t)
    return NULL;
  struct ct__rq_fifo *f = &rq->fifo[t->priority];
  f->head = t->link;
  if (!f->head) {
    f->tail = NULL;
    rq->nonempty[t->priority >> 6] &= ~(UINT64_C(1) << (t->priority & 63));
  }
  t->link = NULL;
  rq->len--;
  return t;
}

/* Empty the queue for a stop that cancels (both pools): each task popped
 * is first given to `release` (if not NULL: what its owner attached to
 * it), then CAS'd QUEUED -> CANCELED. Returns those in queue order as a
 * list through ->link, each with the queue's reference, for the caller to
 * finish outside its lock; *n counts them. Tasks another thread canceled
 * first only lose the queue's reference. */
static inline ct_task_t *ct__rq_cancel_all(ct__runqueue_t *rq, void (*release)(ct_task_t *),
                                           uint64_t *n) {
  ct_task_t *canceled = NULL, **tail = &canceled, *t;
  *n = 0;
  while ((t = ct__rq_pop(rq)) != NULL) {
    if (release)
      release(t);
    if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_CANCELED)) {
      ct_task_unref(t); /* already canceled by someone else */
      continue;
    }
    ++*n;
    *tail = t;
    tail = (ct_task_t **)&t->link;
  }
  return canceled;
}

/* Cancel one QUEUED task of a queue whose owner counts `queued` and
 * `canceled` under its lock (held): true if this call made it CANCELED. The
 * task leaves the run queue lazily, when it reaches the head. */
static inline bool ct__rq_cancel_one(ct_task_t *t, uint64_t *queued, uint64_t *canceled) {
  if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_CANCELED))
    return false;
  --*queued;
  ++*canceled;
  return true;
}

/* How many tasks may be running (of any priority) for a task of priority p
 * still to start: the reservation rule documented in supervisor.h. */
static inline int ct__cap_for_priority(int p, int pool, int reserve_normal, int reserve_high) {
  if (p == CT_PRIORITY_CRITICAL)
    return INT_MAX;
  if (p <= CT_PRIORITY_HIGH)
    return pool + reserve_normal + reserve_high;
  if (p <= CT_PRIORITY_NORMAL)
    return pool + reserve_normal;
  return pool;
}

#endif
