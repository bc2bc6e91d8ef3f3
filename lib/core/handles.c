/* The handle table (see handles.h).
 *
 * Slots live in chunks of 4096 that are allocated as the table grows and
 * freed only with the table, so a slot found by index is always memory
 * that may be read, whatever happened to its task. Each slot has one word,
 * its generation and a lock bit; an id is CT__HANDLE_ID_MARK | generation
 * (30 bits) << 32 | index + 1. Removing a task bumps the generation, so
 * every id of the slot's earlier tasks stops matching at once; a
 * generation repeats only after 2^30 tasks in the same slot.
 *
 * Lookup and removal lock only their slot, by setting its lock bit with a
 * compare-and-swap on the word they expect, and hold it for a few
 * instructions (taking or dropping a reference), so they meet only when
 * they are about the same slot. Insertion needs no lock: it fills a free
 * slot, whose generation no id names yet. A task is found only once it is
 * published, a bit beside it in its slot: a compare-and-swap there, on a
 * line the submitting thread wrote moments before, and not on the task,
 * whose lines its executor may hold by then.
 *
 * Free slots form lock-free stacks whose tops carry a tag against ABA.
 * There are CT__HANDLE_SHARDS shards: a thread takes slots from its own
 * shard's (threads are given shards in turn), and a removal gives a slot
 * back to the shard it was taken from, so that the threads that submit
 * tracked tasks do not meet: each meets only the threads that finish its
 * own tasks. Each shard has two stacks, each on its own line: `top`,
 * which its threads take slots from, one compare-and-swap each, and
 * `returned`, which removals push onto, one compare-and-swap each; when
 * `top` is empty, a taker moves the whole of `returned` onto it at once.
 * So the line that submitters take from is not also the line that the
 * finishing threads give back to, which it was, at every task (the
 * table's share of the tracked path's time fell from about 14 % to 8 %,
 * measured). A thread whose shard
 * has no free slot takes one from the others' before the table grows.
 * Only growing takes a lock (grow_lock, a leaf), once per new slot.
 */
#include "core/handles.h"

#include <limits.h>
#include <stdlib.h>

#include "base/cpu.h"

#define CHUNK_SLOTS (1u << CT__HANDLE_CHUNK_BITS)
#define GEN_MASK ((UINT64_C(1) << 30) - 1)

/* In a slot's task word, beside the task's address (8-byte aligned): its
 * submission has handed it over, so lookups may find it. */
#define PUBLISHED ((uintptr_t)1)

typedef struct ct__handle_slot {
  atomic_uint_fast64_t word; /* generation << 1 | locked */
  atomic_uintptr_t task;     /* the task | PUBLISHED, or 0; emptied with the lock bit set */
  atomic_uint next_free;     /* on a free stack: index + 1 of the next, 0: none */
  atomic_uchar shard;        /* the free stack it was taken from */
} slot_t;

static atomic_uint next_shard;
/* initial-exec: no __tls_get_addr call per use (see slab.c) */
static _Thread_local __attribute__((tls_model("initial-exec"))) unsigned my_shard = UINT_MAX;

/* The calling thread's shard, given at its first call. */
static unsigned shard_of_thread(void) {
  if (my_shard == UINT_MAX)
    my_shard = atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) %
               CT__HANDLE_SHARDS;
  return my_shard;
}

static ct_task_t *task_of(uintptr_t word) { return (ct_task_t *)(word & ~PUBLISHED); }

int ct__handles_init(ct__handles_t *h) {
  for (int i = 0; i < CT__HANDLE_SHARDS; i++) {
    atomic_init(&h->free[i].top, 0);
    atomic_init(&h->free[i].returned, 0);
  }
  atomic_init(&h->used, 0);
  for (int i = 0; i < CT__HANDLE_CHUNKS; i++)
    atomic_init(&h->chunks[i], NULL);
  return pthread_mutex_init(&h->grow_lock, NULL) == 0 ? 0 : CT_ENOMEM;
}

/* A slot below `used` (its chunk was published before `used` grew). */
static slot_t *slot_at(ct__handles_t *h, uint32_t index) {
  slot_t *chunk = atomic_load_explicit(&h->chunks[index >> CT__HANDLE_CHUNK_BITS],
                                       memory_order_acquire);
  return &chunk[index & (CHUNK_SLOTS - 1)];
}

void ct__handles_destroy(ct__handles_t *h) {
  uint32_t used = atomic_load(&h->used);
  for (uint32_t i = 0; i < used; i++)
    ct_task_unref(task_of(atomic_load_explicit(&slot_at(h, i)->task, memory_order_relaxed)));
  for (int i = 0; i < CT__HANDLE_CHUNKS; i++)
    free(atomic_load_explicit(&h->chunks[i], memory_order_relaxed));
  pthread_mutex_destroy(&h->grow_lock);
}

