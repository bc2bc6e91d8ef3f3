/* Parts attached to a supervisor from the layers above it (each worker is
 * one): the supervisor stops them when it stops, reports their statistics
 * and refuses to be freed while any is attached, all through the hooks of
 * ct__sup_part_ops_t, without knowing what a part is.
 *
 * The list is guarded by parts_lock, a leaf: a part's own lock may be held
 * when it is taken, and no hook is called while it is held (each hook call
 * is made on a part held through its hold hook, the lock released), but
 * has_signal, which only reads an atomic.
 *
 * Signals: a part marks itself and calls ct__sup_signal(), which only kicks
 * the loop (atomics and a write(2): safe in a signal handler); on the loop
 * thread the kick's handler collects the marked parts and calls on_signal
 * on each. Kicks that come before the handler runs merge into one round.
 */
#include <stdlib.h>

#include "supervisor/supervisor-internal.h"

int ct__sup_parts_init(ct_supervisor_t *sup) {
  ct__list_init(&sup->parts);
  sup->parts_closed = false;
  return pthread_mutex_init(&sup->parts_lock, NULL) == 0 ? 0 : CT_ENOMEM;
}

void ct__sup_parts_destroy(ct_supervisor_t *sup) { pthread_mutex_destroy(&sup->parts_lock); }

void ct__sup_attach(ct_supervisor_t *sup, ct__sup_part_t *part, const ct__sup_part_ops_t *ops) {
  part->ops = ops;
  part->stopped = false;
  pthread_mutex_lock(&sup->parts_lock);
  ct__list_push_front(&sup->parts, &part->node);
  pthread_mutex_unlock(&sup->parts_lock);
}

void ct__sup_detach(ct_supervisor_t *sup, ct__sup_part_t *part) {
  pthread_mutex_lock(&sup->parts_lock);
  ct__list_remove(&part->node);
  pthread_mutex_unlock(&sup->parts_lock);
}

bool ct__sup_parts_lock_open(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->parts_lock);
  return !sup->parts_closed && atomic_load(&sup->state) == CT__SUP_RUNNING;
}

void ct__sup_parts_unlock(ct_supervisor_t *sup) { pthread_mutex_unlock(&sup->parts_lock); }

/* The next part this stop has not handled yet, held, or NULL. One at a
 * time (no snapshot to allocate), so running out of memory cannot leave a
 * part running. */
static ct__sup_part_t *next_to_stop(ct_supervisor_t *sup) {
  ct__list_t *node;
  ct__sup_part_t *found = NULL;
  pthread_mutex_lock(&sup->parts_lock);
  sup->parts_closed = true;
  ct__list_foreach(node, &sup->parts) {
    ct__sup_part_t *part = ct__list_entry(node, ct__sup_part_t, node);
    if (!part->stopped) {
      found = part;
      break;
    }
  }
  if (found) {
    found->stopped = true;
    found->ops->hold(found);
  }
  pthread_mutex_unlock(&sup->parts_lock);
  return found;
}

void ct__sup_parts_stop_all(ct_supervisor_t *sup) {
  ct__sup_part_t *part;
  while ((part = next_to_stop(sup)) != NULL) {
    part->ops->stop(part);
    part->ops->release(part);
  }
}

void ct__sup_signal(ct_supervisor_t *sup) { ct__loop_kick(&sup->loop, &sup->part_signal); }

/* The signaled parts, each held, linked through signal_next; no hook but
 * has_signal is called under the lock. */
static ct__sup_part_t *take_signaled(ct_supervisor_t *sup) {
  ct__list_t *node;
  ct__sup_part_t *todo = NULL;
  pthread_mutex_lock(&sup->parts_lock);
  ct__list_foreach(node, &sup->parts) {
    ct__sup_part_t *part = ct__list_entry(node, ct__sup_part_t, node);
    if (part->ops->has_signal && part->ops->has_signal(part)) {
      part->ops->hold(part);
      part->signal_next = todo;
      todo = part;
    }
  }
  pthread_mutex_unlock(&sup->parts_lock);
  return todo;
}

void ct__sup_parts_signaled(ct__loop_t *loop, ct__loop_kick_t *kick) {
  (void)loop;
  ct__sup_part_t *part = take_signaled(kick->data);
  while (part) {
    ct__sup_part_t *next = part->signal_next;
    part->ops->on_signal(part);
    part->ops->release(part);
    part = next;
  }
}

bool ct__sup_parts_attached(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->parts_lock);
  bool any = !ct__list_empty(&sup->parts);
  pthread_mutex_unlock(&sup->parts_lock);
  return any;
}

/* Every part, each held (*n of them), or NULL: none (*n 0) or out of
 * memory (*n the count). */
static ct__sup_part_t **snapshot(ct_supervisor_t *sup, size_t *n) {
  ct__list_t *node;
  size_t count = 0, i = 0;
  pthread_mutex_lock(&sup->parts_lock);
  ct__list_foreach(node, &sup->parts) {
    count++;
  }
  ct__sup_part_t **all = count ? malloc(count * sizeof *all) : NULL;
  *n = count;
  if (all)
    ct__list_foreach(node, &sup->parts) {
      ct__sup_part_t *part = ct__list_entry(node, ct__sup_part_t, node);
      part->ops->hold(part);
      all[i++] = part;
    }
  pthread_mutex_unlock(&sup->parts_lock);
  return all;
}

json_t *ct__sup_parts_json(ct_supervisor_t *sup) {
  size_t n;
  ct__sup_part_t **all = snapshot(sup, &n);
  if (!all && n > 0)
    return NULL;
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++) {
    if (list && json_array_append_new(list, all[i]->ops->stats_json(all[i])) != 0) {
      json_decref(list); /* out of memory: no partial answer */
      list = NULL;
    }
    all[i]->ops->release(all[i]);
  }
  free(all);
  return list;
}
