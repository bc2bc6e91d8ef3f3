/* Background workers: run back to back while RUNNING. On a pool thread one
 * task makes every run (the worker holds that thread); on a loop each run
 * is its own message, so the loop keeps serving its other events. */
#include <stdint.h>

#include "workers/worker-internal.h"

static bool background_has_work(ct_worker_t *w) {
  return atomic_load(&w->state) == CT_WORKER_RUNNING;
}

static void background_take(ct_worker_t *w, ct_worker_run_t *run) {
  (void)w;
  (void)run;
}

const ct__worker_ops_t ct__background_ops = {
    .kind_name = "background",
    .size = sizeof(struct ct_worker),
    .batch = SIZE_MAX,
    .has_work = background_has_work,
    .take = background_take,
};
