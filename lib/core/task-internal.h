/* The task struct and the calls the executors use on it.
 *
 * One struct serves every executor (pool thread, event loop, process): an
 * executor takes a task off a run queue, calls ct__task_run() or produces a
 * result its own way and calls ct__task_finish(). Status moves only by
 * compare-and-swap, so exactly one of "start", "cancel" and "finish" wins:
 *   DELAYED -> QUEUED -> STARTED -> COMPLETED
 *   DELAYED | QUEUED -> CANCELED
 * Every move publishes what was written for it before: the queued time
 * (QUEUED), the start time (STARTED), the result and the completion time
 * (COMPLETED). CANCELED cannot: the swap to it is how a cancel claims the
 * task, so the result and the time are written after it, on the canceling
 * thread, which then sets CT__F_CANCEL_WRITTEN (release). The public
 * getters show a task CANCELED only once that flag is set, and QUEUED
 * until then; the executors and the cancel paths read the status itself.
 * Records come from slabs (slab.h), sized to the byte: a fire-and-forget
 * task is a 64-byte record; the extra part of tracked tasks adds 48 (in a
 * 128-byte record: two whole cache lines, see task.c; plus the name); a
 * task with an arg_free or a timeout
 * carries a record of the layer above after its extra part, in one heap
 * block (task-options.c).
 */
#ifndef CT_LIB_TASK_INTERNAL_H
#define CT_LIB_TASK_INTERNAL_H

#include <stdatomic.h>

#include "base/clock.h"
#include "base/stamp-clock.h"
#include "core/timing.h"
#include "ctasker/task.h"

/* Who keeps a registered task (CT__F_REGISTERED) by id: the layer above
 * fills in the hook, so a task never names what submitted it. */
typedef struct ct__task_owner {
  /* The task is terminal and its callback has returned: drop it from the
   * owner's registry. Called by the finishing thread, no lock held. */
  void (*forget)(struct ct__task_owner *owner, ct_task_t *t);
  /* NULL, or where the owner's tasks that ran record their wait and run
   * times (core/timing.h); its tasks then all carry the extra part. */
  struct ct__timing *timing;
  /* For a task with a timeout (task-options.c), on the thread that runs
   * it: its function starts now (arm the deadline), and has returned
   * (disarm it; `late`: the deadline had already finished the task). */
  void (*deadline_start)(struct ct__task_owner *owner, ct_task_t *t);
  void (*deadline_end)(struct ct__task_owner *owner, ct_task_t *t, bool late);
} ct__task_owner_t;

enum ct__task_flag {
  CT__F_CANCEL_REQUESTED = 1u << 0, /* ct_task_cancel() was called */
  CT__F_DONE = 1u << 1,             /* terminal and callback returned */
  CT__F_REGISTERED = 1u << 2,       /* the registry holds a reference */
  CT__F_WARNED = 1u << 4,           /* reported past timeout_warning */
  CT__F_CRITICAL = 1u << 5,         /* reported past timeout_critical */
  CT__F_ON_LOOP = 1u << 6,          /* queued on a loop, not in the pool */
  CT__F_PROCESS = 1u << 7,          /* runs in the process pool */
  /* A task with a timeout: exactly one of the two is ever set (task-options.c). */
  CT__F_RETURNED = 1u << 8,  /* its function returned before its deadline */
  CT__F_TIMED_OUT = 1u << 9, /* its deadline finished it; the function may still run */
  CT__F_ARG_WAITS = 1u << 10, /* timed out: its end was told or its function
                                 returned; the other frees the arg */
  CT__F_MORE = 1u << 11,      /* a ct__task_more_t follows the extra part */
  CT__F_EXTRA = 1u << 12,     /* the extra part follows the task (ct__task_x()) */
  CT__F_CANCEL_WRITTEN = 1u << 13, /* CANCELED, its result and completion time
                                      written: the getters show it CANCELED */
};

/* What fewer tasks still carry: an arg_free or a timeout. It begins a
 * record of the layer above (the deadline's timer), which ct__task_new_more()
 * allocates after the extra part, in the task's own block. */
typedef struct ct__task_more {
  void (*arg_free)(void *arg); /* called once: terminal, function returned */
  double timeout;              /* seconds its function may run; 0: no bound */
} ct__task_more_t;

/* What only some tasks carry: those with a handle, a callback, a name, or a
 * supervisor watchdog. Allocated in the same block, right after the task,
 * so a flag (CT__F_EXTRA) says where it is and the task spends no pointer
 * on it; a task without it reads no clock. */
