/* Delayed tasks: one ev_timer each on the supervisor's loop.
 *
 * A submitting thread posts a record (message, timer and task in one
 * allocation) to the loop. On the loop thread the record is linked into
 * sup->delays and its timer started; while the task is DELAYED its `link`
 * points at the record. When the timer fires the task goes to its
 * executor: the pool, its loop, or the process pool. Each executor moves
 * it DELAYED -> QUEUED itself, once it has counted it (the pools under
 * their locks, a loop before the move), so that a cancel that finds the
 * task QUEUED, and counts it out, never comes first. A loop that has ended
 * by then cancels the task (with a log line); so does a process pool that
 * is stopping, which takes the task only while it accepts work. A process
 * task's prepared call waits in its arg and is freed with the record if
 * the task never goes. A cancel from another thread wins the
 * DELAYED -> CANCELED swap itself and posts a "forget" message so the loop
 * frees the timer at once instead of at its expiry. Only the loop thread
 * touches records and the list.
 */
#include <stdlib.h>

#include "base/clock.h"
#include "process/procpool.h"
#include "supervisor/supervisor-internal.h"

typedef struct ct__delay {
  ct__loop_msg_t msg;
  ev_timer timer;
  ct_task_t *task; /* the run queue's reference, until queued */
  ct__loop_t *loop; /* where it goes, or NULL: the pool or the process pool */
  double after;
  ct__list_t node; /* in sup->delays */
  ct_supervisor_t *sup;
} ct__delay_t;

typedef struct {
  ct__loop_msg_t msg;
  ct_task_t *task; /* a reference */
} ct__forget_msg_t;

/* Drop the record's reference to a task that never went to its executor
 * (a process task's call goes with it). */
static void release_task(ct_task_t *t) {
  if (ct__task_has(t, CT__F_PROCESS))
    ct__procpool_release_call(t);
  ct_task_unref(t);
}

/* Stop and free a linked record. */
static void drop_delay(ct__delay_t *d) {
  ct_supervisor_t *sup = d->sup;
  ev_timer_stop(sup->loop.ev, &d->timer);
  ct__list_remove(&d->node);
  d->task->link = NULL;
  release_task(d->task);
  free(d);
  if (ct__list_empty(&sup->delays) && sup->stop_seen)
    ct__loop_kick(&sup->loop, &sup->stop_check);
}

/* Loop thread: cancel a task that is still DELAYED (a cancel that came
 * before the record's timer started, a stop, a process pool that stopped). */
static void cancel_on_loop(ct_supervisor_t *sup, ct_task_t *t) {
  if (ct__task_try_status(t, CT_TASK_DELAYED, CT_TASK_CANCELED)) {
    atomic_fetch_sub(&sup->delayed, 1);
    atomic_fetch_add(&sup->canceled_delayed, 1);
    ct__task_finish_canceled(t);
  }
}

/* A QUEUED loop task whose loop refused it (ended, or no memory for the
 * message): cancel it unless a cancel got there first. Takes the reference. */
static void refused_by_loop(ct_supervisor_t *sup, ct_task_t *t, int rc) {
  if (ct__loop_cancel_queued(&sup->loop_counts, t)) {
    ct__sup_log(sup, CT_LOG_WARNING, "ctasker: delayed task %llu (%s) canceled: its loop %s",
                (unsigned long long)t->id, ct_task_name(t),
                rc == CT_ESHUTDOWN ? "has ended" : "could not take it (out of memory)");
    ct__task_finish_canceled(t);
  }
  ct_task_unref(t);
}

/* A process task's delay has passed: true if the process pool took it (and
 * the record's reference); false if it was canceled meanwhile or is
 * canceled now because the pool stopped. */
static bool go_process(ct_supervisor_t *sup, ct_task_t *t) {
  int rc = ct__procpool_enqueue_delayed(atomic_load(&sup->procpool), t);
  if (rc == 0) {
    atomic_fetch_sub(&sup->delayed, 1);
    return true;
  }
  if (rc == CT_ESHUTDOWN) {
    ct__sup_log(sup, CT_LOG_WARNING,
                "ctasker: delayed process task %llu (%s) canceled: the process pool stopped",
                (unsigned long long)t->id, ct_task_name(t));
    cancel_on_loop(sup, t);
  }
  return false;
}

