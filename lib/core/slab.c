/* The slab: fixed-size records for the hot path (task records).
 *
 * Records live in 64 KiB pages, aligned to their size, so a record finds
 * its page (and the page its slab) by masking its address. Pages come
 * from mmap and go back with munmap, so memory returns to the system after
 * a burst, which free() of small chunks does not promise.
 *
 * Each thread keeps, per slab, at most two batches of CT__SLAB_BATCH free
 * records: `head`, which it allocates from and frees to, and `spare`, one
 * complete batch. Allocating and freeing touch only these, without a lock
 * or an atomic operation. A thread that frees more than it allocates (a
 * pool thread freeing what submitters allocated) hands a full batch back
 * to the slab as one chain, with one compare-and-swap onto `returned`; a
 * thread that allocates more than it frees takes a batch under the slab's
 * lock, sorting the returned chains into their pages first. So the lock
 * and the atomic are paid once per batch, not once per record.
 *
 * A page whose records are all free becomes a spare, stamped with the
 * time. Chains are sorted into pages when a thread takes a batch and when
 * a thread goes idle (ct__slab_idle(): the pool threads call it before they
 * sleep). An idle pass unmaps the spares beyond CT__SLAB_SPARE_PAGES that
 * have been spare for CT__SLAB_DECAY seconds, and says whether younger ones
 * are left, so that the idle thread passes again once they are old
 * enough: after a burst the memory comes back once the pool has been idle
 * that long, while bursts that follow each other sooner reuse the pages
 * the last one faulted in instead of mapping and faulting them afresh
 * (unmapping at the first idle pass cost every burst after a pause of a
 * few milliseconds its page faults again: about 60 per 10^4 tasks,
 * measured). Spares are taken newest first, so the ones a steady load does
 * not need grow old, and a thread that takes a batch unmaps old ones too
 * (a pool that never goes idle). A thread's cache goes back to the slab
 * when the thread exits (a thread-specific key's destructor).
 *
 * Locks: each slab's lock is a leaf; nothing is called under it but mmap,
 * munmap and the clock.
 */
#include "core/slab.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>

#include "base/clock.h"

#define CT__SLAB_PAGE ((size_t)64 << 10)
#define CT__SLAB_BATCH 64u
#define CT__SLAB_SPARE_PAGES 4u
#define CT__SLAB_HEADER 64u

/* A page's header, at its start. D: its slab's lock. */
typedef struct ct__slab_page {
  ct__slab_t *slab;                 /* I */
  struct ct__slab_page *prev, *next; /* D: in slab->partial or slab->empty */
  void *free;                       /* D: free records not in any cache */
  unsigned nfree, capacity;         /* D, I */
  double spare_since;               /* D: when it became a spare (PAGE_EMPTY) */
  enum { PAGE_FULL, PAGE_PARTIAL, PAGE_EMPTY } where; /* D: which list */
} page_t;

_Static_assert(sizeof(page_t) <= CT__SLAB_HEADER, "page header too large");

/* A free record: the next one in its list or chain; a chain's first record
 * also links the next chain on slab->returned. */
typedef struct record {
  struct record *next;
  struct record *next_chain;
} record_t;

typedef struct cache {
  record_t *head, *spare;
  unsigned n; /* records in head; spare holds CT__SLAB_BATCH or none */
  ct__slab_t *slab;
} cache_t;

/* The calling thread's caches. initial-exec: reached at a fixed offset
 * from the thread pointer, without the __tls_get_addr call a shared
 * library otherwise makes at each use (three per allocation, measured);
 * it takes a few hundred bytes of the static TLS that glibc keeps for
 * such libraries, also when the library is loaded with dlopen(). */
static _Thread_local __attribute__((tls_model("initial-exec"))) struct {
  cache_t caches[CT__SLAB_CLASSES];
  bool keyed; /* cache_key's value is set: the caches go back at exit */
} mine;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static page_t *page_of(const void *record) {
  return (page_t *)((uintptr_t)record & ~(uintptr_t)(CT__SLAB_PAGE - 1));
}

