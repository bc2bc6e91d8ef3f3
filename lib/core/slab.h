/* Fixed-size records from a slab (see slab.c): one ct__slab_t per record
 * size, process-wide, in static storage; bounded per-thread caches in
 * front of it, so allocating and freeing a record costs no lock and no
 * atomic operation in the common case. */
#ifndef CT_LIB_SLAB_H
#define CT_LIB_SLAB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* How many slabs may exist (each has a slot in every thread's cache). */
#define CT__SLAB_CLASSES 8

struct ct__slab_page;

/* Guards: D: the slab's lock.  A: atomic, any thread.  I: constant. */
typedef struct ct__slab {
  size_t size;      /* I: record size, a multiple of 8 (the records'
                       alignment), at least 16, at most 4096 */
  unsigned index;   /* I: < CT__SLAB_CLASSES, distinct per slab */
  _Alignas(64) _Atomic(void *) returned; /* A: chains of freed records */
  _Alignas(64) pthread_mutex_t lock;
  struct ct__slab_page *partial; /* D: pages with free and used records */
  struct ct__slab_page *empty;   /* D: spare pages, every record free, newest first */
  struct ct__slab_page *oldest_empty; /* D: the last of them */
  size_t empty_pages;            /* D */
  atomic_size_t bytes;           /* A (written under D): pages mapped */
} ct__slab_t;

#define CT__SLAB_INIT(record_size, slot)                                                 \
  {.size = ((record_size) + 7) & ~(size_t)7, .index = (slot), .returned = NULL,           \
   .lock = PTHREAD_MUTEX_INITIALIZER}

/* A record of s->size bytes (contents undefined), or NULL if out of memory.
 * Any thread. */
void *ct__slab_alloc(ct__slab_t *s);

/* Give back a record from any slab. Any thread. */
void ct__slab_free(void *record);

/* Seconds a page whose records are all free stays mapped as a spare
 * (beyond the few that always stay) before an idle pass unmaps it. */
#define CT__SLAB_DECAY 0.25

/* The calling thread goes idle: give its cached records back and let the
 * slabs unmap pages whose records have all been free for CT__SLAB_DECAY
 * seconds (beyond a few spares). Returns true if more such pages are left,
 * younger: call again once they are old enough, to give them back too. */
bool ct__slab_idle(void);

/* Bytes of pages a slab holds mapped now (records in use or free). */
size_t ct__slab_bytes(ct__slab_t *s);

#endif
