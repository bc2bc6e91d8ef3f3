/* Tasks: allocation, reference counting, attributes, finishing, waiting.
 *
 * Finishing order (ct__task_finish): result, completion time, terminal
 * status, callback, arg_free (unless a timeout finished the task while its
 * function still runs: task-options.c), the registry lets go, then the
 * DONE flag and the waiters' wake-up. So a waiter that returns sees the
 * callback done, the argument freed and the task gone from the registry.
 * A canceled task is CANCELED before its result and completion time are
 * written (the swap claims it), so ct__task_finish_canceled() writes them
 * and then sets CT__F_CANCEL_WRITTEN, which stands for the terminal status
 * in that order; the getters show CANCELED only with the flag (QUEUED
 * before it), so a poller that reads a task terminal reads its result and
 * its completion time, whichever way it ended. Tasks never canceled pay
 * nothing for it: the flag is set and read on the cancel's side only.
 *
 * Waiting: ct_wait_completed() waits for its tasks one at a time, each on
 * a futex on that task's flags word, so a finisher wakes only the threads
 * that wait for its task: with several producers each waiting for its own
 * batch, a process-wide condition variable woke every waiter at every
 * finish, and they met on its mutex. A waiter counts itself in
 * task->waiters before it checks the DONE flag; a finisher sets DONE before
 * it reads waiters, and only wakes when someone waits for that very task
 * (both sequentially consistent), so tasks nobody waits for pay one atomic
 * load and no system call. ct_wait_any(), which waits for the first of
 * several tasks, uses one process-wide mutex and condition variable: it
 * counts itself on every task of its list and in `any_waiting`, and a
 * finisher that sees both broadcasts.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/cond.h"
#include "ctasker/result.h"
#include "core/slab.h"
#include "core/task-internal.h"

/* Task records, with and without the extra part: one slab each. */
_Static_assert(_Alignof(ct_task_t) <= 8 && _Alignof(struct ct__task_extra) <= 8,
               "slab records are aligned to 8");
static ct__slab_t task_slab = CT__SLAB_INIT(sizeof(ct_task_t), 0);

/* A record with the extra part (112 bytes) takes two whole cache lines
 * (records start on a line: after the page's 64-byte header). At 112 bytes
 * neighbours shared lines, so the thread that finished one task (its
 * status, flags, count, times) pulled away the line that its submitter
 * was filling, or another pool thread running, for the next one. */
#define CT__TASK_EXTRA_RECORD 128
_Static_assert(sizeof(ct_task_t) + sizeof(struct ct__task_extra) <= CT__TASK_EXTRA_RECORD,
               "a task with its extra part fits in two cache lines");
static ct__slab_t task_extra_slab = CT__SLAB_INIT(CT__TASK_EXTRA_RECORD, 1);

static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cond;
static pthread_once_t wait_once = PTHREAD_ONCE_INIT;
static atomic_uint any_waiting; /* threads in ct_wait_any() */

static void wait_cond_init(void) {
  ct__cond_init_monotonic(&wait_cond);
}

/* Every field is written here, not zeroed by memset first: a slab record
 * is reused, and one pass over it is all the hot path pays. */
static ct_task_t *task_init(ct_task_t *t, ct_task_fn fn, void *arg, int priority, bool extra,
                            unsigned flags) {
  *t = (ct_task_t){.fn = fn, .arg = arg, .priority = (uint8_t)priority};
  atomic_init(&t->refs, 1);
  atomic_init(&t->status, CT_TASK_QUEUED);
  atomic_init(&t->flags, extra ? flags | CT__F_EXTRA : flags);
  atomic_init(&t->waiters, 0);
  if (extra)
    *ct__task_x(t) = (struct ct__task_extra){0};
  return t;
}

ct_task_t *ct__task_new(ct_task_fn fn, void *arg, int priority, bool extra) {
  ct_task_t *t = ct__slab_alloc(extra ? &task_extra_slab : &task_slab);
  return t ? task_init(t, fn, arg, priority, extra, 0) : NULL;
}

