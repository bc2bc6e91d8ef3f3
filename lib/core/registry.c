/* The task registry (see registry.h). */
#include "core/registry.h"

#include <stdlib.h>

typedef ct__registry_shard_t shard_t;

static size_t slot_of(uint64_t id, size_t cap) {
  return (size_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> 17) & (cap - 1);
}

/* Consecutive ids go to different shards. */
static shard_t *shard_of(ct__registry_t *reg, uint64_t id) {
  return &reg->shards[id % CT__REGISTRY_SHARDS];
}

int ct__registry_init(ct__registry_t *reg) {
  for (int i = 0; i < CT__REGISTRY_SHARDS; i++) {
    shard_t *r = &reg->shards[i];
    r->slots = NULL;
    r->cap = r->len = 0;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
      while (i-- > 0)
        pthread_mutex_destroy(&reg->shards[i].lock);
      return CT_ENOMEM;
    }
  }
  return 0;
}

void ct__registry_destroy(ct__registry_t *reg) {
  for (int s = 0; s < CT__REGISTRY_SHARDS; s++) {
    shard_t *r = &reg->shards[s];
    for (size_t i = 0; i < r->cap; i++)
      ct_task_unref(r->slots[i]);
    free(r->slots);
    pthread_mutex_destroy(&r->lock);
  }
}

static void place(ct_task_t **slots, size_t cap, ct_task_t *t) {
  size_t i = slot_of(t->id, cap);
  while (slots[i])
    i = (i + 1) & (cap - 1);
  slots[i] = t;
}

/* Keep the load factor at or under 1/2. Lock held. */
static int grow_if_needed(shard_t *r) {
  if ((r->len + 1) * 2 <= r->cap)
    return 0;
  size_t cap = r->cap ? r->cap * 2 : 64;
  ct_task_t **slots = calloc(cap, sizeof *slots);
  if (!slots)
    return CT_ENOMEM;
  for (size_t i = 0; i < r->cap; i++)
    if (r->slots[i])
      place(slots, cap, r->slots[i]);
  free(r->slots);
  r->slots = slots;
  r->cap = cap;
  return 0;
}

int ct__registry_add(ct__registry_t *reg, ct_task_t *t) {
  shard_t *r = shard_of(reg, t->id);
  pthread_mutex_lock(&r->lock);
  int rc = grow_if_needed(r);
  if (rc == 0) {
    place(r->slots, r->cap, ct_task_ref(t));
    r->len++;
  }
  pthread_mutex_unlock(&r->lock);
  return rc;
}

/* Index of the task with `id`, or cap if absent. Lock held. */
static size_t find(const shard_t *r, uint64_t id) {
  if (r->cap == 0)
    return 0;
  for (size_t i = slot_of(id, r->cap); r->slots[i]; i = (i + 1) & (r->cap - 1))
    if (r->slots[i]->id == id)
      return i;
  return r->cap;
}

void ct__registry_remove(ct__registry_t *reg, ct_task_t *t) {
  shard_t *r = shard_of(reg, t->id);
  pthread_mutex_lock(&r->lock);
  size_t hole = find(r, t->id);
  if (hole >= r->cap || r->slots[hole] != t) {
    pthread_mutex_unlock(&r->lock);
    return;
  }
  r->slots[hole] = NULL;
  r->len--;
  /* Backward shift: move later entries of the probe run into the hole when
   * the hole lies between their home slot and where they are. */
  size_t mask = r->cap - 1;
  for (size_t i = (hole + 1) & mask; r->slots[i]; i = (i + 1) & mask) {
    size_t home = slot_of(r->slots[i]->id, r->cap);
    if (((i - home) & mask) >= ((i - hole) & mask)) {
      r->slots[hole] = r->slots[i];
      r->slots[i] = NULL;
      hole = i;
    }
  }
  pthread_mutex_unlock(&r->lock);
  ct_task_unref(t);
}

ct_task_t *ct__registry_get(ct__registry_t *reg, uint64_t id) {
  shard_t *r = shard_of(reg, id);
  pthread_mutex_lock(&r->lock);
  size_t i = find(r, id);
  ct_task_t *t = i < r->cap ? ct_task_ref(r->slots[i]) : NULL;
  pthread_mutex_unlock(&r->lock);
  return t;
}

size_t ct__registry_size(ct__registry_t *reg) {
  size_t n = 0;
  for (int i = 0; i < CT__REGISTRY_SHARDS; i++) {
    shard_t *r = &reg->shards[i];
    pthread_mutex_lock(&r->lock);
    n += r->len;
    pthread_mutex_unlock(&r->lock);
  }
  return n;
}
