/* Interval workers: runs on a timer that lives on the supervisor's loop.
 *
 * The timer is a timerfd armed at an absolute CLOCK_MONOTONIC deadline and
 * watched by an ev_io: libev's own timers go through epoll_wait, whose
 * timeout is rounded to whole milliseconds, while a timerfd expires within
 * the kernel's hrtimer precision. A start makes the timerfd, on the
 * starting thread, so that a start that cannot have its timer fails (the
 * stop before it has closed the last one); from then on only the loop
 * thread touches the timerfd, the ev_io, `armed` and `k` (loop messages
 * reach it from other threads).
 *
 * Timing, per start, with t0 = start time + delay_before:
 *   interval  the grid t0 + k*interval; after a run ends the timer is set
 *             to the next grid point; if that has passed (an overrun) the
 *             next run is due at once and k jumps to the last passed point,
 *             so runs never overlap and the grid never drifts;
 *   delay     the end of a run + delay + delay_before.
 * A firing sets `ticked`, a trigger the common `wanted` flag; either kicks
 * the worker, and a run serves both. Stopping forgets a tick, not a trigger:
 * a trigger accepted before a CT_WORKER_DRAIN stop still gets its run (at
 * once, without waiting for a due time). Stopping also posts `disarm`,
 * which closes the timer at once and lets the stop finish (idle() is false
 * until then).
 *
 * Precision: between a deadline and the run stand the timer's wake-up of
 * the loop thread and the loop's wake-up of a pool thread; on a busy
 * machine each can wait for a core. So the timer fires LEAD seconds early
 * and the run task, once on its pool thread, waits for the exact deadline
 * itself (await_due: a timed wait on the worker's condition variable, on
 * CLOCK_MONOTONIC, with the thread's timer slack made minimal): one thread
 * wake-up stands between the deadline and the run. A stop broadcasts the
 * condition (worker.c, leaving RUNNING), so a run waiting for its time is
 * skipped at once. The pool
 * thread is held for at most LEAD before each run. Runs on an event loop
 * (opts.loop) get no lead: the loop thread must not wait; nor do runs in
 * the process pool, which has no thread to wait in (they started up to LEAD
 * before their time).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "base/clock.h"
#include "workers/worker-internal.h"

#define LEAD 0.002 /* seconds a run task is queued before its deadline */

typedef struct {
  struct ct_worker base;
  /* Under the worker's lock. */
  double interval, delay, delay_before;    /* as created */
  double cur_interval, cur_delay, cur_before; /* this start's */
  double t0, due, last_end;
  bool ticked;     /* the timer asked for a run, due at `due` */
  bool asked;      /* the run taken last serves a trigger */
  bool timer_live; /* from start until the loop has closed the timer */
  /* A stop's message to close the timer: kept here, so that no shortage
   * of memory leaves a stopped worker's timer on the loop. One at a time:
   * a start needs the timer closed, and a stop follows a start. */
  ct__worker_msg_t disarm_msg;
  /* Made by a start (the timer not live), then loop thread only. */
  int fd;
  ev_io io;
  bool armed;
  double armed_at;
  uint64_t k;
} ct__interval_worker_t;

static ct__interval_worker_t *as_interval(ct_worker_t *w) { return (ct__interval_worker_t *)w; }

/* Each time finite and >= 0, exactly one of interval and delay > 0; bad
 * fields are refused through c. Returns 0 or CT_EINVAL. */
static int check_timing(ct__opts_check_t *c, double interval, double delay, double before) {
  ct__opts_seconds(c, "interval", interval, CT__SEC_DELAY);
  ct__opts_seconds(c, "delay", delay, CT__SEC_DELAY);
  ct__opts_seconds(c, "delay_before", before, CT__SEC_DELAY);
  if (c->rc == 0 && (interval > 0) == (delay > 0))
    ct__opts_bad(c, "interval", "%g with delay %g: exactly one of interval and delay must be > 0",
                 interval, delay);
  return c->rc;
}

static int interval_setup(ct_worker_t *w, const ct_worker_opts_t *o) {
  ct__interval_worker_t *iw = as_interval(w);
  ct__opts_check_t c = ct__sup_opts_check(w->sup, "ct_worker_opts_t", "ct_worker_new");
  iw->fd = -1;
  if (check_timing(&c, o->interval, o->delay, o->delay_before) != 0)
    return CT_EINVAL;
  iw->interval = o->interval;
  iw->delay = o->delay;
  iw->delay_before = o->delay_before;
  return 0;
}

