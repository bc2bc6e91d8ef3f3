/* Whether a stop is done, and what a long stop still waits for.
 *
 * Every part of the supervisor that a stop waits for pokes the loop through
 * the `stop_check` kick when it may have finished (the pool's last thread,
 * an extra loop's end, a thread of a part's own, a submission or a cancel
 * that ends during the stop, the last delay timer). On the loop thread, the
 * first poke cancels every delayed task and the watchdog; every poke then
 * looks at the seven conditions (stop_waits_for()) and ends the loop when
 * none is left.
 *
 * A stop may rightly wait long (a DRAIN waits for a running task), so the
 * loop also reports what it still waits for: after CT__STOP_REPORT_FIRST s,
 * then at twice the interval each time, up to CT__STOP_REPORT_MAX, as a
 * warning through the user's log. A report that finds nothing left to wait
 * for means a poke was missed: it says so as an error and ends the stop.
 */
#include <stdarg.h>
#include <stdio.h>

#include "process/procpool.h"
#include "supervisor/supervisor-internal.h"

#define CT__STOP_REPORT_FIRST 10.0
#define CT__STOP_REPORT_MAX 600.0

/* Whether no submission is between its state check and its hand-over.
 * Each shard is read after the state became STOPPING: a submission counted
 * on a shard after it was read sees that state and kicks the loop again. */
static bool no_submission_in_flight(ct_supervisor_t *sup) {
  for (int i = 0; i < CT__SUBMIT_SHARDS; i++)
    if ((atomic_load(&sup->submitting[i].count) & (CT__SUBMIT_BEGUN_ONE - 1)) != 0)
      return false;
  return true;
}

typedef struct {
  char *buf; /* NULL: only count */
  size_t size, len;
  int n;
} waits_t;

static void waits_add(waits_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One more thing the stop waits for; its description if a buffer is given. */
static void waits_add(waits_t *w, const char *fmt, ...) {
  if (w->buf && w->len < w->size) {
    w->len += (size_t)snprintf(w->buf + w->len, w->size - w->len, "%s", w->n ? "; " : "");
    if (w->len < w->size) {
      va_list ap;
      va_start(ap, fmt);
      w->len += (size_t)vsnprintf(w->buf + w->len, w->size - w->len, fmt, ap);
      va_end(ap);
    }
  }
  w->n++;
}

static size_t count_delays(ct_supervisor_t *sup) {
  size_t n = 0;
  for (ct__list_t *l = sup->delays.next; l != &sup->delays; l = l->next)
    n++;
  return n;
}

/* Loop thread: how many of the stop's conditions are unmet; with w->buf,
 * also what each is. */
static int stop_waits_for(ct_supervisor_t *sup, waits_t *w) {
  if (!ct__list_empty(&sup->delays))
    waits_add(w, "%zu delay timers", count_delays(sup));
  if (!no_submission_in_flight(sup))
    waits_add(w, "a submission half-way");
  if (!ct__pool_drained(&sup->pool)) {
    ct__pool_counts_t c;
    ct__pool_counts(&sup->pool, &c);
    waits_add(w, "the thread pool (%llu queued, %llu running, %llu threads)",
              (unsigned long long)c.queued, (unsigned long long)c.running,
              (unsigned long long)c.threads);
  }
  ct__procpool_t *procpool = atomic_load(&sup->procpool);
  if (!ct__procpool_stopped(procpool)) {
    char what[256] = "";
    if (w->buf)
      ct__procpool_describe(procpool, what, sizeof what);
    waits_add(w, "the process pool (%s)", what);
  }
  /* After the pools and the delays: a cancel is counted before it claims
   * its task from one of them, so one not counted yet had not claimed a
   * task they still held when they were looked at. */
  if (atomic_load(&sup->cancels_in_flight) != 0)
    waits_add(w, "canceled tasks being finished");
  if (!ct__loops_ended(sup))
    waits_add(w, "extra loops still running");
  int own = atomic_load(&sup->own_threads);
  if (own != 0)
    waits_add(w, "%d threads of its workers", own);
  return w->n;
}

/* Loop thread: the report timer. */
static void report(struct ev_loop *ev, ev_timer *timer, int revents) {
  (void)revents;
  ct_supervisor_t *sup = timer->data;
  sup->stop_waited += sup->stop_report_after;
  char buf[512];
  waits_t w = {.buf = buf, .size = sizeof buf};
  if (stop_waits_for(sup, &w) == 0) {
    ct__sup_log(sup, CT_LOG_ERROR, "ctasker: the stop had nothing left to wait for, yet had "
                "not ended (a missed wake-up): ending it now");
    ct__loop_quit(&sup->loop);
    return;
  }
  ct__sup_log(sup, CT_LOG_WARNING, "ctasker: the stop has waited %.0f s for: %s",
              sup->stop_waited, buf);
  sup->stop_report_after = sup->stop_report_after * 2 < CT__STOP_REPORT_MAX
                               ? sup->stop_report_after * 2
                               : CT__STOP_REPORT_MAX;
  ev_timer_set(timer, sup->stop_report_after, 0);
  ev_timer_start(ev, timer);
}

/* Loop thread: the stop_check kick. */
static void check_stopped(ct__loop_t *loop, ct__loop_kick_t *kick) {
  ct_supervisor_t *sup = kick->data;
  if (atomic_load(&sup->state) != CT__SUP_STOPPING)
    return;
  if (!sup->stop_seen) {
    sup->stop_seen = true;
    ct__watchdog_stop(sup);
    ct__delay_cancel_all(sup);
    sup->stop_report_after = CT__STOP_REPORT_FIRST;
    ev_timer_set(&sup->stop_report, sup->stop_report_after, 0);
    ev_timer_start(loop->ev, &sup->stop_report);
  }
  waits_t count_only = {0};
  if (stop_waits_for(sup, &count_only) == 0)
    ct__loop_quit(&sup->loop);
}

void ct__stop_check_init(ct_supervisor_t *sup) {
  ct__loop_add_kick(&sup->loop, &sup->stop_check, check_stopped, sup);
  ev_init(&sup->stop_report, report);
  sup->stop_report.data = sup;
}

void ct__stop_check_end(ct_supervisor_t *sup) {
  ev_timer_stop(sup->loop.ev, &sup->stop_report);
}
