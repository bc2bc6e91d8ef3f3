/* The thread pool.
 *
 * Work enters through ct__pool_submit() without taking the lock: the task is
 * pushed onto `intake`, a lock-free stack (a delayed task whose delay has
 * passed enters under the lock: ct__pool_submit_delayed()). Pool threads
 * move the intake into the run queue (reversed, so submission order is kept)
 * under the lock, and take tasks off the run queue only to run them at once,
 * so strict priority order holds for everything that has not started. After
 * a task a thread counts it and takes the next one in one critical section:
 * one lock round trip per task, and none on the submitting side while the
 * pool is busy or a thread spins. Tasks are not taken in batches: taking up
 * to eight per lock hold, even without the checks that strict priority, the
 * caps and cancel would need, saved about a tenth of the instructions per
 * task but no measurable CPU time or throughput (bench-pool), and keeping a
 * batch's tasks within reach of idle threads, a stop and the watchdog would
 * cost part of even that.
 *
 * Locks: one mutex (pool->lock) guards the run queue, the counters and the
 * thread lists. It is a leaf: the on_drained and on_spawn_failed hooks,
 * called under it, only kick a loop, which takes no lock (see the table in
 * docs/threading.md). It is held for a few hundred instructions at a time,
 * so it is glibc's adaptive kind: a thread that finds it taken spins a
 * little before it sleeps in the kernel. With a plain mutex, two pool
 * threads taking their next tasks met often enough that a quarter of the
 * CPU time went to futex calls (bench-pool, tracked tasks, one producer);
 * the adaptive one gave about 10-30% more tasks per second, fire-and-forget
 * and tracked alike, at less CPU time per task.
 *
 * Waking. `busy` counts running tasks plus threads claimed to start one;
 * the caps are checked against it. A thread hands its unit of `busy` from
 * one task to the next, so a busy pool does not write it. A submitter
 * needs the lock only when its task could start now (busy below its cap)
 * and no idle thread is spinning or waking (`waking`: claimed or started,
 * and not yet back at the queue): then it claims an idle thread (LIFO: the
 * warmest) or starts one. So at most one thread is on its way at a time,
 * as with the searching threads of Go's scheduler and Tokio: a thread that
 * starts a task wakes the next one only if more work could start, and a
 * burst stops fanning out as soon as the threads awake keep up with it.
 * Claiming a thread for each submission while the claimed ones were still
 * waking woke about one thread per task when tasks were short: a broker
 * worker with 64 pool threads spent half of its CPU time waking them.
 *
 * With cfg.idle_spin, a thread that goes idle in an otherwise idle pool
 * first spins that long, watching the intake and its own claim flag, so a
 * task submitted moments after the last one starts without a system call;
 * then it sleeps on its own condition variable.
 * A thread that spins after every task is, to the kernel's scheduler, one
 * that used its time, and is woken later when work comes after a pause
 * (measured here: submit-to-start p99 of about 1.8 ms instead of 70 us on
 * an idle pool). So the spin adapts to how often it pays off: `spin_for`
 * doubles (up to idle_spin) after a spin that found work, or when work came
 * within idle_spin of the pool going idle (`busy` falling to 0: a spin would
 * have caught it; measured to the claim, not to the wake-up, which a busy
 * machine delays past any spin), and is quartered when it came later, or
 * not before a sleep timed out, down to no spin at all; once per time the
 * pool goes idle. A thread claimed while another runs teaches nothing: no
 * thread would have spun then (counting each thread's own idle time
 * instead, claims of a second thread while the first ran a long task
 * turned the spin off). Work that arrives in bursts keeps it up, work that
 * comes after pauses turns it off within a few pauses.
 * After its first microseconds a spin yields the core between looks, so
 * that on a machine with more runnable threads than cores it does not hold
 * the core the submitting thread waits for.
 *
 * Each side publishes before it looks at the other (intake push, then
 * `busy`, `spinning` and `waking`; a thread's decrement of one of them,
 * then the intake), all sequentially consistent, so a task is never left
 * with every thread asleep.
 *
 * Threads start on demand, block every signal, are named "ct-pool", and
 * exit after `keepalive` idle seconds while more than min_threads live, or
 * when the pool stops and nothing is queued. They are detached: the last
 * one out calls on_drained under the lock, after which none touches the pool.
 *
 * A thread that cannot be started (pthread_create fails: RLIMIT_NPROC,
 * memory) leaves a task that could start without one, and maybe no thread
 * at all to look at the queue. The first failure is logged, and
 * cfg.on_spawn_failed hands the retry to the layer above, which calls
 * ct__pool_retry_spawn() after a pause, again while it still fails; one
 * retry is owed at a time. A CANCEL stop cancels queued tasks without a
 * thread, so only a DRAIN stop waits for threads to come back.
 */
