/* Per-task timeouts of thread and loop tasks: one ev_timer each on the
 * supervisor's loop, like the delays (delay.c).
 *
 * A task with an arg_free or a timeout carries one record (ct__deadline_t,
 * in the task's own block: starting the task allocates nothing and cannot
 * fail). For a timeout, the thread
 * that runs the task posts the record's `arm` message just before the
 * function runs (ct__deadline_start, with a reference to the task), and its
 * `disarm` message once the function has returned (ct__deadline_end). Both
 * come from that one thread, so the loop sees them in that order. On the
 * loop thread `arm` starts the timer for what is left of the timeout since
 * the task's start (unless the function has already returned), and
 * `disarm` stops it and drops the reference. If the timer fires first,
 * ct__task_time_out() decides against the function's return
 * (core/task-options.c) and may finish the task with TimeoutError.
 *
 * The loop outlives every task that runs: a supervisor's stop ends its
 * loop only once the pool has no thread and every extra loop has ended, and
 * each running function's thread posts `disarm` before that.
 *
 * Counters: `overrun` (timed out, function still running) goes up before
 * the deadline claims the task, so a late return that follows at once never
 * takes it below zero; the late return takes it down and counts itself in
 * `late_returns`.
 */
#include "base/clock.h"
#include "supervisor/supervisor-internal.h"

typedef struct ct__deadline {
  ct__task_more_t more; /* first: what the task layer reads */
  ct__loop_msg_t arm, disarm;
  ev_timer timer; /* L */
  ct_task_t *task; /* while armed: a reference */
  ct_supervisor_t *sup;
} ct__deadline_t;

bool ct__deadline_bounded(double timeout) {
  return timeout > 0 && timeout < CT__SECONDS_FOREVER;
}

static ct__deadline_t *deadline_of(ct_task_t *t) { return (ct__deadline_t *)ct__task_more(t); }

/* Loop thread: the deadline passed before the function returned. */
static void deadline_passed(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct__deadline_t *d = w->data;
  ct_supervisor_t *sup = d->sup;
  atomic_fetch_add(&sup->overrun, 1);
  if (!ct__task_time_out(d->task)) {
    atomic_fetch_sub(&sup->overrun, 1); /* it returned meanwhile */
    return;
  }
  ct__sup_log(sup, CT_LOG_WARNING,
              "ctasker: task %llu (%s) timed out after %g s; its function still runs",
              (unsigned long long)d->task->id, ct_task_name(d->task), d->more.timeout);
}

static void arm_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  ct__deadline_t *d = (ct__deadline_t *)((char *)msg - offsetof(ct__deadline_t, arm));
  ct_task_t *t = d->task;
  if (ct__task_has(t, CT__F_RETURNED))
    return; /* back already: its disarm follows */
  double left = ct__task_x(t)->t_started + d->more.timeout - ct__now();
  ev_timer_set(&d->timer, left > 0 ? left : 0, 0.);
  ev_now_update(loop->ev);
  ev_timer_start(loop->ev, &d->timer);
}

static void disarm_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  ct__deadline_t *d = (ct__deadline_t *)((char *)msg - offsetof(ct__deadline_t, disarm));
  ev_timer_stop(loop->ev, &d->timer);
  ct_task_t *t = d->task;
  d->task = NULL;
  ct_task_unref(t); /* may free d */
}

size_t ct__deadline_size(void) { return sizeof(ct__deadline_t); }

void ct__deadline_init(ct_supervisor_t *sup, ct_task_t *t, const ct_task_opts_t *o) {
  ct__deadline_t *d = deadline_of(t);
  d->more.arg_free = o->arg_free;
  d->more.timeout = ct__deadline_bounded(o->timeout) ? o->timeout : 0;
  d->arm.run = arm_on_loop;
  d->disarm.run = disarm_on_loop;
  ev_timer_init(&d->timer, deadline_passed, 0., 0.);
  d->timer.data = d;
  d->sup = sup;
}

void ct__deadline_start(ct__task_owner_t *owner, ct_task_t *t) {
  (void)owner;
  ct__deadline_t *d = deadline_of(t);
  d->task = ct_task_ref(t);
  if (ct__loop_post_embedded(&d->sup->loop, &d->arm) != 0) {
    /* Cannot happen while the task runs (see the top); said, not hidden. */
    ct__sup_log(d->sup, CT_LOG_ERROR, "ctasker: task %llu runs without its timeout: loop ended",
                (unsigned long long)t->id);
    d->task = NULL;
    ct_task_unref(t);
  }
}

void ct__deadline_end(ct__task_owner_t *owner, ct_task_t *t, bool late) {
  (void)owner;
  ct__deadline_t *d = deadline_of(t);
  if (late) {
    atomic_fetch_sub(&d->sup->overrun, 1);
    atomic_fetch_add(&d->sup->late_returns, 1);
  }
  if (d->task && ct__loop_post_embedded(&d->sup->loop, &d->disarm) != 0) {
    d->task = NULL; /* the loop has ended: its timers with it */
    ct_task_unref(t);
  }
}
