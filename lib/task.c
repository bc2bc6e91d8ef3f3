/* Tasks: allocation, reference counting, attributes, finishing, waiting.
 *
 * Finishing order (ct__task_finish): result, completion time, terminal
 * status, callback, then the DONE flag and the waiters' wake-up, then the
 * registry lets go. So a waiter that returns sees the callback done.
 *
 * Waiting: one process-wide mutex and condition variable serve every
 * ct_wait_completed() call. A waiter counts itself in task->waiters before
 * it checks the DONE flag; a finisher sets DONE before it reads waiters, and
 * only broadcasts when someone waits (both sequentially consistent), so
 * tasks nobody waits for pay one atomic load and no lock.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ctasker/result.h"
#include "supervisor-internal.h"
#include "task-internal.h"

static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cond;
static pthread_once_t wait_once = PTHREAD_ONCE_INIT;

static void wait_cond_init(void) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&wait_cond, &attr);
  pthread_condattr_destroy(&attr);
}

ct_task_t *ct__task_new(ct_task_fn fn, void *arg, int priority) {
  ct_task_t *t = malloc(sizeof *t);
  if (!t)
    return NULL;
  memset(t, 0, sizeof *t);
  t->fn = fn;
  t->arg = arg;
  t->priority = (uint8_t)priority;
  atomic_init(&t->refs, 1);
  atomic_init(&t->status, CT_TASK_QUEUED);
  return t;
}

ct_task_t *ct_task_ref(ct_task_t *task) {
  if (task)
    atomic_fetch_add_explicit(&task->refs, 1, memory_order_relaxed);
  return task;
}

void ct_task_unref(ct_task_t *task) {
  if (!task || atomic_fetch_sub_explicit(&task->refs, 1, memory_order_acq_rel) != 1)
    return;
  json_decref(task->result);
  free(task->name);
  free(task);
}

uint64_t ct_task_id(const ct_task_t *task) { return task ? task->id : 0; }
const char *ct_task_name(const ct_task_t *task) {
  return task && task->name ? task->name : "";
}
int ct_task_priority(const ct_task_t *task) { return task ? task->priority : -1; }
void *ct_task_arg(const ct_task_t *task) {
  return task && !ct__task_has(task, CT__F_PROCESS) ? task->arg : NULL;
}

ct_task_status_t ct_task_status(const ct_task_t *task) {
  return task ? (ct_task_status_t)atomic_load(&task->status) : CT_TASK_CANCELED;
}

bool ct_task_is_terminal(const ct_task_t *task) {
  int s = ct_task_status(task);
  return s == CT_TASK_COMPLETED || s == CT_TASK_CANCELED;
}

/* Timestamps are written before the status change that publishes them. */
double ct_task_time_queued(const ct_task_t *task) { return task ? task->t_queued : 0; }
double ct_task_time_started(const ct_task_t *task) {
  return task && ct_task_status(task) >= CT_TASK_STARTED ? task->t_started : 0;
}
double ct_task_time_completed(const ct_task_t *task) {
  return task && ct_task_is_terminal(task) ? task->t_completed : 0;
}

json_t *ct_task_result(const ct_task_t *task) {
  return ct_task_is_terminal(task) ? task->result : NULL;
}

bool ct_task_failed(const ct_task_t *task) {
  return ct_task_is_terminal(task) && ct_result_is_error(task->result);
}

bool ct_task_cancel_requested(const ct_task_t *task) {
  return task && ct__task_has(task, CT__F_CANCEL_REQUESTED);
}

static void task_settle(ct_task_t *t) {
  if (t->on_done)
    t->on_done(t, t->done_data);
  atomic_fetch_or(&t->flags, CT__F_DONE);
  if (atomic_load(&t->waiters) > 0) {
    pthread_once(&wait_once, wait_cond_init);
    pthread_mutex_lock(&wait_lock);
    pthread_cond_broadcast(&wait_cond);
    pthread_mutex_unlock(&wait_lock);
  }
  if (ct__task_has(t, CT__F_REGISTERED))
    ct__supervisor_forget(t->sup, t);
}

void ct__task_run(ct_task_t *t) {
  ct__task_finish(t, t->fn(t, t->arg));
}

void ct__task_finish(ct_task_t *t, json_t *result) {
  t->result = result ? result : json_null();
  if (ct__task_has(t, CT__F_TIMED))
    t->t_completed = ct__now();
  atomic_store(&t->status, CT_TASK_COMPLETED);
  task_settle(t);
}

void ct__task_finish_canceled(ct_task_t *t) {
  t->result = ct_error_new("CancelledError", "task %llu was canceled",
                           (unsigned long long)t->id);
  if (ct__task_has(t, CT__F_TIMED))
    t->t_completed = ct__now();
  task_settle(t);
}

static bool all_done(ct_task_t *const *tasks, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!ct__task_has(tasks[i], CT__F_DONE))
      return false;
  return true;
}

static void count_waiter(ct_task_t *const *tasks, size_t n, int delta) {
  for (size_t i = 0; i < n; i++)
    atomic_fetch_add(&tasks[i]->waiters, (unsigned short)delta);
}

int ct_wait_completed(ct_task_t *const *tasks, size_t n, double timeout) {
  if (n == 0)
    return 0;
  if (!tasks)
    return CT_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!tasks[i])
      return CT_EINVAL;
  if (all_done(tasks, n))
    return 0;
  if (timeout == 0)
    return CT_ETIMEDOUT;
  pthread_once(&wait_once, wait_cond_init);
  struct timespec deadline = ct__deadline(timeout > 0 ? timeout : 0);
  count_waiter(tasks, n, 1);
  int rc = 0;
  pthread_mutex_lock(&wait_lock);
  while (!all_done(tasks, n)) {
    if (timeout < 0) {
      pthread_cond_wait(&wait_cond, &wait_lock);
    } else if (pthread_cond_timedwait(&wait_cond, &wait_lock, &deadline) != 0 &&
               !all_done(tasks, n)) {
      rc = CT_ETIMEDOUT;
      break;
    }
  }
  pthread_mutex_unlock(&wait_lock);
  count_waiter(tasks, n, -1);
  return rc;
}

int ct_task_wait(ct_task_t *task, double timeout) {
  if (!task)
    return CT_EINVAL;
  return ct_wait_completed(&task, 1, timeout);
}