#include "exec/threadpool.h"

#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/cond.h"
#include "base/cpu.h"
#include "core/slab.h"

#define CT__POOL_STACK_SIZE (4u << 20)

typedef struct ct__pool_thread {
  struct ct__pool_thread *next_idle;
  ct__list_t in_all; /* in pool->all */
  ct__pool_t *pool;
  ct_task_t *current;
  double done_at; /* the completion time of the task it has just run, for
                     the next one's start (ct__task_start()); 0: none */
  pthread_cond_t cond;
  atomic_bool claimed;
  bool spinning, sleeping;
  bool has_slot; /* holds one unit of `busy`: from a claim or a running task */
} ct__pool_thread_t;

static _Thread_local ct__pool_t *own_pool;

static void pool_log(ct__pool_t *p, int level, const char *msg) {
  if (p->cfg.log)
    p->cfg.log(level, msg, p->cfg.log_data);
}

int ct__pool_init(ct__pool_t *p, const ct__pool_cfg_t *cfg) {
  memset(p, 0, sizeof *p);
  p->cfg = *cfg;
  p->spin_for = cfg->idle_spin;
  ct__rq_init(&p->rq);
  ct__list_init(&p->all);
  atomic_init(&p->intake, NULL);
  atomic_init(&p->busy, 0);
  atomic_init(&p->spinning, 0);
  atomic_init(&p->waking, 0);
  atomic_init(&p->stopping, false);
  pthread_mutexattr_t attr; /* adaptive: see "Locks" above */
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
  int rc = pthread_mutex_init(&p->lock, &attr);
  pthread_mutexattr_destroy(&attr);
  return rc == 0 ? 0 : CT_ENOMEM;
}

void ct__pool_destroy(ct__pool_t *p) { pthread_mutex_destroy(&p->lock); }

static int cap_of(const ct__pool_t *p, int priority) {
  return ct__cap_for_priority(priority, p->cfg.pool_size, p->cfg.reserve_normal,
                              p->cfg.reserve_high);
}

static void add_busy(ct__pool_t *p, int delta) {
  atomic_fetch_add(&p->busy, delta);
}

/* Move the intake into the run queue, oldest first. Lock held. Whoever
 * calls this outside a pool thread's loop calls wake_for_head() after it:
 * spinning threads watch only the intake. */
static void drain_intake(ct__pool_t *p) {
  /* Nearly always empty when a busy thread looks: a load keeps the line
   * shared with the submitters; only work there is worth the exchange.
   * Sequentially consistent (a plain load on x86): a thread that has just
   * stopped counting as waking must see every push made by a submitter
   * that saw it waking. */
  if (!atomic_load(&p->intake))
    return;
  ct_task_t *newest = atomic_exchange(&p->intake, NULL);
  ct_task_t *oldest = NULL;
  while (newest) { /* reverse */
    ct_task_t *next = newest->link;
    newest->link = oldest;
    oldest = newest;
    newest = next;
  }
  while (oldest) {
    ct_task_t *t = oldest;
    oldest = t->link;
    p->queued++;
    ct__rq_push(&p->rq, t);
  }
}

/* Pop the first live task if it may start now on thread `w`; drop canceled
 * ones on the way (their references). A thread that holds a slot (it just
 * ran a task, or was claimed) starts the next task in it, so `busy`, which
 * every submitter reads, is not written while the pool stays busy. Once a
 * CANCEL stop has begun, what still arrives is returned CANCELED instead of
 * STARTED. Lock held. */