static void list_remove(page_t **list, page_t *p) {
  if (p->prev)
    p->prev->next = p->next;
  else
    *list = p->next;
  if (p->next)
    p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

static void list_push(page_t **list, page_t *p) {
  p->prev = NULL;
  p->next = *list;
  if (*list)
    (*list)->prev = p;
  *list = p;
}

/* A page aligned to its size: map twice as much and cut the rest off. */
static page_t *map_page(ct__slab_t *s) {
  size_t len = 2 * CT__SLAB_PAGE;
  char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return NULL;
  char *start = (char *)(((uintptr_t)raw + CT__SLAB_PAGE - 1) & ~(uintptr_t)(CT__SLAB_PAGE - 1));
  if (start > raw)
    munmap(raw, (size_t)(start - raw));
  if (start + CT__SLAB_PAGE < raw + len)
    munmap(start + CT__SLAB_PAGE, (size_t)(raw + len - start - CT__SLAB_PAGE));
  page_t *p = (page_t *)start;
  p->slab = s;
  p->prev = p->next = NULL;
  p->capacity = (unsigned)((CT__SLAB_PAGE - CT__SLAB_HEADER) / s->size);
  p->nfree = p->capacity;
  p->free = NULL;
  for (unsigned i = p->capacity; i-- > 0;) {
    record_t *r = (record_t *)(start + CT__SLAB_HEADER + i * s->size);
    r->next = p->free;
    p->free = r;
  }
  p->where = PAGE_EMPTY;
  atomic_store_explicit(&s->bytes, atomic_load_explicit(&s->bytes, memory_order_relaxed) +
                                       CT__SLAB_PAGE, memory_order_relaxed);
  return p;
}

static void unmap_page(ct__slab_t *s, page_t *p) {
  atomic_store_explicit(&s->bytes, atomic_load_explicit(&s->bytes, memory_order_relaxed) -
                                       CT__SLAB_PAGE, memory_order_relaxed);
  munmap(p, CT__SLAB_PAGE);
}

/* A page that just had every record given back: a spare, the newest.
 * Lock held. */
static void page_emptied(ct__slab_t *s, page_t *p) {
  list_remove(&s->partial, p);
  p->where = PAGE_EMPTY;
  p->spare_since = ct__now();
  if (!s->empty)
    s->oldest_empty = p;
  list_push(&s->empty, p);
  s->empty_pages++;
}

/* Take a spare off the list. Lock held. */
static void spare_remove(ct__slab_t *s, page_t *p) {
  if (s->oldest_empty == p)
    s->oldest_empty = p->prev;
  list_remove(&s->empty, p);
  s->empty_pages--;
}

/* Unmap the oldest spares, beyond CT__SLAB_SPARE_PAGES, that have been
 * spares for CT__SLAB_DECAY seconds; returns whether spares beyond that
 * number are left. Lock held. */
static bool trim_spares(ct__slab_t *s) {
  if (s->empty_pages <= CT__SLAB_SPARE_PAGES)
    return false;
  double before = ct__now() - CT__SLAB_DECAY;
  while (s->empty_pages > CT__SLAB_SPARE_PAGES && s->oldest_empty->spare_since < before) {
    page_t *p = s->oldest_empty;
    spare_remove(s, p);
    unmap_page(s, p);
  }
  return s->empty_pages > CT__SLAB_SPARE_PAGES;
}

/* Give one free record back to its page. Lock held. */
static void page_put(ct__slab_t *s, record_t *r) {
  page_t *p = page_of(r);
  r->next = p->free;
  p->free = r;
  if (p->where == PAGE_FULL) {
    p->where = PAGE_PARTIAL;
    list_push(&s->partial, p);
  }
  if (++p->nfree == p->capacity)
    page_emptied(s, p);
}

/* Sort every returned chain into its pages. Lock held. */
static void take_returned(ct__slab_t *s) {
  if (!atomic_load_explicit(&s->returned, memory_order_relaxed))
    return;
  record_t *chain = atomic_exchange_explicit(&s->returned, NULL, memory_order_acquire);
  while (chain) {
    record_t *next_chain = chain->next_chain;
    for (record_t *r = chain, *next; r; r = next) {
      next = r->next;
      page_put(s, r);
    }
    chain = next_chain;
  }
}

/* Up to CT__SLAB_BATCH free records from one page, as a list; *n counts
 * them. Prefers pages in use, so that spares stay whole. Lock held. */
static record_t *take_batch(ct__slab_t *s, unsigned *n) {
  page_t *p = s->partial;
  if (!p && (p = s->empty) != NULL) {
    spare_remove(s, p);
  } else if (!p && (p = map_page(s)) == NULL) {
    return NULL;
  }
  if (p->where == PAGE_EMPTY) {
    p->where = PAGE_PARTIAL;
    list_push(&s->partial, p);
  }
  record_t *list = p->free, *last = list;
  unsigned k = 1;
  while (k < CT__SLAB_BATCH && last->next) {
    last = last->next;
    k++;
  }
  p->free = last->next;
  last->next = NULL;
  p->nfree -= k;
  if (p->nfree == 0) {
    list_remove(&s->partial, p);
    p->where = PAGE_FULL;
  }
  *n = k;
  return list;
}

/* Hand a list of records back as one chain: one compare-and-swap. */
static void give_chain(ct__slab_t *s, record_t *chain) {
  record_t *top = atomic_load_explicit(&s->returned, memory_order_relaxed);
  do
    chain->next_chain = top;
  while (!atomic_compare_exchange_weak_explicit(&s->returned, (void **)&top, chain,
                                                memory_order_release, memory_order_relaxed));
}

static void flush_cache(cache_t *c) {
  if (c->head)
    give_chain(c->slab, c->head);
  if (c->spare)
    give_chain(c->slab, c->spare);
  c->head = c->spare = NULL;
  c->n = 0;
}

/* At thread exit. A record freed by a later destructor keys the cache
 * again, and the key's destructor then runs once more. */
static void cache_destructor(void *arg) {
  cache_t *all = arg;
  for (int i = 0; i < CT__SLAB_CLASSES; i++)
    flush_cache(&all[i]);
  mine.keyed = false;
}

static void cache_key_create(void) { pthread_key_create(&cache_key, cache_destructor); }

/* The calling thread's cache for slab s, its records handed back when the
 * thread exits. */
static cache_t *cache_for(ct__slab_t *s) {
  cache_t *c = &mine.caches[s->index];
  if (!mine.keyed) {
    pthread_once(&cache_key_once, cache_key_create);
    pthread_setspecific(cache_key, mine.caches);
    mine.keyed = true;
  }
  c->slab = s;
  return c;
}

void *ct__slab_alloc(ct__slab_t *s) {
  cache_t *c = cache_for(s);
  if (!c->head && c->spare) {
    c->head = c->spare;
    c->spare = NULL;
    c->n = CT__SLAB_BATCH;
  }
  if (!c->head) {
    pthread_mutex_lock(&s->lock);
    take_returned(s);
    trim_spares(s); /* a pool that never idles gives back what it no longer needs */
    c->head = take_batch(s, &c->n);
    pthread_mutex_unlock(&s->lock);
    if (!c->head)
      return NULL;
  }
  record_t *r = c->head;
  c->head = r->next;
  c->n--;
  return r;
}

void ct__slab_free(void *record) {
  if (!record)
    return;
  ct__slab_t *s = page_of(record)->slab;
  cache_t *c = cache_for(s);
  if (c->n == CT__SLAB_BATCH) {
    if (c->spare)
      give_chain(s, c->spare);
    c->spare = c->head;
    c->head = NULL;
    c->n = 0;
  }
  record_t *r = record;
  r->next = c->head;
  c->head = r;
  c->n++;
}

bool ct__slab_idle(void) {
  bool again = false;
  for (int i = 0; i < CT__SLAB_CLASSES; i++) {
    cache_t *c = &mine.caches[i];
    if (!c->slab)
      continue;
    flush_cache(c);
    pthread_mutex_lock(&c->slab->lock);
    take_returned(c->slab);
    again |= trim_spares(c->slab);
    pthread_mutex_unlock(&c->slab->lock);
  }
  return again;
}

size_t ct__slab_bytes(ct__slab_t *s) {
  return atomic_load_explicit(&s->bytes, memory_order_relaxed);
}
