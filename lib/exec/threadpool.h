/* The thread pool: runs QUEUED tasks on pool threads in strict priority
 * order under the reservation caps. It knows tasks and the run queue, and
 * nothing of supervisors, loops or workers. */
#ifndef CT_LIB_THREADPOOL_H
#define CT_LIB_THREADPOOL_H

#include <pthread.h>
#include <stdatomic.h>

#include "base/list.h"
#include "core/runqueue.h"
#include "ctasker/common.h"

struct ct__pool_thread;

typedef struct ct__pool_cfg {
  int pool_size, reserve_normal, reserve_high, min_threads;
  double keepalive;
  double idle_spin; /* most seconds an idle thread spins before it sleeps
                       (adaptive, see threadpool.c); 0: never */
  bool watch_running; /* keep each running task reachable for ct__pool_each_task */
  /* Called under the pool lock when the pool is stopping and its last
   * thread exits: it must only post a message and return. */
  void (*on_drained)(void *data);
  /* Called under the pool lock when a queued task could start but no
   * thread could be started for it (and no retry is owed already): it must
   * only post a message and return. Its receiver then owes the pool a call
   * to ct__pool_retry_spawn() on another thread, after a pause. */
  void (*on_spawn_failed)(void *data);
  void *data;
  ct_log_fn log;
  void *log_data;
} ct__pool_cfg_t;

/* Guards: L: the pool's lock.  A: atomic, any thread (written under L
 * unless said otherwise).  I: set at init, then read-only. */
typedef struct ct__pool {
  /* A, written by submitting threads without the lock (see threadpool.c). */
  _Alignas(64) _Atomic(ct_task_t *) intake; /* newest first */
  _Alignas(64) atomic_int busy;     /* A: running + claimed-but-not-started */
  atomic_int spinning;              /* A: idle threads spinning, unclaimed */
  atomic_int waking;                /* A: threads claimed or started that have
                                       not yet looked at the queue */
  atomic_bool stopping;             /* A */

  _Alignas(64) pthread_mutex_t lock;
  ct__runqueue_t rq;          /* L */
  ct__pool_cfg_t cfg;         /* I */
  struct ct__pool_thread *idle;    /* L: idle threads, most recently idle first */
  ct__list_t all;             /* L: every live thread (for the watchdog) */
  int threads, running;       /* L */
  bool cancel_late;           /* L: stopping with CANCEL: cancel what still arrives */
  bool retry_owed;            /* L: on_spawn_failed was called; its retry is pending */
  unsigned spawn_failures;    /* L: failed thread starts since work last got one */
  uint64_t queued, completed, failed, canceled; /* L */
  double last_start;          /* L: the latest start time stamped */
  double spin_for;            /* L: seconds the next idle spin lasts, 0..idle_spin */
  uint64_t spins, spins_paid; /* L: idle spins, and those that found work */
  double idle_since;          /* L: when `busy` last fell to 0 (with idle_spin only) */
  bool pause_unlearned;       /* L: the spin has not yet learned from that pause */
} ct__pool_t;

int ct__pool_init(ct__pool_t *p, const ct__pool_cfg_t *cfg);
void ct__pool_destroy(ct__pool_t *p);

/* Start min_threads threads. Returns 0 or CT_EAGAIN. */
int ct__pool_start(ct__pool_t *p);

/* Queue a task (status QUEUED, priority set, the pool now owns one
 * reference). Returns 0, or CT_ESHUTDOWN if the pool is stopping (the task
 * is left with the caller). A submission racing with a CANCEL stop may be
 * accepted and then canceled by a pool thread. */
int ct__pool_submit(ct__pool_t *p, ct_task_t *t);

/* Queue a DELAYED task whose delay has passed (the pool then owns one
 * reference), also while the pool stops: it was accepted before. It turns
 * QUEUED under the pool lock and is counted queued in the same hold, so
 * that a cancel, which counts under that lock, never counts it out before
 * it was counted in. Returns false if it was canceled while DELAYED
 * (nothing taken). */
bool ct__pool_submit_delayed(ct__pool_t *p, ct_task_t *t);

/* CAS a QUEUED task to CANCELED under the pool lock (it is dropped from the
 * queue lazily). Returns true if this call made it CANCELED. */
bool ct__pool_cancel_queued(ct__pool_t *p, ct_task_t *t);

/* Begin stopping, or turn a stop begun without cancel_queued into one
 * with it. With cancel_queued, every queued task is CAS'd to CANCELED and
 * returned as a list (linked through ->link, one reference each) for the
 * caller to finish outside the lock. Returns that list. Without it, queued
 * tasks wait for a thread, however long none can be started. */
ct_task_t *ct__pool_stop(ct__pool_t *p, bool cancel_queued);

/* The retry owed after cfg.on_spawn_failed: start a thread for the first
 * queued task if it may start and none is idle. Once a CANCEL stop has
 * begun, queued tasks need no thread: they are CAS'd to CANCELED and
 * returned as ct__pool_stop() returns them. Sets *again if a thread is
 * still needed and could not be started: the caller retries later (no
 * further on_spawn_failed comes until then). */
ct_task_t *ct__pool_retry_spawn(ct__pool_t *p, bool *again);

/* True once stopping and no thread is left. */
bool ct__pool_drained(ct__pool_t *p);

/* The pool's counters, read together under its lock. */
typedef struct ct__pool_counts {
  uint64_t queued, running, completed, failed, canceled; /* tasks */
  uint64_t threads, threads_idle;
} ct__pool_counts_t;

void ct__pool_counts(ct__pool_t *p, ct__pool_counts_t *out);

/* Call fn(task, started, data) for every running task, then for queued ones
 * oldest first in each priority level, moving to the next level when fn
 * returns false;
 * under the pool lock (for the timeout watchdog; fn must not block). */
void ct__pool_each_task(ct__pool_t *p, bool (*fn)(ct_task_t *, bool started, void *), void *data);

/* Whether the calling thread is one of this pool's threads. */
bool ct__pool_is_own_thread(ct__pool_t *p);

#endif