static ct_task_t *take_runnable(ct__pool_t *p, ct__pool_thread_t *w) {
  ct_task_t *t;
  double at = w->done_at; /* good for this look only */
  w->done_at = 0;
  /* Another thread may have stamped a later start since this one's task
   * ended: start times must follow the start order. */
  if (at > 0 && at < p->last_start)
    at = p->last_start;
  drain_intake(p);
  while ((t = ct__rq_peek(&p->rq)) != NULL) {
    if (atomic_load_explicit(&t->status, memory_order_relaxed) == CT_TASK_CANCELED) {
      ct__rq_pop(&p->rq);
      ct_task_unref(t);
      continue;
    }
    int others = atomic_load_explicit(&p->busy, memory_order_relaxed) - w->has_slot;
    if (others >= cap_of(p, t->priority))
      return NULL;
    ct__rq_pop(&p->rq);
    if (p->cancel_late && ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_CANCELED)) {
      p->queued--;
      p->canceled++;
      return t;
    }
    bool started = ct__task_start(t, &at); /* under the lock: the watchdog reads it */
    if (at > p->last_start)
      p->last_start = at;
    if (!started) {
      ct_task_unref(t); /* canceled between the check and here */
      continue;
    }
    p->queued--;
    p->running++;
    if (!w->has_slot)
      add_busy(p, 1);
    w->has_slot = true;
    return t;
  }
  return NULL;
}

static void claim(ct__pool_thread_t *w) {
  ct__pool_t *p = w->pool;
  p->idle = w->next_idle;
  w->next_idle = NULL;
  if (w->spinning)
    atomic_fetch_sub(&p->spinning, 1);
  w->spinning = false;
  add_busy(p, 1);
  atomic_fetch_add(&p->waking, 1);
  atomic_store_explicit(&w->claimed, true, memory_order_release);
  if (w->sleeping)
    pthread_cond_signal(&w->cond);
}

/* Take a thread that was not claimed off the idle stack. Lock held. */
static void leave_idle(ct__pool_thread_t *w) {
  ct__pool_t *p = w->pool;
  for (ct__pool_thread_t **pp = &p->idle; *pp; pp = &(*pp)->next_idle)
    if (*pp == w) {
      *pp = w->next_idle;
      break;
    }
  w->next_idle = NULL;
  if (w->spinning)
    atomic_fetch_sub(&p->spinning, 1);
  w->spinning = false;
}

static void *thread_main(void *arg);

/* Start one thread that counts as claimed. Returns 0 or pthread_create()'s
 * error. Lock held. */
static int spawn(ct__pool_t *p) {
  pthread_attr_t attr;
  sigset_t all, old;
  pthread_t th;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, CT__POOL_STACK_SIZE);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&th, &attr, thread_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    return rc;
  p->threads++;
  add_busy(p, 1);
  atomic_fetch_add(&p->waking, 1);
  return 0;
}

/* Start a thread for work that waits. If none can be started, log the first
 * failure and hand the retry to cfg.on_spawn_failed, once until that retry
 * has run: nothing else would start a thread for the work while no thread
 * is left to look at the queue. Returns 0 or the error. Lock held. */
static int spawn_for_work(ct__pool_t *p) {
  char msg[160];
  int rc = spawn(p);
  if (rc == 0 && p->spawn_failures > 0) {
    snprintf(msg, sizeof msg, "ctasker: a pool thread started after %u failed attempts",
             p->spawn_failures);
    pool_log(p, CT_LOG_WARNING, msg);
    p->spawn_failures = 0;
  }
  if (rc == 0)
    return 0;
  if (p->spawn_failures++ == 0) {
    snprintf(msg, sizeof msg,
             "ctasker: could not start a pool thread (errno %d); retrying while work waits",
             rc);
    pool_log(p, CT_LOG_ERROR, msg);
  }
  if (!p->retry_owed && p->cfg.on_spawn_failed) {
    p->retry_owed = true;
    p->cfg.on_spawn_failed(p->cfg.data);
  }
  return rc;
}