/* A task with a record of the layer above (an arg_free, a timeout) is the
 * rarer kind, and the record's size is that layer's: it comes from the
 * heap, zeroed, and goes back there (task_free). */
ct_task_t *ct__task_new_more(ct_task_fn fn, void *arg, int priority, size_t more_size) {
  ct_task_t *t = calloc(1, sizeof(ct_task_t) + sizeof(struct ct__task_extra) + more_size);
  return t ? task_init(t, fn, arg, priority, true, CT__F_MORE) : NULL;
}

size_t ct__task_slab_bytes(void) {
  return ct__slab_bytes(&task_slab) + ct__slab_bytes(&task_extra_slab);
}

ct_task_t *ct_task_ref(ct_task_t *task) {
  if (task)
    atomic_fetch_add_explicit(&task->refs, 1, memory_order_relaxed);
  return task;
}

static void task_free(ct_task_t *task) {
  json_decref(task->result);
  struct ct__task_extra *x = ct__task_x(task);
  if (x)
    free(x->name);
  if (ct__task_has(task, CT__F_MORE))
    free(task);
  else
    ct__slab_free(task);
}

void ct_task_unref(ct_task_t *task) {
  if (!task || atomic_fetch_sub_explicit(&task->refs, 1, memory_order_acq_rel) != 1)
    return;
  task_free(task);
}

uint64_t ct_task_id(const ct_task_t *task) { return task ? task->id : 0; }
const char *ct_task_name(const ct_task_t *task) {
  struct ct__task_extra *x = task ? ct__task_x(task) : NULL;
  return x && x->name ? x->name : "";
}
int ct_task_priority(const ct_task_t *task) { return task ? task->priority : -1; }
void *ct_task_arg(const ct_task_t *task) {
  return task && !ct__task_has(task, CT__F_PROCESS) ? task->arg : NULL;
}

/* Acquire, as the flag's: a caller that reads a terminal status reads what
 * was written before it (see the top of the file). */
ct_task_status_t ct_task_status(const ct_task_t *task) {
  if (!task)
    return CT_TASK_CANCELED;
  int s = atomic_load_explicit(&task->status, memory_order_acquire);
  if (s == CT_TASK_CANCELED && !ct__task_has_acquire(task, CT__F_CANCEL_WRITTEN))
    return CT_TASK_QUEUED; /* claimed by a cancel that has not written yet */
  return (ct_task_status_t)s;
}

bool ct_task_is_terminal(const ct_task_t *task) {
  int s = ct_task_status(task);
  return s == CT_TASK_COMPLETED || s == CT_TASK_CANCELED;
}

/* Timestamps are written before the status change that publishes them;
 * a delayed task's queued time atomically, as others may read it then
 * (ct__task_try_queue_delayed()). */
static struct ct__task_extra *extra_of(const ct_task_t *task) {
  return task ? ct__task_x(task) : NULL;
}
double ct_task_time_queued(const ct_task_t *task) {
  struct ct__task_extra *x = extra_of(task);
  double t = 0;
  if (x && ct_task_status(task) != CT_TASK_DELAYED)
    __atomic_load(&x->t_queued, &t, __ATOMIC_RELAXED);
  return t;
}
double ct_task_time_started(const ct_task_t *task) {
  struct ct__task_extra *x = extra_of(task);
  return x && ct_task_status(task) >= CT_TASK_STARTED ? x->t_started : 0;
}
double ct_task_time_completed(const ct_task_t *task) {
  struct ct__task_extra *x = extra_of(task);
  return x && ct_task_is_terminal(task) ? x->t_completed : 0;
}

/* NULL reads as terminal (ct_task_status) but has no result to borrow. */
json_t *ct_task_result(const ct_task_t *task) {
  return task && ct_task_is_terminal(task) ? task->result : NULL;
}

bool ct_task_failed(const ct_task_t *task) {
  return ct_result_is_error(ct_task_result(task));
}

bool ct_task_cancel_requested(const ct_task_t *task) {
  return task && ct__task_has(task, CT__F_CANCEL_REQUESTED);
}