static int interval_configure(ct_worker_t *w, const ct_worker_start_opts_t *o) {
  ct__interval_worker_t *iw = as_interval(w);
  ct__opts_check_t c = ct__sup_opts_check(w->sup, "ct_worker_start_opts_t", "ct_worker_start");
  /* The seconds are finite or < 0 (keep): read_start_options() checked them. */
  double interval = iw->interval, delay = iw->delay;
  double before = o->delay_before >= 0 ? o->delay_before : iw->delay_before;
  if (o->interval >= 0 || o->delay >= 0) { /* the start's timing replaces both */
    interval = o->interval > 0 ? o->interval : 0;
    delay = o->delay > 0 ? o->delay : 0;
  }
  if (check_timing(&c, interval, delay, before) != 0)
    return CT_EINVAL;
  iw->cur_interval = interval;
  iw->cur_delay = delay;
  iw->cur_before = before;
  return 0;
}

/* Loop thread: set the timerfd to fire for a run due at `when` (ct_now()
 * base), LEAD early for runs on pool threads. */
static void arm_at(ct__interval_worker_t *iw, double when) {
  bool waits_for_due = !iw->base.loop && !iw->base.process;
  struct itimerspec its = {{0, 0}, ct__timespec_at(when - (waits_for_due ? LEAD : 0))};
  if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
    its.it_value.tv_nsec = 1; /* all zero would disarm */
  timerfd_settime(iw->fd, TFD_TIMER_ABSTIME, &its, NULL);
  iw->armed = true;
  iw->armed_at = when;
}

/* Lock held: a run is due now (scheduled for `due`). */
static void make_due(ct_worker_t *w, double due) {
  as_interval(w)->due = due;
  as_interval(w)->ticked = true;
  ct__worker_kick(w);
}

static void on_fire(struct ev_loop *ev, ev_io *io, int revents) {
  (void)ev;
  (void)revents;
  ct_worker_t *w = io->data;
  ct__interval_worker_t *iw = as_interval(w);
  uint64_t expirations;
  if (read(iw->fd, &expirations, sizeof expirations) != sizeof expirations)
    return; /* spurious: not expired yet */
  iw->armed = false;
  pthread_mutex_lock(&w->lock);
  if (atomic_load(&w->state) == CT_WORKER_RUNNING)
    make_due(w, iw->armed_at);
  pthread_mutex_unlock(&w->lock);
  ct__worker_hand_back_and_report(w); /* a run that could not be queued stops the worker */
}

/* Loop message: watch the start's timerfd and set its first deadline. */
static void arm_first(ct_worker_t *w) {
  ct__interval_worker_t *iw = as_interval(w);
  ev_io_init(&iw->io, on_fire, iw->fd, EV_READ);
  iw->io.data = w;
  ev_io_start(w->sup->loop.ev, &iw->io);
  pthread_mutex_lock(&w->lock);
  if (atomic_load(&w->state) == CT_WORKER_RUNNING) {
    iw->k = 0;
    double first = iw->t0;
    pthread_mutex_unlock(&w->lock);
    arm_at(iw, first);
    return;
  }
  pthread_mutex_unlock(&w->lock);
}

/* Loop message: a run ended; set the next deadline. */
static void rearm(ct_worker_t *w) {
  ct__interval_worker_t *iw = as_interval(w);
  if (iw->armed || iw->fd < 0)
    return; /* a triggered run ended while the timer waits */
  pthread_mutex_lock(&w->lock);
  if (atomic_load(&w->state) != CT_WORKER_RUNNING) {
    pthread_mutex_unlock(&w->lock);
    return;
  }
  double next;
  if (iw->cur_interval > 0) {
    iw->k++;
    next = iw->t0 + (double)iw->k * iw->cur_interval;
    double now = ct__now();
    if (next <= now) {
      iw->k = (uint64_t)floor((now - iw->t0) / iw->cur_interval);
      make_due(w, iw->t0 + (double)iw->k * iw->cur_interval);
      pthread_mutex_unlock(&w->lock);
      ct__worker_hand_back_and_report(w);
      return;
    }
  } else {
    next = iw->last_end + iw->cur_delay + iw->cur_before;
  }
  pthread_mutex_unlock(&w->lock);
  arm_at(iw, next);
}

