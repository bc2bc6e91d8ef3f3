/* Tasks by id through the supervisor: a tracked task is found while it is
 * known, and once it is terminal its id answers CT_ENOENT, also after the
 * next task has taken its slot of the handle table; lookups and cancels by
 * id that race with submissions and completions find each task at most
 * while it is known, and every task still ends once, with one callback. */
#include <stdatomic.h>

#include "gate.h"

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return json_integer(1);
}

TEST(a_stale_id_answers_enoent_after_its_slot_is_reused) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *first, *found;
  CHECK_OK(ct_background_task(sup, gate_task, &gate, NULL, &first));
  uint64_t stale = ct_task_id(first);
  CHECK(stale > 0);
  CHECK_OK(ct_supervisor_get_task(sup, stale, &found));
  CHECK(found == first);
  ct_task_unref(found);
  gate_open(&gate);
  CHECK_OK(ct_task_wait(first, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_supervisor_get_task(sup, stale, &found), CT_ENOENT);
  CHECK(found == NULL);
  /* Many more tracked tasks, one at a time: each takes the slot the last
   * one left, and none is ever found by an earlier id. */
  for (int i = 0; i < 1000; i++) {
    ct_task_t *t;
    CHECK_OK(ct_background_task(sup, answer, NULL, NULL, &t));
    CHECK(ct_task_id(t) != stale);
    CHECK_EQ_INT(ct_supervisor_get_task(sup, stale, &found), CT_ENOENT);
    CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
    CHECK_EQ_INT(ct_supervisor_get_task(sup, ct_task_id(t), &found), CT_ENOENT);
    stale = ct_task_id(t);
    ct_task_unref(t);
  }
  CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  ct_task_unref(first);
  stop_and_free(sup);
  gate_destroy(&gate);
}

#define SUBMITTERS 2
#define PER_SUBMITTER 20000

typedef struct {
  ct_supervisor_t *sup;
  atomic_uint_fast64_t last_id; /* the id a submitter got last */
  atomic_uint_fast64_t last_done; /* the id of the task whose callback ran last */
  atomic_bool submitting;
  atomic_long canceled_by_id, found;
  atomic_int calls[SUBMITTERS][PER_SUBMITTER];
  ct_task_t *tasks[SUBMITTERS][PER_SUBMITTER];
} race_t;

typedef struct {
  race_t *race;
  int n;
} submitter_t;

static race_t race;

/* Its slot is given back right after this: the next submission takes it. */
static void count_call(ct_task_t *task, void *data) {
  atomic_store(&race.last_done, ct_task_id(task));
  atomic_fetch_add((atomic_int *)data, 1);
}

static void *submit_all(void *arg) {
  submitter_t *a = arg;
  race_t *r = a->race;
  for (int i = 0; i < PER_SUBMITTER; i++) {
    ct_task_opts_t o = CT_TASK_OPTS_INIT;
    o.on_done = count_call;
    o.done_data = &r->calls[a->n][i];
    CHECK_OK(ct_background_task(r->sup, answer, NULL, &o, &r->tasks[a->n][i]));
    atomic_store(&r->last_id, ct_task_id(r->tasks[a->n][i]));
    if (i % 64 == 0) /* let some finish and free their slots */
      CHECK_OK(ct_task_wait(r->tasks[a->n][i], WAIT_BOUND_S));
  }
  return NULL;
}

/* Find and cancel the task with this id, if it is known. */
static void try_cancel(race_t *r, uint64_t id) {
  ct_task_t *t;
  if (ct_supervisor_get_task(r->sup, id, &t) != 0)
    return;
  atomic_fetch_add(&r->found, 1);
  CHECK(ct_task_id(t) == id);
  if (ct_task_cancel(t) == 0)
    atomic_fetch_add(&r->canceled_by_id, 1);
  ct_task_unref(t);
}

/* Look up the ids submissions are about to get: the slot the last
 * finished task gave back in its next generations (an id names a slot in
 * its low 32 bits, its generation above), and the slots next to the last
 * one given. */
static void *cancel_by_id(void *arg) {
  race_t *r = arg;
  while (atomic_load(&r->submitting)) {
    uint64_t done = atomic_load(&r->last_done), last = atomic_load(&r->last_id);
    for (uint64_t gen = 1; gen <= 2; gen++)
      try_cancel(r, done + (gen << 32));
    for (int k = 1; k <= 4; k++)
      try_cancel(r, last + (uint64_t)k);
  }
  return NULL;
}

TEST(lookups_and_cancels_by_id_race_with_submissions) {
  race_t *r = &race;
  r->sup = start_supervisor(2, 0, 0);
  atomic_store(&r->submitting, true);
  pthread_t subs[SUBMITTERS], canceler;
  submitter_t args[SUBMITTERS];
  CHECK_OK(pthread_create(&canceler, NULL, cancel_by_id, r));
  for (int i = 0; i < SUBMITTERS; i++) {
    args[i] = (submitter_t){r, i};
    CHECK_OK(pthread_create(&subs[i], NULL, submit_all, &args[i]));
  }
  for (int i = 0; i < SUBMITTERS; i++)
    CHECK_OK(pthread_join(subs[i], NULL));
  atomic_store(&r->submitting, false);
  CHECK_OK(pthread_join(canceler, NULL));
  long canceled = 0;
  for (int s = 0; s < SUBMITTERS; s++)
    for (int i = 0; i < PER_SUBMITTER; i++) {
      ct_task_t *t = r->tasks[s][i], *found;
      CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
      CHECK_EQ_INT(atomic_load(&r->calls[s][i]), 1);
      canceled += ct_task_status(t) == CT_TASK_CANCELED;
      CHECK_EQ_INT(ct_supervisor_get_task(r->sup, ct_task_id(t), &found), CT_ENOENT);
      ct_task_unref(t);
    }
  CHECK_EQ_INT(canceled, atomic_load(&r->canceled_by_id));
  CHECK_EQ_INT(ct_supervisor_registry_size(r->sup), 0);
  fprintf(stderr, "   %ld found by id, %ld canceled by id\n", atomic_load(&r->found),
          atomic_load(&r->canceled_by_id));
  stop_and_free(r->sup);
}

int main(void) {
  RUN(a_stale_id_answers_enoent_after_its_slot_is_reused);
  RUN(lookups_and_cancels_by_id_race_with_submissions);
  return check_done();
}
