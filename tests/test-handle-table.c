/* The handle table under several threads, linked with the core layer only:
 * slots freed by one thread serve the others, insertion takes no lock, and
 * threads that share shards never hold one slot at once (core/handles.c). */
#include <pthread.h>

#include "check.h"
#include "handles.h"

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

enum { MANY = 5000 }; /* more than one chunk of slots */

/* Fill the table with MANY tasks, then empty it; tasks[] keep one
 * reference each. */
static void add_and_remove_many(ct__handles_t *h, ct_task_t **tasks) {
  for (int i = 0; i < MANY; i++) {
    CHECK(tasks[i] = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false));
    CHECK_OK(ct__handles_add(h, tasks[i]));
  }
  for (int i = 0; i < MANY; i++)
    ct__handles_remove(h, tasks[i]);
}

static void unref_all(ct_task_t **tasks) {
  for (int i = 0; i < MANY; i++)
    ct_task_unref(tasks[i]);
}

typedef struct {
  ct__handles_t *h;
  ct_task_t *tasks[MANY];
} batch_t;

static void *add_and_remove_thread(void *arg) {
  batch_t *b = arg;
  add_and_remove_many(b->h, b->tasks);
  return NULL;
}

/* Slots that a thread freed serve the threads that come after it: the
 * table does not grow while free slots are left. */
TEST(the_table_does_not_grow_while_another_threads_free_slots_are_left) {
  static batch_t first, second;
  first.h = new_handles();
  pthread_t th;
  CHECK_OK(pthread_create(&th, NULL, add_and_remove_thread, &first));
  CHECK_OK(pthread_join(th, NULL));
  CHECK_EQ_INT(atomic_load(&first.h->used), MANY);
  for (int round = 0; round < 4; round++) {
    second.h = first.h;
    CHECK_OK(pthread_create(&th, NULL, add_and_remove_thread, &second));
    CHECK_OK(pthread_join(th, NULL));
    unref_all(second.tasks);
    CHECK_EQ_INT(atomic_load(&first.h->used), MANY);
  }
  CHECK_EQ_INT(ct__handles_size(first.h), 0);
  unref_all(first.tasks);
  free_handles(first.h);
}

/* A lookup of an id the table has not given yet (the next generation of a
 * slot, which the next insertion into that slot gives) meets that
 * insertion and its publication without a lock on their side: it finds nothing or the very task
 * with that id, never another, and every reference it takes is counted
 * (ASan sees a leak or a use after free otherwise, TSan a race). */
typedef struct {
  ct__handles_t *h;
  atomic_uint_fast64_t next_id; /* the id the slot's next task gets */
  atomic_bool done;
} race_t;

static void *lookup_thread(void *arg) {
  race_t *r = arg;
  while (!atomic_load(&r->done)) {
    uint64_t id = atomic_load(&r->next_id);
    ct_task_t *t = ct__handles_get(r->h, id);
    if (t) {
      CHECK(ct_task_id(t) == id);
      ct_task_unref(t);
    }
  }
  return NULL;
}

TEST(a_lookup_racing_an_insertion_finds_nothing_or_the_task_with_its_id) {
  enum { ROUNDS = 100000 };
  race_t r = {.h = new_handles()};
  ct_task_t *t = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false);
  CHECK(t);
  CHECK_OK(ct__handles_add(r.h, t)); /* the slot every round uses */
  uint64_t gen_step = UINT64_C(1) << 32;
  atomic_store(&r.next_id, t->id + gen_step);
  ct__handles_remove(r.h, t);
  ct_task_unref(t);
  pthread_t th;
  CHECK_OK(pthread_create(&th, NULL, lookup_thread, &r));
  for (int i = 0; i < ROUNDS; i++) {
    CHECK(t = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false));
    CHECK_OK(ct__handles_add(r.h, t));
    ct__handles_publish(r.h, t);
    CHECK(t->id == atomic_load(&r.next_id));
    atomic_store(&r.next_id, t->id + gen_step);
    ct__handles_remove(r.h, t);
    ct_task_unref(t);
  }
  atomic_store(&r.done, true);
  CHECK_OK(pthread_join(th, NULL));
  CHECK_EQ_INT(ct__handles_size(r.h), 0);
  free_handles(r.h);
}