/* Loop message: close the timer; the stop may now finish. */
static void disarm(ct_worker_t *w) {
  ct__interval_worker_t *iw = as_interval(w);
  if (iw->fd >= 0) {
    ev_io_stop(w->sup->loop.ev, &iw->io);
    close(iw->fd);
    iw->fd = -1;
  }
  iw->armed = false;
  pthread_mutex_lock(&w->lock);
  iw->timer_live = false;
  ct__worker_end_stop_if_idle(w);
  pthread_mutex_unlock(&w->lock);
  ct__worker_hand_back_and_report(w);
}

/* Lock held, the timer not live: make this start's timerfd. Returns 0 or
 * the error start returns (the failure is logged). */
static int make_timer(ct_worker_t *w) {
  ct__interval_worker_t *iw = as_interval(w);
  if (iw->fd >= 0)
    return 0; /* a loop that ended before its disarm left it open */
  iw->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (iw->fd >= 0)
    return 0;
  int err = errno;
  ct__sup_log(w->sup, CT_LOG_ERROR, "ctasker: worker %s: no timer: %s", w->name, strerror(err));
  return err == EMFILE || err == ENFILE ? CT_EMFILE : err == ENOMEM ? CT_ENOMEM : CT_EAGAIN;
}

static int interval_start(ct_worker_t *w) {
  ct__interval_worker_t *iw = as_interval(w);
  int rc = make_timer(w);
  if (rc != 0)
    return rc;
  iw->t0 = ct__now() + iw->cur_before;
  iw->timer_live = true;
  rc = ct__worker_post(w, arm_first);
  if (rc != 0) { /* the loop has ended: nothing will watch the timer */
    iw->timer_live = false;
    close(iw->fd);
    iw->fd = -1;
  }
  return rc;
}

static void interval_stop(ct_worker_t *w) {
  ct__interval_worker_t *iw = as_interval(w);
  iw->ticked = false; /* the timer's runs end with the stop */
  if (ct__worker_post_kept(w, &iw->disarm_msg, disarm) != 0)
    iw->timer_live = false; /* the loop has ended: nothing is armed */
}

static bool interval_has_work(ct_worker_t *w) { return w->wanted || as_interval(w)->ticked; }

static void interval_take(ct_worker_t *w, ct_worker_run_t *run) {
  ct__interval_worker_t *iw = as_interval(w);
  run->scheduled = iw->ticked ? iw->due : 0;
  iw->asked = w->wanted;
  iw->ticked = false;
  w->wanted = false;
}

/* This thread's timed waits end as close to their deadline as the kernel
 * can (the default slack lets them end up to 50 us late). */
static void tighten_timer_slack(void) {
  static _Thread_local bool done;
  if (!done)
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  done = true;
}

static bool interval_await_due(ct_worker_t *w, ct_worker_run_t *run) {
  if (run->scheduled <= 0 || w->loop)
    return true; /* a manual trigger, or an executor loop: no lead */
  tighten_timer_slack();
  struct timespec deadline = ct__timespec_at(run->scheduled);
  while (atomic_load(&w->state) == CT_WORKER_RUNNING && ct__now() < run->scheduled)
    if (pthread_cond_timedwait(&w->cond, &w->lock, &deadline) == ETIMEDOUT)
      break;
  bool asked = as_interval(w)->asked || w->wanted; /* triggers while it
                                                      waited merge into it */
  w->wanted = false;
  int s = atomic_load(&w->state);
  return s == CT_WORKER_RUNNING || (asked && s == CT_WORKER_STOPPING && !w->dropping);
}

static void interval_after_run(ct_worker_t *w, double ended) {
  as_interval(w)->last_end = ended;
  if (atomic_load(&w->state) != CT_WORKER_RUNNING)
    return;
  int rc = ct__worker_post(w, rearm);
  if (rc == CT_ENOMEM) /* else posted, or the loop has ended: the supervisor stops */
    ct__worker_fail_stop_for(w, rc, "set its next run");
}

static bool interval_idle(ct_worker_t *w) { return !as_interval(w)->timer_live; }

static void interval_destroy(ct_worker_t *w) {
  ct__interval_worker_t *iw = as_interval(w);
  if (iw->fd >= 0)
    close(iw->fd); /* only if the loop ended before a disarm */
}

const ct__worker_ops_t ct__interval_ops = {
    .kind_name = "interval",
    .size = sizeof(ct__interval_worker_t),
    .batch = 1,
    .setup = interval_setup,
    .configure = interval_configure,
    .start = interval_start,
    .has_work = interval_has_work,
    .take = interval_take,
    .await_due = interval_await_due,
    .after_run = interval_after_run,
    .stop = interval_stop,
    .idle = interval_idle,
    .destroy = interval_destroy,
};
