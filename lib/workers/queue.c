/* Queue workers: one run per item.
 *
 * Pending items sit in a binary min-heap keyed by (priority, sequence); a
 * FIFO queue keys every item at 0, so the sequence alone orders it (the item
 * keeps its priority for the run). All of it is guarded by the worker's
 * lock. Items leave the heap exactly once: taken by a run, or popped by
 * hand_back() while the worker is dropping, one at a time, and given to
 * on_drop without the lock.
 * A process worker's items are json_t references, checked to encode at put
 * time; an item taken for a run that could not be submitted goes back to
 * its place (untake), so it is handed back rather than lost.
 */
#include <stdlib.h>

#include "workers/worker-internal.h"

#define CT__QUEUE_BATCH 32

typedef struct {
  void *item;
  int priority; /* as it was put (the run is told it) */
  int rank;     /* the heap's key: the priority, or 0 in a FIFO queue */
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
  uint64_t taken_seq; /* the sequence of the item the last run took */
} ct__queue_worker_t;

static ct__queue_worker_t *as_queue(ct_worker_t *w) { return (ct__queue_worker_t *)w; }

static bool before(const ct__qitem_t *a, const ct__qitem_t *b) {
  return a->rank != b->rank ? a->rank < b->rank : a->seq < b->seq;
}

static ct__qitem_t item_of(const ct__queue_worker_t *q, void *item, int priority, uint64_t seq) {
  return (ct__qitem_t){item, priority, q->by_priority ? priority : 0, seq};
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

static bool bad_put(ct_worker_t *w, int priority) {
  return !w || w->kind != CT_WORKER_QUEUE || priority < CT_PRIORITY_CRITICAL ||
         priority > CT_PRIORITY_MAX;
}

static int put_item(ct_worker_t *w, void *item, int priority) {
  ct__queue_worker_t *q = as_queue(w);
  pthread_mutex_lock(&w->lock);
  int rc = atomic_load(&w->state) != CT_WORKER_RUNNING ? CT_ESHUTDOWN
           : q->max && q->len >= q->max                ? CT_ENOBUFS
                                                       : 0;
  if (rc == 0)
    rc = heap_push(q, item_of(q, item, priority, q->seq++));
  if (rc == 0)
    ct__worker_kick(w); /* on failure the item is handed back below */
  pthread_mutex_unlock(&w->lock);
  ct__worker_hand_back_and_report(w);
  return rc;
}

int ct_queue_worker_put(ct_worker_t *w, void *item, int priority) {
  if (bad_put(w, priority) || w->process)
    return CT_EINVAL;
  return put_item(w, item, priority);
}

static bool encodable(const json_t *item) {
  char *text = json_dumps(item, JSON_ENCODE_ANY | JSON_COMPACT);
  free(text);
  return text != NULL;
}

int ct_queue_worker_put_json(ct_worker_t *w, json_t *item, int priority) {
  if (bad_put(w, priority) || !w->process || !item)
    return CT_EINVAL;
  if (!encodable(item))
    return CT_EINVAL;
  return put_item(w, item, priority);
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
  as_queue(w)->taken_seq = it.seq;
}

/* The heap lost an element since take(), so pushing cannot allocate. */
static void queue_untake(ct_worker_t *w, ct_worker_run_t *run) {
  ct__queue_worker_t *q = as_queue(w);
  (void)heap_push(q, item_of(q, run->item, run->item_priority, q->taken_seq));
  run->item = NULL;
}

static size_t queue_pending(ct_worker_t *w) { return as_queue(w)->len; }

/* Lock not held: give a dropped item to on_drop; without one, a process
 * worker's JSON item is released (a plain item is the caller's affair). */
static void drop_item(ct_worker_t *w, void *item) {
  ct__queue_worker_t *q = as_queue(w);
  if (q->on_drop)
    q->on_drop(w, item, q->drop_data);
  else if (w->process)
    json_decref(item);
}

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
    drop_item(w, it.item);
  }
}

static void queue_destroy(ct_worker_t *w) {
  ct__queue_worker_t *q = as_queue(w);
  while (q->len > 0) {
    ct__qitem_t it = heap_pop(q);
    drop_item(w, it.item);
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
    .untake = queue_untake,
    .hand_back = queue_hand_back,
    .pending = queue_pending,
    .destroy = queue_destroy,
};