/* A task is found from its publication until its removal; publishing one
 * that has left already (its executor finished it first) leaves it gone,
 * and leaves alone the next task in its slot. */
TEST(a_task_is_found_only_from_its_publication_to_its_removal) {
  ct__handles_t *h = new_handles();
  ct_task_t *t = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false);
  CHECK(t);
  CHECK_OK(ct__handles_add(h, t));
  CHECK(ct__handles_get(h, t->id) == NULL);
  CHECK_EQ_INT(ct__handles_size(h), 1);
  ct__handles_publish(h, t);
  ct_task_t *found = ct__handles_get(h, t->id);
  CHECK(found == t);
  ct_task_unref(found);
  ct__handles_remove(h, t);
  CHECK(ct__handles_get(h, t->id) == NULL);

  ct_task_t *late = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false);
  CHECK(late);
  CHECK_OK(ct__handles_add(h, late));
  ct__handles_remove(h, late); /* finished before its submission published it */
  ct_task_t *next = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false);
  CHECK(next);
  CHECK_OK(ct__handles_add(h, next)); /* the same slot, unpublished */
  CHECK_EQ_INT((uint32_t)next->id, (uint32_t)late->id);
  ct__handles_publish(h, late);
  CHECK(ct__handles_get(h, late->id) == NULL);
  CHECK(ct__handles_get(h, next->id) == NULL);
  CHECK_EQ_INT(ct__handles_size(h), 1);
  ct__handles_remove(h, next);
  ct_task_unref(t);
  ct_task_unref(late);
  ct_task_unref(next);
  free_handles(h);
}

/* A slot goes back to the free stack of the thread that took it, whichever
 * thread removes its task, so that the thread takes it again next (with
 * one stack for all, it would take the slot another thread gave up last). */
typedef struct {
  ct__handles_t *h;
  pthread_barrier_t added, removed;
  ct_task_t *first, *again, *other;
} shards_t;

static void *take_twice_thread(void *arg) {
  shards_t *x = arg;
  CHECK(x->first = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false));
  CHECK_OK(ct__handles_add(x->h, x->first));
  pthread_barrier_wait(&x->added);
  pthread_barrier_wait(&x->removed);
  CHECK(x->again = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false));
  CHECK_OK(ct__handles_add(x->h, x->again));
  return NULL;
}

static void *take_once_thread(void *arg) {
  shards_t *x = arg;
  CHECK(x->other = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false));
  CHECK_OK(ct__handles_add(x->h, x->other));
  pthread_barrier_wait(&x->added);
  return NULL;
}

TEST(a_removed_slot_goes_back_to_the_thread_that_took_it) {
  static shards_t x;
  x.h = new_handles();
  pthread_barrier_init(&x.added, NULL, 3);
  pthread_barrier_init(&x.removed, NULL, 2);
  pthread_t twice, once;
  CHECK_OK(pthread_create(&twice, NULL, take_twice_thread, &x));
  CHECK_OK(pthread_create(&once, NULL, take_once_thread, &x));
  pthread_barrier_wait(&x.added);
  ct__handles_remove(x.h, x.first);
  ct__handles_remove(x.h, x.other); /* given up last */
  pthread_barrier_wait(&x.removed);
  CHECK_OK(pthread_join(twice, NULL));
  CHECK_OK(pthread_join(once, NULL));
  CHECK_EQ_INT((uint32_t)x.again->id, (uint32_t)x.first->id);
  CHECK_EQ_INT(atomic_load(&x.h->used), 2);
  ct__handles_remove(x.h, x.again);
  ct_task_unref(x.first);
  ct_task_unref(x.again);
  ct_task_unref(x.other);
  pthread_barrier_destroy(&x.added);
  pthread_barrier_destroy(&x.removed);
  free_handles(x.h);
}

