/* Event workers: a run when asked. The common `wanted` flag is the whole
 * state: ct_event_worker_trigger() sets it (while a run executes only when
 * forced), a starting run clears it, so triggers before the start merge. */
#include "workers/worker-internal.h"

static bool event_has_work(ct_worker_t *w) { return w->wanted; }

static void event_take(ct_worker_t *w, ct_worker_run_t *run) {
  (void)run;
  w->wanted = false;
}

const ct__worker_ops_t ct__event_ops = {
    .kind_name = "event",
    .size = sizeof(struct ct_worker),
    .batch = 1,
    .has_work = event_has_work,
    .take = event_take,
};
