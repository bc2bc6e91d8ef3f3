/* The timeout watchdog: a repeating ev_timer on the supervisor's loop.
 *
 * Each tick walks the running tasks and, level by level, the queued tasks
 * oldest first, stopping in a level at the first task younger than the
 * lowest threshold. A task past a threshold it has not been reported for
 * is flagged and collected under the pool lock; the reports are made after
 * the lock is released. The tick is a quarter of the lowest threshold.
 */
#include <stdlib.h>

#include "base/clock.h"
#include "supervisor/supervisor-internal.h"

typedef struct {
  ct_task_t *task; /* a reference */
  int level;
  bool started;
} ct__overdue_t;

typedef struct {
  double now, warning, critical, lowest;
  ct__overdue_t *items;
  size_t len, cap;
} ct__scan_t;

static void collect(ct__scan_t *scan, ct_task_t *t, int level, bool started) {
  if (scan->len == scan->cap) {
    size_t cap = scan->cap ? scan->cap * 2 : 16;
    ct__overdue_t *items = realloc(scan->items, cap * sizeof *items);
    if (!items)
      return; /* reported on a later tick */
    scan->items = items;
    scan->cap = cap;
  }
  unsigned flag = level == CT_TIMEOUT_CRITICAL ? CT__F_CRITICAL : CT__F_WARNED;
  atomic_fetch_or(&t->flags, flag);
  scan->items[scan->len++] = (ct__overdue_t){ct_task_ref(t), level, started};
}

/* The lower of the two thresholds that are set, or 0 if neither is. */
static double lowest_threshold(const ct_supervisor_t *sup) {
  double warning = sup->opts.timeout_warning, critical = sup->opts.timeout_critical;
  return warning > 0 && (critical == 0 || warning < critical) ? warning : critical;
}

static bool check_task(ct_task_t *t, bool started, void *data) {
  ct__scan_t *scan = data;
  struct ct__task_extra *x = ct__task_x(t);
  if (!x || atomic_load(&t->status) == CT_TASK_CANCELED)
    return true;
  double age = scan->now - (started ? x->t_started : x->t_queued);
  if (age < scan->lowest)
    return false; /* every later task of this level is younger */
  if (scan->warning > 0 && age >= scan->warning && !ct__task_has(t, CT__F_WARNED))
    collect(scan, t, CT_TIMEOUT_WARNING, started);
  if (scan->critical > 0 && age >= scan->critical && !ct__task_has(t, CT__F_CRITICAL))
    collect(scan, t, CT_TIMEOUT_CRITICAL, started);
  return true;
}

static void report(ct_supervisor_t *sup, const ct__overdue_t *o) {
  if (sup->opts.on_timeout) {
    sup->opts.on_timeout(sup, o->task, o->level, o->started, sup->opts.timeout_data);
    return;
  }
  ct__sup_log(sup, o->level == CT_TIMEOUT_CRITICAL ? CT_LOG_ERROR : CT_LOG_WARNING,
              "ctasker: task %llu (%s) %s longer than the %s timeout",
              (unsigned long long)o->task->id, ct_task_name(o->task),
              o->started ? "has run" : "has waited",
              o->level == CT_TIMEOUT_CRITICAL ? "critical" : "warning");
}

static void tick(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev;
  (void)revents;
  ct_supervisor_t *sup = w->data;
  ct__scan_t scan = {.now = ct__now(),
                     .warning = sup->opts.timeout_warning,
                     .critical = sup->opts.timeout_critical,
                     .lowest = lowest_threshold(sup)};
  ct__pool_each_task(&sup->pool, check_task, &scan);
  for (size_t i = 0; i < scan.len; i++) {
    report(sup, &scan.items[i]);
    ct_task_unref(scan.items[i].task);
  }
  free(scan.items);
}

void ct__watchdog_start(ct_supervisor_t *sup) {
  double lowest = lowest_threshold(sup);
  if (lowest <= 0)
    return;
  double period = lowest / 4;
  period = period < 0.005 ? 0.005 : period > 1.0 ? 1.0 : period;
  ev_timer_init(&sup->watchdog, tick, period, period);
  sup->watchdog.data = sup;
  ev_timer_start(sup->loop.ev, &sup->watchdog);
}

void ct__watchdog_stop(ct_supervisor_t *sup) { ev_timer_stop(sup->loop.ev, &sup->watchdog); }