struct ct__task_extra {
  ct_task_done_fn on_done;
  void *done_data;
  char *name;
  /* Written before the status move that publishes each; t_queued of a
   * delayed task is written while others may read it, so it is then
   * accessed atomically (ct__task_try_queue_delayed(), ct_task_time_queued()). */
  double t_queued, t_started, t_completed;
};

struct ct_task {
  /* Run queue link while QUEUED (owner: the run queue's lock); while DELAYED
   * the loop thread keeps the task's timer record here. */
  void *link;
  ct_task_fn fn;
  void *arg;
  ct__task_owner_t *owner; /* set before the task is handed over */
  json_t *result; /* written once, before the getters see the task terminal */
  uint64_t id;
  atomic_uint refs;
  atomic_int status;
  atomic_uint flags;
  atomic_ushort waiters; /* threads in ct_wait_completed() on this task */
  uint8_t priority;
};

/* A fire-and-forget task is one cache line: what a queued task costs (with
 * its share of its slab page's header, 64.06 bytes). A 56-byte record (the
 * owner moved to the extra part) came to 56.03 bytes a task, but then
 * neighbouring records share lines, and tasks in flight on different
 * threads at once are neighbours: 5% more CPU time per task (bench-pool,
 * fire-and-forget, one producer, median of 8 runs alternated with this
 * layout). */
_Static_assert(sizeof(struct ct_task) <= 64, "a task record fits in 64 bytes");

/* The extra part, or NULL on the cheap path. */
static inline struct ct__task_extra *ct__task_x(const ct_task_t *t) {
  return atomic_load_explicit(&t->flags, memory_order_relaxed) & CT__F_EXTRA
             ? (struct ct__task_extra *)(t + 1)
             : NULL;
}

/* A new task with one reference, status QUEUED, with or without the extra
 * part; NULL if out of memory. */
ct_task_t *ct__task_new(ct_task_fn fn, void *arg, int priority, bool extra);

/* ct__task_new() with the extra part and, after it, `more_size` zeroed
 * bytes for a record that begins with a ct__task_more_t (CT__F_MORE). */
ct_task_t *ct__task_new_more(ct_task_fn fn, void *arg, int priority, size_t more_size);

/* The record after the extra part, or NULL. */
static inline ct__task_more_t *ct__task_more(const ct_task_t *t) {
  return atomic_load_explicit(&t->flags, memory_order_relaxed) & CT__F_MORE
             ? (ct__task_more_t *)(ct__task_x(t) + 1)
             : NULL;
}

/* Bytes the task slabs hold mapped now: records in use, free records kept
 * for reuse and a few spare pages (see slab.c). */
size_t ct__task_slab_bytes(void);

/* The time now for a task's timestamp, but never before `earlier`, its
 * own previous one: the stamp clock runs in step across threads only
 * within some tens of nanoseconds (base/stamp-clock.h). */
static inline double ct__task_stamp_after(double earlier) {
  double now = ct__stamp_now();
  return now < earlier ? earlier : now;
}

/* Timestamps, for tasks with the extra part (no-ops for the others). */
static inline void ct__task_stamp_queued(ct_task_t *t) {
  struct ct__task_extra *x = ct__task_x(t);
  if (x)
    x->t_queued = ct__stamp_now();
}
static inline void ct__task_stamp_started(ct_task_t *t) {
  struct ct__task_extra *x = ct__task_x(t);
  double queued;
  if (x) {
    __atomic_load(&x->t_queued, &queued, __ATOMIC_RELAXED);
    x->t_started = ct__task_stamp_after(queued);
  }
}

/* Whether the task's owner records wait and run times. */
static inline bool ct__task_timed(const ct_task_t *t) {
  return t->owner && t->owner->timing;
}

static inline bool ct__task_try_status(ct_task_t *t, int from, int to) {
  return atomic_compare_exchange_strong(&t->status, &from, to);
}

static inline bool ct__task_has(const ct_task_t *t, unsigned flag) {
  return (atomic_load_explicit(&t->flags, memory_order_relaxed) & flag) != 0;
}

/* ct__task_has(), for a flag that publishes what was written before it. */
static inline bool ct__task_has_acquire(const ct_task_t *t, unsigned flag) {
  return (atomic_load_explicit(&t->flags, memory_order_acquire) & flag) != 0;
}

/* Whether another thread may reach the task: a task without the extra part
 * has no handle, no callback and no watchdog, so only its executor holds it
 * (its own function may take a reference once it runs). */
static inline bool ct__task_private(const ct_task_t *t) { return ct__task_x(t) == NULL; }