/* Threads that share shards (more threads than shards) take slots, and
 * threads other than the taker give them back, at random, all at once: a
 * slot never serves two tasks at a time (each slot's flag is set as its
 * task is added and cleared just before the removal, which gives the slot
 * up), and the table ends empty. A guard of the free and returned stacks,
 * whose chains move from one to the other (core/handles.c). */
enum { SHARING = CT__HANDLE_SHARDS + 4, SHARED_ROUNDS = 20000, SHARED_MAX = 256 };

typedef struct {
  ct__handles_t *h;
  pthread_mutex_t lock;
  ct_task_t *live[SHARED_MAX]; /* added, waiting for any thread to remove them */
  int n_live;
  atomic_uchar in_use[1 << 16]; /* by slot index */
} sharing_t;

static void take_some(sharing_t *x, unsigned *seed) {
  int n = 1 + (int)(rand_r(seed) % 8);
  for (int i = 0; i < n; i++) {
    ct_task_t *t = ct__task_new(nothing, NULL, CT_PRIORITY_NORMAL, false);
    CHECK(t);
    CHECK_OK(ct__handles_add(x->h, t));
    uint32_t index = (uint32_t)t->id - 1;
    CHECK(index < sizeof x->in_use);
    CHECK_EQ_INT(atomic_exchange(&x->in_use[index], 1), 0);
    pthread_mutex_lock(&x->lock);
    bool room = x->n_live < SHARED_MAX;
    if (room)
      x->live[x->n_live++] = t;
    pthread_mutex_unlock(&x->lock);
    if (!room) { /* give it back at once */
      atomic_store(&x->in_use[index], 0);
      ct__handles_remove(x->h, t);
      ct_task_unref(t);
    }
  }
}

static void give_some_back(sharing_t *x, unsigned *seed) {
  int n = 1 + (int)(rand_r(seed) % 8);
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&x->lock);
    ct_task_t *t = NULL;
    if (x->n_live > 0) {
      int k = (int)(rand_r(seed) % (unsigned)x->n_live);
      t = x->live[k];
      x->live[k] = x->live[--x->n_live];
    }
    pthread_mutex_unlock(&x->lock);
    if (!t)
      return;
    atomic_store(&x->in_use[(uint32_t)t->id - 1], 0);
    ct__handles_remove(x->h, t);
    ct_task_unref(t);
  }
}

static sharing_t sharing;

static void *sharing_thread(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  for (int round = 0; round < SHARED_ROUNDS; round++) {
    take_some(&sharing, &seed);
    give_some_back(&sharing, &seed);
  }
  return NULL;
}

TEST(threads_sharing_shards_never_hold_one_slot_at_once) {
  sharing.h = new_handles();
  pthread_mutex_init(&sharing.lock, NULL);
  pthread_t th[SHARING];
  for (uintptr_t i = 0; i < SHARING; i++)
    CHECK_OK(pthread_create(&th[i], NULL, sharing_thread, (void *)(i + 1)));
  for (int i = 0; i < SHARING; i++)
    CHECK_OK(pthread_join(th[i], NULL));
  CHECK_EQ_INT(ct__handles_size(sharing.h), (size_t)sharing.n_live);
  unsigned seed = 0;
  while (sharing.n_live > 0)
    give_some_back(&sharing, &seed);
  CHECK_EQ_INT(ct__handles_size(sharing.h), 0);
  pthread_mutex_destroy(&sharing.lock);
  free_handles(sharing.h);
}

int main(void) {
  RUN(the_table_does_not_grow_while_another_threads_free_slots_are_left);
  RUN(a_task_is_found_only_from_its_publication_to_its_removal);
  RUN(a_removed_slot_goes_back_to_the_thread_that_took_it);
  RUN(a_lookup_racing_an_insertion_finds_nothing_or_the_task_with_its_id);
  RUN(threads_sharing_shards_never_hold_one_slot_at_once);
  return check_done();
}