/* Below this, a spin is not worth its clock reads: no spin. */
#define CT__SPIN_MIN 1e-6

/* Work came `pause` seconds after the pool went idle (or none came before
 * a sleep timed out): had a spin of idle_spin caught that, spin longer;
 * otherwise spin less, and below CT__SPIN_MIN not at all. Once per time
 * the pool goes idle. Lock held. */
static void learn_from_pause(ct__pool_t *p, double pause) {
  if (!p->pause_unlearned)
    return;
  p->pause_unlearned = false;
  if (pause <= p->cfg.idle_spin)
    p->spin_for = fmin(p->cfg.idle_spin, fmax(2 * p->spin_for, fmax(2 * pause, CT__SPIN_MIN)));
  else if ((p->spin_for /= 4) < CT__SPIN_MIN)
    p->spin_for = 0;
}

/* If the first queued task may start, hand it a thread, unless a thread
 * already on its way will take it (see "Waking" in the header comment).
 * Returns false if it needed a new thread and none could be started. Lock
 * held. */
static bool wake_for_head(ct__pool_t *p) {
  ct_task_t *head = ct__rq_peek(&p->rq);
  if (!head || atomic_load_explicit(&p->busy, memory_order_relaxed) >= cap_of(p, head->priority) ||
      atomic_load(&p->waking) > 0)
    return true;
  if (p->idle && p->pause_unlearned && atomic_load_explicit(&p->busy, memory_order_relaxed) == 0)
    learn_from_pause(p, ct__now() - p->idle_since); /* to the claim, not to the wake-up */
  if (p->idle)
    claim(p->idle);
  else if (spawn_for_work(p) != 0)
    return false;
  return true;
}

int ct__pool_start(ct__pool_t *p) {
  pthread_mutex_lock(&p->lock);
  int rc = 0;
  while (rc == 0 && p->threads < p->cfg.min_threads)
    rc = spawn(p);
  pthread_mutex_unlock(&p->lock);
  return rc == 0 ? 0 : CT_EAGAIN;
}

static void push_intake(ct__pool_t *p, ct_task_t *t) {
  ct_task_t *top = atomic_load_explicit(&p->intake, memory_order_relaxed);
  do
    t->link = top;
  while (!atomic_compare_exchange_weak(&p->intake, &top, t));
}