/* The delay has passed: hand the task (the record's reference) to its
 * executor. False if it was canceled instead: the record must let go. */
static bool go(ct__delay_t *d) {
  ct_supervisor_t *sup = d->sup;
  ct_task_t *t = d->task;
  if (atomic_load(&sup->state) != CT__SUP_RUNNING) {
    /* A stop has begun and its check has not run yet (the loop was busy):
     * a start past the stop is canceled, as the check would. */
    cancel_on_loop(sup, t);
    return false;
  }
  if (ct__task_has(t, CT__F_PROCESS))
    return go_process(sup, t); /* its link is the pool's queue's from now on */
  if (!d->loop) {
    if (!ct__pool_submit_delayed(&sup->pool, t)) /* the pool takes the reference */
      return false; /* canceled meanwhile */
    atomic_fetch_sub(&sup->delayed, 1);
    return true;
  }
  int rc = ct__loop_exec_delayed(d->loop, t, &sup->loop_counts);
  if (rc == CT_EALREADY)
    return false; /* canceled meanwhile */
  atomic_fetch_sub(&sup->delayed, 1);
  if (rc != 0)
    refused_by_loop(sup, t, rc);
  return true;
}

static void delay_expired(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__delay_t *d = w->data;
  if (!go(d)) {
    drop_delay(d);
    return;
  }
  ev_timer_stop(d->sup->loop.ev, &d->timer);
  ct__list_remove(&d->node);
  free(d);
}

static void arm_delay(ct__loop_t *loop, ct__loop_msg_t *msg) {
  ct__delay_t *d = (ct__delay_t *)msg;
  ct_supervisor_t *sup = loop->data;
  if (sup->stop_seen)
    cancel_on_loop(sup, d->task);
  if (atomic_load(&d->task->status) != CT_TASK_DELAYED) {
    release_task(d->task);
    free(d);
    return;
  }
  ct__list_push_front(&sup->delays, &d->node);
  d->task->link = d;
  ev_timer_init(&d->timer, delay_expired, d->after, 0.);
  d->timer.data = d;
  ev_now_update(loop->ev);
  ev_timer_start(loop->ev, &d->timer);
}

int ct__delay_start(ct_supervisor_t *sup, ct_task_t *t, double delay, ct__loop_t *loop) {
  ct__delay_t *d = calloc(1, sizeof *d);
  if (!d)
    return CT_ENOMEM;
  d->msg.run = arm_delay;
  d->task = t;
  d->loop = loop;
  d->after = delay;
  d->sup = sup;
  atomic_fetch_add(&sup->delayed, 1);
  int rc = ct__loop_post(&sup->loop, &d->msg);
  if (rc != 0) {
    atomic_fetch_sub(&sup->delayed, 1);
    free(d);
  }
  return rc;
}

static void forget_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__forget_msg_t *m = (ct__forget_msg_t *)msg;
  if (m->task->link)
    drop_delay(m->task->link);
  ct_task_unref(m->task);
  free(m);
}

void ct__delay_forget(ct_supervisor_t *sup, ct_task_t *t) {
  ct__forget_msg_t *m = malloc(sizeof *m);
  if (!m)
    return; /* the timer frees the record when it expires */
  m->msg.run = forget_on_loop;
  m->task = ct_task_ref(t);
  if (ct__loop_post(&sup->loop, &m->msg) != 0) {
    ct_task_unref(t);
    free(m);
  }
}

void ct__delay_cancel_all(ct_supervisor_t *sup) {
  while (!ct__list_empty(&sup->delays)) {
    ct__delay_t *d = ct__list_entry(sup->delays.next, ct__delay_t, node);
    cancel_on_loop(sup, d->task);
    drop_delay(d);
  }
}
