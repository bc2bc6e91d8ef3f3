/* The thread pool.
 *
 * One mutex (pool->lock) guards the run queue, the counters and the idle
 * list; it is the only lock here, and nothing else is locked while it is
 * held except the loop inbox lock taken by the on_drained hook.
 *
 * Work enters through ct__pool_submit(): the task is linked into the run
 * queue and, if it may start under its cap, one idle thread is claimed (or
 * a thread is started). A thread takes a task off the queue only to run it
 * at once, so priority order holds for everything that has not started.
 * After a task a thread takes the next one in the same critical section in
 * which it counts the finished one: one lock round trip per task.
 *
 * Waking: idle threads form a LIFO stack (the warmest first). A claimer
 * sets the thread's `wake` flag and signals its own condition variable only
 * if it already sleeps; a thread that has just gone idle spins a little on
 * its flag first, so a task submitted moments after the last one starts
 * without a system call. `woken` counts claimed threads that have not yet
 * picked up work; `running + woken` is what the caps are checked against.
 *
 * Threads start on demand, block every signal, are named "ct-pool", and
 * exit after `keepalive` idle seconds while more than min_threads live, or
 * when the pool stops and the queue is empty. They are detached: the last
 * one out calls on_drained under the lock, after which none touches the pool.
 */
#include "threadpool.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ctasker/result.h"

#define CT__POOL_STACK_SIZE (4u << 20)
#define CT__SPIN_ROUNDS 4000

typedef struct ct__worker {
  struct ct__worker *next_idle;
  struct ct__worker *prev_all, *next_all;
  ct__pool_t *pool;
  ct_task_t *current;
  pthread_cond_t cond;
  atomic_bool wake;
  bool sleeping;
} ct__worker_t;

static _Thread_local ct__pool_t *own_pool;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static void pool_log(ct__pool_t *p, int level, const char *msg) {
  if (p->cfg.log)
    p->cfg.log(level, msg, p->cfg.log_data);
}

int ct__pool_init(ct__pool_t *p, const ct__pool_cfg_t *cfg) {
  memset(p, 0, sizeof *p);
  p->cfg = *cfg;
  ct__rq_init(&p->rq);
  return pthread_mutex_init(&p->lock, NULL) == 0 ? 0 : CT_ENOMEM;
}

void ct__pool_destroy(ct__pool_t *p) { pthread_mutex_destroy(&p->lock); }

static int cap_of(const ct__pool_t *p, int priority) {
  return ct__cap_for_priority(priority, p->cfg.pool_size, p->cfg.reserve_normal,
                              p->cfg.reserve_high);
}

/* Pop the first live task if it may start now; drop canceled ones on the
 * way (their references). Lock held. */
static ct_task_t *take_runnable(ct__pool_t *p) {
  ct_task_t *t;
  while ((t = ct__rq_peek(&p->rq)) != NULL) {
    if (atomic_load_explicit(&t->status, memory_order_relaxed) == CT_TASK_CANCELED) {
      ct__rq_pop(&p->rq);
      ct_task_unref(t);
      continue;
    }
    if (p->running + p->woken >= cap_of(p, t->priority))
      return NULL;
    ct__rq_pop(&p->rq);
    if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_STARTED)) {
      ct_task_unref(t); /* canceled between the check and here */
      continue;
    }
    if (ct__task_has(t, CT__F_TIMED))
      t->t_started = ct__now(); /* under the lock: the watchdog reads it */
    p->queued--;
    p->running++;
    return t;
  }
  return NULL;
}

static void claim(ct__worker_t *w) {
  ct__pool_t *p = w->pool;
  p->idle = w->next_idle;
  w->next_idle = NULL;
  p->woken++;
  atomic_store_explicit(&w->wake, true, memory_order_release);
  if (w->sleeping)
    pthread_cond_signal(&w->cond);
}

static void unlink_idle(ct__worker_t *w) {
  ct__pool_t *p = w->pool;
  for (ct__worker_t **pp = &p->idle; *pp; pp = &(*pp)->next_idle)
    if (*pp == w) {
      *pp = w->next_idle;
      w->next_idle = NULL;
      return;
    }
}

static void *worker_main(void *arg);

/* Start one thread that counts as claimed. Lock held. */
static int spawn(ct__pool_t *p) {
  pthread_attr_t attr;
  sigset_t all, old;
  pthread_t th;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, CT__POOL_STACK_SIZE);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&th, &attr, worker_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    pool_log(p, CT_LOG_ERROR, "ctasker: could not start a pool thread");
    return CT_EAGAIN;
  }
  p->threads++;
  p->woken++;
  return 0;
}

/* A task of `priority` was queued or may now start: hand it a thread. */
static void wake_for(ct__pool_t *p, int priority) {
  if (p->running + p->woken >= cap_of(p, priority))
    return;
  if (p->idle)
    claim(p->idle);
  else
    spawn(p);
}

int ct__pool_start(ct__pool_t *p) {
  pthread_mutex_lock(&p->lock);
  int rc = 0;
  while (rc == 0 && p->threads < p->cfg.min_threads)
    rc = spawn(p);
  pthread_mutex_unlock(&p->lock);
  return rc;
}

int ct__pool_submit(ct__pool_t *p, ct_task_t *t, bool accept_when_stopping) {
  pthread_mutex_lock(&p->lock);
  if (p->stopping && !accept_when_stopping) {
    pthread_mutex_unlock(&p->lock);
    return CT_ESHUTDOWN;
  }
  ct__rq_push(&p->rq, t);
  p->submitted++;
  p->queued++;
  wake_for(p, t->priority);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

bool ct__pool_cancel_queued(ct__pool_t *p, ct_task_t *t) {
  pthread_mutex_lock(&p->lock);
  bool won = ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_CANCELED);
  if (won) {
    p->queued--;
    p->canceled++;
  }
  pthread_mutex_unlock(&p->lock);
  return won;
}