static void announce_terminal(ct_task_t *t) {
  struct ct__task_extra *x = ct__task_x(t);
  if (x && x->on_done)
    x->on_done(t, x->done_data);
  if (!ct__task_has(t, CT__F_TIMED_OUT))
    ct__task_free_arg(t);
  else
    ct__task_timed_out_half(t); /* its function may still run */
  if (ct__task_has(t, CT__F_REGISTERED))
    t->owner->forget(t->owner, t);
  atomic_fetch_or(&t->flags, CT__F_DONE);
  if (atomic_load(&t->waiters) == 0)
    return;
  syscall(SYS_futex, &t->flags, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
  if (atomic_load(&any_waiting) > 0) {
    pthread_once(&wait_once, wait_cond_init);
    pthread_mutex_lock(&wait_lock);
    pthread_cond_broadcast(&wait_cond);
    pthread_mutex_unlock(&wait_lock);
  }
}

static double finish_task(ct_task_t *t, json_t *result);

bool ct__task_run_and_release(ct_task_t *t, double *done_at) {
  if (done_at)
    *done_at = 0;
  if (ct__task_has_timeout(t))
    return ct__task_run_timed(t);
  json_t *result = t->fn(t, t->arg);
  bool failed = ct_result_is_error(result);
  struct ct__task_extra *x = ct__task_x(t);
  /* Nobody else holds the task and nobody asked to hear of it (nor for its
   * times, its argument or its deadline): the cheap path skips the terminal
   * bookkeeping nobody can observe. */
  if (!(x && (x->on_done || ct__task_timed(t))) && !ct__task_has(t, CT__F_MORE) &&
      atomic_load_explicit(&t->refs, memory_order_acquire) == 1) {
    /* ... and, as ours is the last reference, frees it without the
     * decrement: nobody is left who could take another. */
    t->result = result;
    task_free(t);
    return failed;
  }
  double now = finish_task(t, result);
  if (done_at)
    *done_at = now;
  ct_task_unref(t);
  return failed;
}

void ct__task_finish(ct_task_t *t, json_t *result) { finish_task(t, result); }

/* ct__task_finish(); returns the completion time it stamped (0: none). */
static double finish_task(ct_task_t *t, json_t *result) {
  t->result = result ? result : json_null();
  struct ct__task_extra *x = ct__task_x(t);
  double now = x ? ct__task_stamp_after(x->t_started) : 0;
  if (x)
    x->t_completed = now;
  if (x && ct__task_timed(t) && x->t_started > 0)
    ct__timing_record(t->owner->timing, x->t_started - x->t_queued, now - x->t_started);
  /* A store, not a swap: STARTED is left only here, by the executor that
   * won QUEUED -> STARTED (a cancel then only sets a flag), or by a
   * deadline that won the claim against the function's return
   * (task-options.c). Release: whoever reads the status as terminal reads
   * the result and the time after it; nobody orders a later load by it
   * (waiters have the DONE flag). */
  atomic_store_explicit(&t->status, CT_TASK_COMPLETED, memory_order_release);
  announce_terminal(t);
  return now;
}

void ct__task_finish_canceled(ct_task_t *t) {
  t->result = ct_error_new("CancelledError", "task %llu was canceled",
                           (unsigned long long)t->id);
  struct ct__task_extra *x = ct__task_x(t);
  /* Never started (an executor that lost the race to start it may be
   * writing its start time even now): after its queueing only. Read
   * atomically: see ct__task_try_queue_delayed(). */
  double queued;
  if (x) {
    __atomic_load(&x->t_queued, &queued, __ATOMIC_RELAXED);
    x->t_completed = ct__task_stamp_after(queued);
  }
  /* Release: the getters show CANCELED from here on (see the top). */
  atomic_fetch_or_explicit(&t->flags, CT__F_CANCEL_WRITTEN, memory_order_release);
  announce_terminal(t);
}

/* Acquire: a waiter that sees DONE also sees what the task and its
 * callback wrote. */
static bool task_done(const ct_task_t *t) {
  return (atomic_load_explicit(&t->flags, memory_order_acquire) & CT__F_DONE) != 0;
}

/* Wait for one task's DONE flag until `deadline` (an absolute
 * CLOCK_MONOTONIC time; NULL: no deadline). Returns 0 or CT_ETIMEDOUT.
 * Sleeps on the flags word while it still holds the value seen without
 * DONE (any change of it, as a cancel request's, just makes us look again),
 * counted as a waiter only on this task, so finishers of other tasks do not
 * wake us. */
static int wait_one(ct_task_t *t, const struct timespec *deadline) {
  int rc = 0;
  atomic_fetch_add(&t->waiters, 1);
  unsigned seen;
  while (rc == 0 &&
         !((seen = atomic_load_explicit(&t->flags, memory_order_acquire)) & CT__F_DONE)) {
    if (syscall(SYS_futex, &t->flags, FUTEX_WAIT_BITSET_PRIVATE, seen, deadline, NULL,
                FUTEX_BITSET_MATCH_ANY) != 0 &&
        errno == ETIMEDOUT && !task_done(t))
      rc = CT_ETIMEDOUT;
  }
  atomic_fetch_sub(&t->waiters, 1);
  return rc;
}

int ct_wait_completed(ct_task_t *const *tasks, size_t n, double timeout) {
  if (!ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  if (n == 0)
    return 0;
  if (!tasks)
    return CT_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!tasks[i])
      return CT_EINVAL;
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(timeout, &deadline);
  /* One task at a time, the last first: tasks mostly finish in the order
   * they were submitted, so once the last is done the others usually are
   * (one load each), and the waiter is woken once, not once per task as it
   * would be chasing the pool from the front of the list. */
  for (size_t i = n; i-- > 0;) {
    if (task_done(tasks[i]))
      continue;
    if (timeout == 0)
      return CT_ETIMEDOUT;
    if (wait_one(tasks[i], bounded ? &deadline : NULL) != 0)
      return CT_ETIMEDOUT;
  }
  return 0;
}

int ct_task_wait(ct_task_t *task, double timeout) {
  if (!task)
    return CT_EINVAL;
  return ct_wait_completed(&task, 1, timeout);
}

/* The lowest index of a terminal task in the list (NULLs skipped). */
static bool first_done(ct_task_t *const *tasks, size_t n, size_t *index) {
  for (size_t i = 0; i < n; i++)
    if (tasks[i] && task_done(tasks[i])) {
      *index = i;
      return true;
    }
  return false;
}

/* Counted as a waiter on every task of the list, so that the finisher of
 * any of them wakes it (the others' finishers do not). */
static int wait_first(ct_task_t *const *tasks, size_t n, const struct timespec *deadline,
                      size_t *index) {
  int rc = 0;
  atomic_fetch_add(&any_waiting, 1);
  for (size_t i = 0; i < n; i++)
    if (tasks[i])
      atomic_fetch_add(&tasks[i]->waiters, 1);
  pthread_mutex_lock(&wait_lock);
  while (rc == 0 && !first_done(tasks, n, index)) {
    if (!deadline)
      pthread_cond_wait(&wait_cond, &wait_lock);
    else if (pthread_cond_timedwait(&wait_cond, &wait_lock, deadline) != 0 &&
             !first_done(tasks, n, index))
      rc = CT_ETIMEDOUT;
  }
  pthread_mutex_unlock(&wait_lock);
  for (size_t i = 0; i < n; i++)
    if (tasks[i])
      atomic_fetch_sub(&tasks[i]->waiters, 1);
  atomic_fetch_sub(&any_waiting, 1);
  return rc;
}

int ct_wait_any(ct_task_t *const *tasks, size_t n, double timeout, size_t *index) {
  if (!ct__seconds_valid(timeout, CT__SEC_SIGNED) || (n > 0 && !tasks) || !index)
    return CT_EINVAL;
  size_t live = 0;
  for (size_t i = 0; i < n; i++)
    live += tasks[i] != NULL;
  if (live == 0)
    return CT_ENOENT;
  if (first_done(tasks, n, index))
    return 0;
  if (timeout == 0)
    return CT_ETIMEDOUT;
  pthread_once(&wait_once, wait_cond_init);
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(timeout, &deadline);
  return wait_first(tasks, n, bounded ? &deadline : NULL, index);
}