/* A stack's word after a change: the next tag, and `index1` on top. */
static uint_fast64_t retagged(uint_fast64_t top, uint32_t index1) {
  return (((top >> 32) + 1) << 32) | index1;
}

/* Take the top slot of a stack. */
static bool pop_stack(ct__handles_t *h, atomic_uint_fast64_t *stack, uint32_t *index) {
  uint_fast64_t top = atomic_load_explicit(stack, memory_order_acquire);
  for (;;) {
    uint32_t first = (uint32_t)top;
    if (first == 0)
      return false;
    /* The slot may be taken and given back meanwhile: then the tag has
     * changed and the compare-and-swap fails. */
    uint32_t next = atomic_load_explicit(&slot_at(h, first - 1)->next_free, memory_order_relaxed);
    if (atomic_compare_exchange_weak_explicit(stack, &top, retagged(top, next),
                                              memory_order_acquire, memory_order_acquire)) {
      *index = first - 1;
      return true;
    }
  }
}

/* Push the chain first..last (linked by next_free) onto a stack. */
static void push_chain(ct__handles_t *h, atomic_uint_fast64_t *stack, uint32_t first,
                       uint32_t last) {
  slot_t *tail = slot_at(h, last - 1);
  uint_fast64_t top = atomic_load_explicit(stack, memory_order_relaxed);
  do
    atomic_store_explicit(&tail->next_free, (uint32_t)top, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(stack, &top, retagged(top, first),
                                                memory_order_release, memory_order_relaxed));
}

/* Take the whole returned stack of a shard: keep its first slot, put the
 * rest on the (empty) free stack, or, if another thread of the shard
 * filled that meanwhile, back where it came from. */
static bool take_given_back(ct__handles_t *h, unsigned shard, uint32_t *index) {
  atomic_uint_fast64_t *returned = &h->free[shard].returned, *top_of = &h->free[shard].top;
  uint_fast64_t r = atomic_load_explicit(returned, memory_order_acquire);
  do
    if ((uint32_t)r == 0)
      return false;
  while (!atomic_compare_exchange_weak_explicit(returned, &r, retagged(r, 0),
                                                memory_order_acquire, memory_order_acquire));
  *index = (uint32_t)r - 1;
  uint32_t rest = atomic_load_explicit(&slot_at(h, *index)->next_free, memory_order_relaxed);
  if (rest == 0)
    return true;
  uint_fast64_t top = atomic_load_explicit(top_of, memory_order_relaxed);
  if ((uint32_t)top == 0 &&
      atomic_compare_exchange_strong_explicit(top_of, &top, retagged(top, rest),
                                              memory_order_release, memory_order_relaxed))
    return true;
  uint32_t last = rest, next;
  while ((next = atomic_load_explicit(&slot_at(h, last - 1)->next_free,
                                      memory_order_relaxed)) != 0)
    last = next;
  push_chain(h, returned, rest, last);
  return true;
}

static bool pop_shard(ct__handles_t *h, unsigned shard, uint32_t *index) {
  return pop_stack(h, &h->free[shard].top, index) || take_given_back(h, shard, index);
}

/* A free slot, from the calling thread's stack or else another's; its
 * removal gives it back to the caller's. */
static bool pop_free(ct__handles_t *h, uint32_t *index) {
  unsigned mine = shard_of_thread();
  for (unsigned i = 0; i < CT__HANDLE_SHARDS; i++)
    if (pop_shard(h, (mine + i) % CT__HANDLE_SHARDS, index)) {
      atomic_store_explicit(&slot_at(h, *index)->shard, (unsigned char)mine,
                            memory_order_relaxed);
      return true;
    }
  return false;
}

static void push_free(ct__handles_t *h, uint32_t index) {
  unsigned shard = atomic_load_explicit(&slot_at(h, index)->shard, memory_order_relaxed);
  push_chain(h, &h->free[shard].returned, index + 1, index + 1);
}

/* A new slot at the end of the table. Returns 0 or CT_ENOMEM. */
static int grow(ct__handles_t *h, uint32_t *index) {
  int rc = 0;
  pthread_mutex_lock(&h->grow_lock);
  uint32_t n = atomic_load_explicit(&h->used, memory_order_relaxed);
  uint32_t c = n >> CT__HANDLE_CHUNK_BITS;
  if (c >= CT__HANDLE_CHUNKS) {
    rc = CT_ENOMEM;
  } else if (!atomic_load_explicit(&h->chunks[c], memory_order_relaxed)) {
    slot_t *chunk = calloc(CHUNK_SLOTS, sizeof *chunk); /* generation 0, unlocked, empty */
    if (chunk)
      atomic_store_explicit(&h->chunks[c], chunk, memory_order_release);
    else
      rc = CT_ENOMEM;
  }
  if (rc == 0) {
    atomic_store_explicit(&slot_at(h, n)->shard, (unsigned char)shard_of_thread(),
                          memory_order_relaxed);
    atomic_store_explicit(&h->used, n + 1, memory_order_release);
    *index = n;
  }
  pthread_mutex_unlock(&h->grow_lock);
  return rc;
}