/* QUEUED -> STARTED by compare-and-swap, the start time stamped first: the
 * status publishes the stamp, so whoever reads STARTED (ct_task_time_started()
 * from any thread) reads the time, never 0 nor a time being written. A task
 * canceled first keeps a stamp that nobody reads: the time is read only
 * from STARTED on. Returns false if the task was canceled first. */
static inline bool ct__task_try_start(ct_task_t *t) {
  ct__task_stamp_started(t);
  return ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_STARTED);
}

/* ct__task_try_start(), for the executor that took the task off its run
 * queue under its lock. A private task can be canceled only by a stop,
 * under that same lock, so a store does what the compare-and-swap does for
 * the others (and it has no time to stamp). `*at` on entry: the start time
 * to stamp without reading the clock, or 0 for none. The executor passes
 * the completion time of the task the thread has just finished, when it
 * went straight on to this one: both events happen as the thread passes
 * from one task to the next, so that one clock read, made outside the
 * lock, stamps them both. A task queued after that time takes its start
 * time from the clock. `*at` on return: the time stamped (unchanged for a
 * private task). */
static inline bool ct__task_start(ct_task_t *t, double *at) {
  if (ct__task_private(t)) {
    atomic_store_explicit(&t->status, CT_TASK_STARTED, memory_order_relaxed);
    return true;
  }
  struct ct__task_extra *x = ct__task_x(t);
  double queued;
  __atomic_load(&x->t_queued, &queued, __ATOMIC_RELAXED);
  if (*at <= 0 || *at < queued) {
    bool started = ct__task_try_start(t);
    *at = x->t_started;
    return started;
  }
  x->t_started = *at;
  return ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_STARTED);
}

/* DELAYED -> QUEUED by compare-and-swap, the queued time stamped first, as
 * ct__task_try_start() does for the start: whoever reads QUEUED or later
 * reads the time. A poller may read the time meanwhile, so it is written
 * atomically (and read so: ct_task_time_queued()). If a cancel wins the
 * swap, the time goes back to 0: a delayed task that never went to its
 * executor has none. Returns false if the task was canceled first. */
static inline bool ct__task_try_queue_delayed(ct_task_t *t) {
  if (atomic_load_explicit(&t->status, memory_order_relaxed) != CT_TASK_DELAYED)
    return false; /* canceled already: the time is left alone */
  struct ct__task_extra *x = ct__task_x(t);
  double now = x ? ct__stamp_now() : 0, none = 0;
  if (x)
    __atomic_store(&x->t_queued, &now, __ATOMIC_RELAXED);
  if (ct__task_try_status(t, CT_TASK_DELAYED, CT_TASK_QUEUED))
    return true;
  if (x)
    __atomic_store(&x->t_queued, &none, __ATOMIC_RELAXED);
  return false;
}

/* Run a task whose status is already STARTED (and t_started set with it),
 * finish it with what its function returned and drop the executor's
 * reference. Returns whether the result is an error. If `done_at` is not
 * NULL, it receives the completion time stamped, or 0 if none was (a task
 * without the extra part, or one with a timeout). */
bool ct__task_run_and_release(ct_task_t *t, double *done_at);

/* Make a STARTED task COMPLETED with `result` (stolen; NULL means json
 * null), run its callback, wake its waiters, drop it from the registry. */
void ct__task_finish(ct_task_t *t, json_t *result);

/* Give a task that has just become CANCELED (the caller won the CAS) its
 * CancelledError result, run its callback and wake its waiters. */
void ct__task_finish_canceled(ct_task_t *t);

/* task-options.c. Whether the task has a timeout (its function's run is
 * watched by the owner's deadline hooks). */
static inline bool ct__task_has_timeout(const ct_task_t *t) {
  ct__task_more_t *more = ct__task_more(t);
  return more && more->timeout > 0;
}

/* ct__task_run_and_release() for a task with a timeout: the owner arms the
 * deadline, the function runs, and its return either finishes the task or,
 * when the deadline finished it first, is discarded (the result freed, the
 * argument freed now that the function has returned). Returns whether the
 * task's result is an error (a late return's is: TimeoutError). */
bool ct__task_run_timed(ct_task_t *t);

/* The deadline of a STARTED task passed: unless its function has returned
 * already, finish it with a TimeoutError result and set its cancel flag
 * (its function goes on; its late return is discarded). True if this call
 * finished it. Any thread but the task's own. */
bool ct__task_time_out(ct_task_t *t);

/* Call the task's arg_free, if any, on its argument: once, by the one
 * thread that sees the task terminal with its function returned. */
void ct__task_free_arg(ct_task_t *t);

/* For a task its deadline finished: called once its end has been told
 * (after on_done) and once its function has returned; the second call
 * frees the argument. */
void ct__task_timed_out_half(ct_task_t *t);

#endif