/* Go idle until claimed; false if the thread should exit instead. Lock held
 * on entry and on return. */
static bool wait_for_work(ct__pool_t *p, ct__worker_t *w) {
  w->next_idle = p->idle;
  p->idle = w;
  atomic_store_explicit(&w->wake, false, memory_order_relaxed);
  pthread_mutex_unlock(&p->lock);
  for (int i = 0; i < CT__SPIN_ROUNDS; i++) {
    if (atomic_load_explicit(&w->wake, memory_order_acquire))
      break;
    cpu_relax();
  }
  pthread_mutex_lock(&p->lock);
  while (!atomic_load_explicit(&w->wake, memory_order_acquire)) {
    struct timespec deadline = ct__deadline(p->cfg.keepalive);
    w->sleeping = true;
    int rc = pthread_cond_timedwait(&w->cond, &p->lock, &deadline);
    w->sleeping = false;
    if (rc != 0 && !atomic_load(&w->wake) && p->threads > p->cfg.min_threads) {
      unlink_idle(w);
      return false;
    }
  }
  p->woken--;
  return true;
}

/* Claim every idle thread so that each sees the stop. Lock held. */
static void wake_all_idle(ct__pool_t *p) {
  while (p->idle)
    claim(p->idle);
}

static void worker_exit(ct__pool_t *p, ct__worker_t *w) {
  if (w->prev_all)
    w->prev_all->next_all = w->next_all;
  else
    p->all = w->next_all;
  if (w->next_all)
    w->next_all->prev_all = w->prev_all;
  p->threads--;
  if (p->stopping) {
    wake_all_idle(p);
    if (p->threads == 0 && p->cfg.on_drained)
      p->cfg.on_drained(p->cfg.data);
  }
}

static void *worker_main(void *arg) {
  ct__pool_t *p = arg;
  ct__worker_t w = {.pool = p};
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&w.cond, &attr);
  pthread_condattr_destroy(&attr);
  pthread_setname_np(pthread_self(), "ct-pool");
  own_pool = p;

  pthread_mutex_lock(&p->lock);
  p->woken--; /* spawn() counted this thread as claimed */
  w.next_all = p->all;
  if (p->all)
    p->all->prev_all = &w;
  p->all = &w;
  for (;;) {
    ct_task_t *t = take_runnable(p);
    if (t) {
      w.current = t;
      pthread_mutex_unlock(&p->lock);
      ct__task_run(t);
      bool failed = ct_result_is_error(t->result);
      pthread_mutex_lock(&p->lock);
      w.current = NULL;
      p->running--;
      if (failed)
        p->failed++;
      else
        p->completed++;
      ct_task_unref(t);
      continue;
    }
    if (p->stopping && p->rq.len == 0)
      break;
    if (!wait_for_work(p, &w))
      break;
  }
  worker_exit(p, &w);
  pthread_mutex_unlock(&p->lock);
  pthread_cond_destroy(&w.cond);
  return NULL;
}

ct_task_t *ct__pool_stop(ct__pool_t *p, bool cancel_queued) {
  ct_task_t *canceled = NULL, **tail = &canceled;
  pthread_mutex_lock(&p->lock);
  p->stopping = true;
  ct_task_t *t;
  while (cancel_queued && (t = ct__rq_pop(&p->rq)) != NULL) {
    if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_CANCELED)) {
      ct_task_unref(t); /* already canceled by someone else */
      continue;
    }
    p->queued--;
    p->canceled++;
    *tail = t;
    tail = (ct_task_t **)&t->link;
  }
  wake_all_idle(p);
  if (p->threads == 0 && p->cfg.on_drained && p->rq.len == 0)
    p->cfg.on_drained(p->cfg.data);
  else if (p->threads == 0 && p->rq.len > 0)
    spawn(p); /* drain what was queued before any thread started */
  pthread_mutex_unlock(&p->lock);
  return canceled;
}

bool ct__pool_drained(ct__pool_t *p) {
  pthread_mutex_lock(&p->lock);
  bool drained = p->stopping && p->threads == 0 && p->rq.len == 0;
  pthread_mutex_unlock(&p->lock);
  return drained;
}

void ct__pool_stats(ct__pool_t *p, ct_stats_t *out) {
  pthread_mutex_lock(&p->lock);
  out->submitted = p->submitted;
  out->queued = p->queued;
  out->running = (uint64_t)p->running;
  out->completed = p->completed;
  out->failed = p->failed;
  out->canceled = p->canceled;
  out->threads = (uint64_t)p->threads;
  uint64_t idle = 0;
  for (ct__worker_t *w = p->idle; w; w = w->next_idle)
    idle++;
  out->threads_idle = idle;
  pthread_mutex_unlock(&p->lock);
}

void ct__pool_each_task(ct__pool_t *p, bool (*fn)(ct_task_t *, bool, void *), void *data) {
  pthread_mutex_lock(&p->lock);
  for (ct__worker_t *w = p->all; w; w = w->next_all)
    if (w->current)
      fn(w->current, true, data);
  for (int level = 0; level < CT__RQ_LEVELS; level++)
    for (ct_task_t *t = p->rq.fifo[level].head; t; t = t->link)
      if (!fn(t, false, data))
        break;
  pthread_mutex_unlock(&p->lock);
}

bool ct__pool_is_own_thread(ct__pool_t *p) { return own_pool == p; }