/* Set the slot's lock bit if its generation is `gen`; returns the locked
 * word (lock bit clear), or UINT64_MAX if the generation is another. */
static uint_fast64_t lock_slot(slot_t *s, uint64_t gen) {
  uint_fast64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
  for (;;) {
    if (((w >> 1) & GEN_MASK) != gen)
      return UINT64_MAX;
    if (w & 1) {
      ct__cpu_relax();
      w = atomic_load_explicit(&s->word, memory_order_relaxed);
    } else if (atomic_compare_exchange_weak_explicit(&s->word, &w, w | 1, memory_order_acquire,
                                                     memory_order_relaxed)) {
      return w;
    }
  }
}

static void unlock_slot(slot_t *s, uint_fast64_t word) {
  atomic_store_explicit(&s->word, word, memory_order_release);
}

int ct__handles_add(ct__handles_t *h, ct_task_t *t) {
  uint32_t index;
  if (!pop_free(h, &index) && grow(h, &index) != 0)
    return CT_ENOMEM;
  slot_t *s = slot_at(h, index);
  uint64_t gen = (atomic_load_explicit(&s->word, memory_order_relaxed) >> 1) & GEN_MASK;
  t->id = CT__HANDLE_ID_MARK | gen << 32 | (index + 1);
  /* Nobody else reaches t yet: its reference is counted with a plain
   * store. The slot is not locked: a free slot's generation is named by no
   * id the table gave, so only a lookup of a made-up id can meet this
   * store, and it reads an empty slot or t not yet published: nothing
   * (release: with t's count). */
  atomic_store_explicit(&t->refs, atomic_load_explicit(&t->refs, memory_order_relaxed) + 1,
                        memory_order_relaxed);
  atomic_store_explicit(&s->task, (uintptr_t)t, memory_order_release);
  return 0;
}

/* The slot an id names, or NULL if it names none; *gen its generation. */
static slot_t *slot_of(ct__handles_t *h, uint64_t id, uint64_t *gen) {
  uint32_t index1 = (uint32_t)id;
  if (!(id & CT__HANDLE_ID_MARK) || index1 == 0 ||
      index1 > atomic_load_explicit(&h->used, memory_order_acquire))
    return NULL;
  *gen = (id >> 32) & GEN_MASK;
  return slot_at(h, index1 - 1);
}

void ct__handles_publish(ct__handles_t *h, ct_task_t *t) {
  uint64_t gen;
  slot_t *s = slot_of(h, t->id, &gen);
  uintptr_t expected = (uintptr_t)t;
  /* Fails if t has left its slot: t is alive (the caller holds it), so no
   * other task there has its address. The slot's line is mostly still
   * the submitting thread's, unlike t's own once its executor has it. */
  if (s)
    atomic_compare_exchange_strong_explicit(&s->task, &expected, (uintptr_t)t | PUBLISHED,
                                            memory_order_release, memory_order_relaxed);
}

void ct__handles_remove(ct__handles_t *h, ct_task_t *t) {
  uint64_t gen;
  slot_t *s = slot_of(h, t->id, &gen);
  uint_fast64_t w = s ? lock_slot(s, gen) : UINT64_MAX;
  if (w == UINT64_MAX)
    return;
  if (task_of(atomic_load_explicit(&s->task, memory_order_relaxed)) != t) {
    unlock_slot(s, w);
    return;
  }
  atomic_store_explicit(&s->task, 0, memory_order_relaxed);
  unlock_slot(s, w + 2); /* the next generation: every id of this one is stale */
  push_free(h, (uint32_t)t->id - 1);
  ct_task_unref(t);
}

ct_task_t *ct__handles_get(ct__handles_t *h, uint64_t id) {
  uint64_t gen;
  slot_t *s = slot_of(h, id, &gen);
  uint_fast64_t w = s ? lock_slot(s, gen) : UINT64_MAX;
  if (w == UINT64_MAX)
    return NULL;
  uintptr_t word = atomic_load_explicit(&s->task, memory_order_acquire);
  ct_task_t *t = word & PUBLISHED ? ct_task_ref(task_of(word)) : NULL;
  unlock_slot(s, w);
  return t;
}

size_t ct__handles_size(ct__handles_t *h) {
  size_t n = 0;
  uint32_t used = atomic_load_explicit(&h->used, memory_order_acquire);
  for (uint32_t i = 0; i < used; i++)
    n += atomic_load_explicit(&slot_at(h, i)->task, memory_order_relaxed) != 0;
  return n;
}
