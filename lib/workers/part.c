/* A worker as a part of its supervisor (supervisor/parts.c): attached at
 * creation, detached when its owner frees it, so that the supervisor stops
 * it when it stops, reports its statistics, passes on its triggers from
 * signal handlers (signal.c) and is not freed under it, all through these
 * hooks.
 */
#include "workers/worker-internal.h"

static ct_worker_t *worker_of(ct__sup_part_t *part) {
  return (ct_worker_t *)((char *)part - offsetof(ct_worker_t, part));
}

static void part_stop(ct__sup_part_t *part) { ct_worker_stop(worker_of(part), CT_WORKER_DROP, 0); }
static json_t *part_stats_json(ct__sup_part_t *part) {
  return ct_worker_stats_json(worker_of(part));
}
static void part_hold(ct__sup_part_t *part) { ct__worker_ref(worker_of(part)); }
static void part_release(ct__sup_part_t *part) { ct__worker_unref(worker_of(part)); }
static bool part_has_signal(ct__sup_part_t *part) {
  return ct__worker_has_signal(worker_of(part));
}
static void part_on_signal(ct__sup_part_t *part) { ct__worker_on_signal(worker_of(part)); }

static const ct__sup_part_ops_t worker_part_ops = {
    .stop = part_stop,
    .stats_json = part_stats_json,
    .hold = part_hold,
    .release = part_release,
    .has_signal = part_has_signal,
    .on_signal = part_on_signal,
};

void ct__worker_attach(ct_worker_t *w) { ct__sup_attach(w->sup, &w->part, &worker_part_ops); }

void ct__worker_detach(ct_worker_t *w) { ct__sup_detach(w->sup, &w->part); }
