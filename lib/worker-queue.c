/* Queue workers: one run per item.
 *
 * Pending items sit in a binary min-heap keyed by (priority, sequence); a
 * FIFO queue puts every item at priority 0, so the sequence alone orders
 * it. All of it is guarded by the worker's lock. Items leave the heap
 * exactly once: taken by a run, or popped by hand_back() while the worker
 * is dropping, one at a time, and given to on_drop without the lock.
 */
#include <stdlib.h>

#include "worker-internal.h"

#define CT__QUEUE_BATCH 32

typedef struct {
  void *item;
  int priority;
  uint64_t seq;
} ct__qitem_t;

typedef struct {
  struct ct_worker base;
  bool by_priority;
  size_t max;
  ct_worker_drop_fn on_drop;
  void *drop_data;
  ct__qitem_t *heap;
  size_t len, cap;
  uint64_t seq;
} ct__queue_worker_t;

static ct__queue_worker_t *as_queue(ct_worker_t *w) { return (ct__queue_worker_t *)w; }

static bool before(const ct__qitem_t *a, const ct__qitem_t *b) {
  return a->priority != b->priority ? a->priority < b->priority : a->seq < b->seq;
}

static void swap(ct__qitem_t *a, ct__qitem_t *b) {
  ct__qitem_t t = *a;
  *a = *b;
  *b = t;
}

static int heap_push(ct__queue_worker_t *q, ct__qitem_t it) {
  if (q->len == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 16;
    ct__qitem_t *heap = realloc(q->heap, cap * sizeof *heap);
    if (!heap)
      return CT_ENOMEM;
    q->heap = heap;
    q->cap = cap;
  }
  size_t i = q->len++;
  q->heap[i] = it;
  while (i > 0 && before(&q->heap[i], &q->heap[(i - 1) / 2])) {
    swap(&q->heap[i], &q->heap[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  return 0;
}

static ct__qitem_t heap_pop(ct__queue_worker_t *q) {
  ct__qitem_t top = q->heap[0];
  q->heap[0] = q->heap[--q->len];
  for (size_t i = 0;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < q->len && before(&q->heap[l], &q->heap[m]))
      m = l;
    if (r < q->len && before(&q->heap[r], &q->heap[m]))
      m = r;
    if (m == i)
      break;
    swap(&q->heap[i], &q->heap[m]);
    i = m;
  }
  return top;
}

int ct_queue_worker_put(ct_worker_t *w, void *item, int priority) {
  if (!w || w->kind != CT_WORKER_QUEUE || priority < CT_PRIORITY_CRITICAL ||
      priority > CT_PRIORITY_MAX)
    return CT_EINVAL;
  ct__queue_worker_t *q = as_queue(w);
  pthread_mutex_lock(&w->lock);
  int rc = atomic_load(&w->state) != CT_WORKER_RUNNING ? CT_ESHUTDOWN
           : q->max && q->len >= q->max                ? CT_ENOBUFS
                                                       : 0;
  if (rc == 0)
    rc = heap_push(q, (ct__qitem_t){item, q->by_priority ? priority : 0, q->seq++});
  if (rc == 0)
    ct__worker_kick(w); /* on failure the item is handed back below */
  pthread_mutex_unlock(&w->lock);
  ct__worker_leave(w);
  return rc;
}

static int queue_setup(ct_worker_t *w, const ct_worker_opts_t *o) {
  ct__queue_worker_t *q = as_queue(w);
  q->by_priority = o->priority_queue;
  q->max = o->max_queue;
  q->on_drop = o->on_drop;
  q->drop_data = o->drop_data;
  return 0;
}

static bool queue_has_work(ct_worker_t *w) { return as_queue(w)->len > 0; }

static void queue_take(ct_worker_t *w, ct_worker_run_t *run) {
  ct__qitem_t it = heap_pop(as_queue(w));
  run->item = it.item;
  run->item_priority = it.priority;
}

static size_t queue_pending(ct_worker_t *w) { return as_queue(w)->len; }

static void queue_hand_back(ct_worker_t *w) {
  ct__queue_worker_t *q = as_queue(w);
  for (;;) {
    pthread_mutex_lock(&w->lock);
    bool go = w->dropping && atomic_load(&w->state) != CT_WORKER_RUNNING && q->len > 0;
    ct__qitem_t it = {0};
    if (go) {
      it = heap_pop(q);
      w->dropped++;
    }
    pthread_mutex_unlock(&w->lock);
    if (!go)
      return;
    if (q->on_drop)
      q->on_drop(w, it.item, q->drop_data);
  }
}

static void queue_destroy(ct_worker_t *w) {
  ct__queue_worker_t *q = as_queue(w);
  while (q->len > 0) {
    ct__qitem_t it = heap_pop(q);
    if (q->on_drop)
      q->on_drop(w, it.item, q->drop_data);
  }
  free(q->heap);
}

const ct__worker_ops_t ct__queue_ops = {
    .kind_name = "queue",
    .size = sizeof(ct__queue_worker_t),
    .batch = CT__QUEUE_BATCH,
    .setup = queue_setup,
    .has_work = queue_has_work,
    .take = queue_take,
    .hand_back = queue_hand_back,
    .pending = queue_pending,
    .destroy = queue_destroy,
};
