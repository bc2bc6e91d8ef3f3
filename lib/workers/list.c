/* The supervisor's workers: a doubly linked list under sup->workers_lock
 * (a leaf lock), used to stop them all when the supervisor stops, to report
 * their statistics and to refuse freeing a supervisor that still has any.
 */
#include <stdlib.h>

#include "workers/worker-internal.h"

int ct__workers_init(ct_supervisor_t *sup) {
  sup->workers = NULL;
  sup->workers_closed = false;
  return pthread_mutex_init(&sup->workers_lock, NULL) == 0 ? 0 : CT_ENOMEM;
}

void ct__workers_destroy(ct_supervisor_t *sup) { pthread_mutex_destroy(&sup->workers_lock); }

void ct__workers_link(ct_supervisor_t *sup, ct_worker_t *w) {
  pthread_mutex_lock(&sup->workers_lock);
  w->prev = NULL;
  w->next = sup->workers;
  if (sup->workers)
    sup->workers->prev = w;
  sup->workers = w;
  pthread_mutex_unlock(&sup->workers_lock);
}

void ct__workers_unlink(ct_supervisor_t *sup, ct_worker_t *w) {
  pthread_mutex_lock(&sup->workers_lock);
  if (w->prev)
    w->prev->next = w->next;
  else
    sup->workers = w->next;
  if (w->next)
    w->next->prev = w->prev;
  pthread_mutex_unlock(&sup->workers_lock);
}

/* References to every worker (*n of them), or NULL: none (*n 0) or out of
 * memory (*n the count). */
static ct_worker_t **snapshot(ct_supervisor_t *sup, size_t *n) {
  pthread_mutex_lock(&sup->workers_lock);
  size_t count = 0;
  for (ct_worker_t *w = sup->workers; w; w = w->next)
    count++;
  ct_worker_t **all = count ? malloc(count * sizeof *all) : NULL;
  *n = count;
  size_t i = 0;
  for (ct_worker_t *w = sup->workers; all && w; w = w->next) {
    ct__worker_ref(w);
    all[i++] = w;
  }
  pthread_mutex_unlock(&sup->workers_lock);
  return all;
}

/* The next worker this stop has not handled yet, referenced, or NULL. One
 * at a time (no snapshot to allocate), so running out of memory cannot
 * leave a worker running. */
static ct_worker_t *next_to_stop(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->workers_lock);
  sup->workers_closed = true;
  ct_worker_t *w = sup->workers;
  while (w && w->stopped_by_supervisor)
    w = w->next;
  if (w) {
    w->stopped_by_supervisor = true;
    ct__worker_ref(w);
  }
  pthread_mutex_unlock(&sup->workers_lock);
  return w;
}

void ct__workers_stop_all(ct_supervisor_t *sup) {
  ct_worker_t *w;
  while ((w = next_to_stop(sup)) != NULL) {
    ct_worker_stop(w, CT_WORKER_DROP, 0);
    ct__worker_unref(w);
  }
}

bool ct__workers_exist(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->workers_lock);
  bool any = sup->workers != NULL;
  pthread_mutex_unlock(&sup->workers_lock);
  return any;
}

json_t *ct__workers_json(ct_supervisor_t *sup) {
  size_t n;
  ct_worker_t **all = snapshot(sup, &n);
  if (!all && n > 0)
    return NULL;
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++) {
    if (list && json_array_append_new(list, ct_worker_stats_json(all[i])) != 0) {
      json_decref(list); /* out of memory: no partial answer */
      list = NULL;
    }
    ct__worker_unref(all[i]);
  }
  free(all);
  return list;
}