int ct__pool_submit(ct__pool_t *p, ct_task_t *t) {
  if (atomic_load_explicit(&p->stopping, memory_order_acquire))
    return CT_ESHUTDOWN;
  int cap = cap_of(p, t->priority); /* t may be gone once pushed */
  push_intake(p, t);
  if (atomic_load(&p->busy) >= cap || atomic_load(&p->spinning) > 0 ||
      atomic_load(&p->waking) > 0)
    return 0; /* a running, spinning or waking thread will see it */
  pthread_mutex_lock(&p->lock);
  drain_intake(p);
  wake_for_head(p);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

bool ct__pool_submit_delayed(ct__pool_t *p, ct_task_t *t) {
  pthread_mutex_lock(&p->lock);
  drain_intake(p); /* what was submitted before goes first */
  bool queued = ct__task_try_queue_delayed(t);
  if (queued) {
    p->queued++;
    ct__rq_push(&p->rq, t);
  }
  wake_for_head(p);
  pthread_mutex_unlock(&p->lock);
  return queued;
}

bool ct__pool_cancel_queued(ct__pool_t *p, ct_task_t *t) {
  pthread_mutex_lock(&p->lock);
  drain_intake(p); /* so that the counters include the task */
  wake_for_head(p);
  bool won = ct__rq_cancel_one(t, &p->queued, &p->canceled);
  pthread_mutex_unlock(&p->lock);
  return won;
}

static bool work_waiting(ct__pool_t *p) {
  return atomic_load(&p->intake) != NULL;
}

static bool claimed_or_work(ct__pool_t *p, ct__pool_thread_t *w) {
  return atomic_load_explicit(&w->claimed, memory_order_acquire) || work_waiting(p);
}

/* A spin this long yields the core between looks: on a machine with more
 * runnable threads than cores, the thread that would submit the work may
 * be waiting for this very core, and a spin that holds it waits in vain. */
#define CT__SPIN_YIELD_AFTER 2e-6

/* The spin found work: spin longer next time. Lock held. Returns true. */
static bool spin_paid(ct__pool_t *p) {
  p->spins_paid++;
  learn_from_pause(p, 0);
  return true;
}

/* Spin for work for spin_for seconds at most (see the header comment);
 * true if the thread should look again now (it was claimed, or work arrived and it left the idle
 * stack). A thread spins only when no other pool thread spins or runs a
 * task: spinning beside busy threads takes the cores that they and the
 * submitting threads need, while an idle pool's one spinner costs little
 * and starts the next task without a wake-up. Lock held on entry and
 * return, released while spinning. */
static bool spin_for_work(ct__pool_t *p, ct__pool_thread_t *w) {
  if (p->spin_for <= 0 || atomic_load(&p->spinning) > 0 || atomic_load(&p->busy) > 0)
    return false;
  w->spinning = true;
  atomic_fetch_add(&p->spinning, 1);
  double start = ct__now(), until = start + p->spin_for;
  pthread_mutex_unlock(&p->lock);
  while (!claimed_or_work(p, w)) {
    for (int i = 0; i < 32 && !claimed_or_work(p, w); i++)
      ct__cpu_relax();
    double now = ct__now();
    if (now > until)
      break;
    if (now > start + CT__SPIN_YIELD_AFTER)
      sched_yield(); /* to a submitter that shares this core, if any */
  }
  pthread_mutex_lock(&p->lock);
  p->spins++;
  if (atomic_load_explicit(&w->claimed, memory_order_acquire))
    return spin_paid(p);
  leave_idle(w); /* stop spinning first, then look: see the header comment */
  if (work_waiting(p))
    return spin_paid(p);
  w->next_idle = p->idle; /* back on the stack, to sleep */
  p->idle = w;
  return false;
}

/* Before a thread sleeps: the task records it freed go back to their slab,
 * and pages whose records have all been free for a while go back to the
 * system (slab.h), so memory comes back after a burst. Outside the lock:
 * after a burst that is a pass over every freed record. A claim meanwhile
 * is seen by the caller, which has not started to wait yet. Returns true
 * if the thread should pass again after CT__SLAB_DECAY seconds (pages too
 * recently freed are left). Lock held on entry and return. */
static bool give_back_memory(ct__pool_t *p) {
  pthread_mutex_unlock(&p->lock);
  bool again = ct__slab_idle();
  pthread_mutex_lock(&p->lock);
  return again;
}

/* Go idle until claimed or work arrives; false if the thread should exit.
 * Lock held on entry and on return. */
static bool wait_for_work(ct__pool_t *p, ct__pool_thread_t *w) {
  atomic_store_explicit(&w->claimed, false, memory_order_relaxed);
  w->next_idle = p->idle;
  p->idle = w;
  if (spin_for_work(p, w))
    goto woken;
  bool trim = give_back_memory(p);
  while (!atomic_load_explicit(&w->claimed, memory_order_acquire)) {
    /* Owing the slab a second pass, wake for it first: not a keepalive end. */
    struct timespec deadline = ct__deadline(trim ? CT__SLAB_DECAY : p->cfg.keepalive);
    w->sleeping = true;
    int rc = pthread_cond_timedwait(&w->cond, &p->lock, &deadline);
    w->sleeping = false;
    if (rc != 0 && p->pause_unlearned && atomic_load(&p->busy) == 0)
      learn_from_pause(p, ct__now() - p->idle_since); /* no work came while it slept */
    if (rc != 0 && trim) {
      trim = give_back_memory(p);
    } else if (rc != 0 && !atomic_load(&w->claimed) && p->threads > p->cfg.min_threads) {
      leave_idle(w);
      return false;
    }
  }
woken:
  if (atomic_load_explicit(&w->claimed, memory_order_relaxed)) {
    w->has_slot = true; /* the claim's unit of `busy` is this thread's now */
    atomic_fetch_sub(&p->waking, 1); /* before it looks at the intake */
  }
  return true;
}

/* Claim every idle thread so that each sees the stop. Lock held. */
static void wake_all_idle(ct__pool_t *p) {
  while (p->idle)
    claim(p->idle);
}

static void thread_exit(ct__pool_t *p, ct__pool_thread_t *w) {
  ct__list_remove(&w->in_all);
  p->threads--;
  if (atomic_load(&p->stopping)) {
    wake_all_idle(p);
    if (p->threads == 0 && p->cfg.on_drained)
      p->cfg.on_drained(p->cfg.data);
  }
}

static void finish_late_canceled(ct__pool_t *p, ct_task_t *t) {
  pthread_mutex_unlock(&p->lock);
  ct__task_finish_canceled(t);
  ct_task_unref(t);
  pthread_mutex_lock(&p->lock);
}

static void run_task(ct__pool_t *p, ct__pool_thread_t *w, ct_task_t *t) {
  /* The watchdog reads w->current under the lock, so while it is set the
   * thread keeps its own reference; without a watchdog nothing reads it. */
  bool watched = p->cfg.watch_running;
  if (watched)
    w->current = ct_task_ref(t);
  wake_for_head(p); /* more work that may start: fan out */
  pthread_mutex_unlock(&p->lock);
  bool failed = ct__task_run_and_release(t, &w->done_at);
  pthread_mutex_lock(&p->lock);
  if (watched) {
    w->current = NULL;
    ct_task_unref(t);
  }
  p->running--; /* its slot stays with the thread: see take_runnable() */
  if (failed)
    p->failed++;
  else
    p->completed++;
}

static void init_thread(ct__pool_t *p, ct__pool_thread_t *w) {
  ct__cond_init_monotonic(&w->cond);
  w->pool = p;
  atomic_init(&w->claimed, false);
}

/* Give back the thread's unit of `busy` after it found nothing to start;
 * true if work arrived meanwhile. A submitter that pushed after the intake
 * was drained but read `busy` before this decrement saw the pool busy and
 * woke nobody, so the thread looks at the intake again after publishing
 * (both sides sequentially consistent, as with `spinning`). Lock held. */
static bool give_up_slot(ct__pool_t *p, ct__pool_thread_t *w) {
  if (atomic_fetch_sub(&p->busy, 1) == 1 && p->cfg.idle_spin > 0) {
    p->idle_since = ct__now(); /* the pool is idle: see learn_from_pause() */
    p->pause_unlearned = true;
  }
  w->has_slot = false;
  return work_waiting(p);
}

static void *thread_main(void *arg) {
  ct__pool_t *p = arg;
  ct__pool_thread_t w = {0};
  init_thread(p, &w);
  pthread_setname_np(pthread_self(), "ct-pool");
  own_pool = p;

  pthread_mutex_lock(&p->lock);
  w.has_slot = true; /* spawn() counted this thread as claimed */
  atomic_fetch_sub(&p->waking, 1); /* before it looks at the intake */
  ct__list_push_front(&p->all, &w.in_all);
  for (;;) {
    ct_task_t *t = take_runnable(p, &w);
    if (!t && w.has_slot && give_up_slot(p, &w))
      continue;
    if (t && atomic_load(&t->status) == CT_TASK_CANCELED) {
      finish_late_canceled(p, t);
      continue;
    }
    if (t) {
      run_task(p, &w, t);
      continue;
    }
    if (atomic_load(&p->stopping) && p->rq.len == 0 && !work_waiting(p))
      break;
    if (!wait_for_work(p, &w))
      break;
  }
  thread_exit(p, &w);
  pthread_mutex_unlock(&p->lock);
  pthread_cond_destroy(&w.cond);
  return NULL;
}

/* Take every queued task off the run queue and CAS it to CANCELED; returns
 * them as a list (one reference each). Lock held. */
static ct_task_t *cancel_all_queued(ct__pool_t *p) {
  uint64_t n;
  ct_task_t *canceled = ct__rq_cancel_all(&p->rq, NULL, &n);
  p->queued -= n;
  p->canceled += n;
  return canceled;
}

ct_task_t *ct__pool_stop(ct__pool_t *p, bool cancel_queued) {
  ct_task_t *canceled = NULL;
  pthread_mutex_lock(&p->lock);
  atomic_store(&p->stopping, true);
  p->cancel_late = p->cancel_late || cancel_queued;
  drain_intake(p);
  if (cancel_queued)
    canceled = cancel_all_queued(p);
  wake_all_idle(p);
  if (p->threads == 0 && p->rq.len == 0) {
    if (p->cfg.on_drained)
      p->cfg.on_drained(p->cfg.data);
  } else if (p->threads == 0) {
    spawn_for_work(p); /* drain what was queued before any thread started */
  }
  pthread_mutex_unlock(&p->lock);
  return canceled;
}

/* Drop canceled tasks off the front of the run queue, as a thread would on
 * its way to the next live one. Lock held. */
static void drop_canceled_head(ct__pool_t *p) {
  ct_task_t *t;
  while ((t = ct__rq_peek(&p->rq)) != NULL &&
         atomic_load_explicit(&t->status, memory_order_relaxed) == CT_TASK_CANCELED) {
    ct__rq_pop(&p->rq);
    ct_task_unref(t);
  }
}

ct_task_t *ct__pool_retry_spawn(ct__pool_t *p, bool *again) {
  ct_task_t *canceled = NULL;
  pthread_mutex_lock(&p->lock);
  drain_intake(p);
  if (p->cancel_late)
    canceled = cancel_all_queued(p);
  drop_canceled_head(p);
  *again = !wake_for_head(p); /* retry_owed is still set: no new hook call */
  p->retry_owed = *again;
  if (!*again)
    p->spawn_failures = 0;
  if (atomic_load(&p->stopping) && p->threads == 0 && p->rq.len == 0 && !work_waiting(p) &&
      p->cfg.on_drained)
    p->cfg.on_drained(p->cfg.data); /* drained without a thread to say so */
  pthread_mutex_unlock(&p->lock);
  return canceled;
}

bool ct__pool_drained(ct__pool_t *p) {
  pthread_mutex_lock(&p->lock);
  bool drained = atomic_load(&p->stopping) && p->threads == 0 && p->rq.len == 0 &&
                 !work_waiting(p);
  pthread_mutex_unlock(&p->lock);
  return drained;
}

void ct__pool_counts(ct__pool_t *p, ct__pool_counts_t *out) {
  pthread_mutex_lock(&p->lock);
  drain_intake(p);
  out->queued = p->queued;
  out->running = (uint64_t)p->running;
  out->completed = p->completed;
  out->failed = p->failed;
  out->canceled = p->canceled;
  out->threads = (uint64_t)p->threads;
  uint64_t idle = 0;
  for (ct__pool_thread_t *w = p->idle; w; w = w->next_idle)
    idle++;
  out->threads_idle = idle;
  wake_for_head(p);
  pthread_mutex_unlock(&p->lock);
}

void ct__pool_each_task(ct__pool_t *p, bool (*fn)(ct_task_t *, bool, void *), void *data) {
  pthread_mutex_lock(&p->lock);
  drain_intake(p);
  wake_for_head(p);
  ct__list_t *node;
  ct__list_foreach(node, &p->all) {
    ct__pool_thread_t *w = ct__list_entry(node, ct__pool_thread_t, in_all);
    if (w->current)
      fn(w->current, true, data);
  }
  for (int level = 0; level < CT__RQ_LEVELS; level++)
    for (ct_task_t *t = p->rq.fifo[level].head; t; t = t->link)
      if (!fn(t, false, data))
        break;
  pthread_mutex_unlock(&p->lock);
}

bool ct__pool_is_own_thread(ct__pool_t *p) { return own_pool == p; }
