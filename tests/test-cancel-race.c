/* Cancel by id while tasks are being submitted, and stops in mid-flight.
 *
 * Submitters send thread, loop, delayed (to the pool, a loop and the
 * process pool), timed and process tasks, each with a handle and a
 * completion callback, and all but process tasks with an arg_free, and
 * put each id they get in a shared ring; cancelers take the newest ids of
 * the ring (tasks of other threads, often still queued or delayed) and the
 * ids the next tasks in the same handle-table slots will get (the id with
 * the next generation: a slot freed by a completion is taken again by a
 * submission about to return), look them up with ct_supervisor_get_task()
 * in a tight loop, and cancel whatever they find; every round must cancel
 * some by id. The main thread stops the supervisor while all of them are
 * at work.
 * Then: every accepted task is terminal, its callback ran exactly once and
 * its arg was freed exactly once, no refused submission's callback or
 * arg_free ever ran, the stop finished, the
 * counters add up and the supervisor frees.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "gate.h"

#define ROUNDS 12
#define SUBMITTERS 3
#define CANCELERS 2
#define PER_SUBMITTER 3000
#define ID_WINDOW 8 /* newest ids of the ring each canceler pass looks at */
#define RING 64
#define NEXT_GENERATION (UINT64_C(1) << 32) /* a handle id's generation unit */

enum kind {
  THREAD, LOOP, DELAYED, DELAYED_LONG, PROCESS, DELAYED_LOOP, DELAYED_PROCESS, TIMED, KINDS
};

typedef struct {
  atomic_int calls;
  atomic_int freed; /* arg_free calls */
  atomic_int status_in_callback;
  int rc;
  ct_task_t *task;
} record_t;

typedef struct {
  ct_supervisor_t *sup;
  ct_loop_t *loop;
  atomic_uint_fast64_t ring[RING]; /* ids of tracked tasks, newest at ring_next - 1 */
  atomic_uint ring_next;
  atomic_long handed; /* submissions accepted so far */
  atomic_bool submitting;
  atomic_int started; /* submitters past their first submission */
  atomic_long canceled_by_id;
  atomic_long canceled_by_guess; /* of those, by a next-generation id */
  record_t records[SUBMITTERS][PER_SUBMITTER];
} round_t;

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

static json_t *fail(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return ct_error_new("RuntimeError", "no");
}

static json_t *fn_echo(uint64_t task_id, json_t *args, void *data) {
  (void)task_id;
  (void)data;
  return json_incref(args);
}

static void on_done(ct_task_t *task, void *data) {
  record_t *r = data;
  atomic_store(&r->status_in_callback, (int)ct_task_status(task));
  atomic_fetch_add(&r->calls, 1);
}

static void arg_free(void *arg) {
  record_t *r = arg;
  atomic_fetch_add(&r->freed, 1);
}

static bool has_arg(int i) { return i % KINDS != PROCESS && i % KINDS != DELAYED_PROCESS; }

static int submit_one(round_t *rd, int i, record_t *r) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.on_done = on_done;
  o.done_data = r;
  o.arg_free = arg_free;
  switch (i % KINDS) {
  case LOOP:
    o.loop = rd->loop;
    return ct_background_task(rd->sup, nothing, r, &o, &r->task);
  case DELAYED:
    o.delay = 0.001;
    return ct_background_task(rd->sup, nothing, r, &o, &r->task);
  case DELAYED_LONG:
    o.delay = 3600; /* only a cancel or the stop ends it */
    return ct_background_task(rd->sup, nothing, r, &o, &r->task);
  case DELAYED_LOOP:
    o.loop = rd->loop;
    o.delay = 0.001;
    return ct_background_task(rd->sup, nothing, r, &o, &r->task);
  case TIMED:
    o.timeout = 60; /* armed and disarmed, never reached */
    return ct_background_task(rd->sup, nothing, r, &o, &r->task);
  case DELAYED_PROCESS:
    o.delay = 0.001;
    o.arg_free = NULL;
    return ct_process_task(rd->sup, "echo", NULL, &o, &r->task);
  case PROCESS:
    o.arg_free = NULL;
    return ct_process_task(rd->sup, "echo", NULL, &o, &r->task);
  default:
    return ct_background_task(rd->sup, i % 3 ? nothing : fail, r, &o, &r->task);
  }
}

typedef struct {
  round_t *rd;
  int n;
} submitter_arg_t;

static void *submitter(void *arg) {
  submitter_arg_t *a = arg;
  round_t *rd = a->rd;
  for (int i = 0; i < PER_SUBMITTER; i++) {
    record_t *r = &rd->records[a->n][i];
    r->rc = submit_one(rd, i + a->n, r);
    CHECK(r->rc == 0 || r->rc == CT_ESHUTDOWN);
    CHECK((r->rc == 0) == (r->task != NULL));
    if (r->task) {
      atomic_store(&rd->ring[atomic_fetch_add(&rd->ring_next, 1) % RING], ct_task_id(r->task));
      atomic_fetch_add(&rd->handed, 1);
    }
    if (i == 0)
      atomic_fetch_add(&rd->started, 1);
  }
  return NULL;
}

static void cancel_by_id(round_t *rd, uint64_t id, bool guessed) {
  ct_task_t *t;
  if (ct_supervisor_get_task(rd->sup, id, &t) != 0)
    return;
  CHECK(ct_task_id(t) == id);
  if (ct_task_cancel(t) == 0) {
    atomic_fetch_add(&rd->canceled_by_id, 1);
    atomic_fetch_add(&rd->canceled_by_guess, guessed);
  }
  ct_task_unref(t);
}

/* Look up the newest ids handed out, and the next ones of their slots, and
 * cancel what they find. */
static void *canceler(void *arg) {
  round_t *rd = arg;
  while (atomic_load(&rd->submitting)) {
    unsigned next = atomic_load(&rd->ring_next);
    for (unsigned k = 1; k <= ID_WINDOW && k <= next; k++) {
      uint64_t id = atomic_load(&rd->ring[(next - k) % RING]);
      cancel_by_id(rd, id, false);
      cancel_by_id(rd, id + NEXT_GENERATION, true);
    }
  }
  return NULL;
}

static void check_round(round_t *rd, long *accepted) {
  for (int s = 0; s < SUBMITTERS; s++)
    for (int i = 0; i < PER_SUBMITTER; i++) {
      record_t *r = &rd->records[s][i];
      if (r->rc != 0) {
        CHECK_EQ_INT(atomic_load(&r->calls), 0); /* refused: never called back */
        CHECK_EQ_INT(atomic_load(&r->freed), 0); /* nor its arg freed */
        continue;
      }
      (*accepted)++;
      CHECK_OK(ct_task_wait(r->task, WAIT_BOUND_S));
      CHECK_EQ_INT(atomic_load(&r->calls), 1);
      CHECK_EQ_INT(atomic_load(&r->freed), has_arg(i + s) ? 1 : 0);
      CHECK(ct_task_is_terminal(r->task));
      CHECK_EQ_INT(atomic_load(&r->status_in_callback), ct_task_status(r->task));
      ct_task_unref(r->task);
    }
}

static void run_round(int round) {
  round_t *rd = calloc(1, sizeof *rd);
  CHECK(rd != NULL);
  ct_supervisor_opts_t so = CT_SUPERVISOR_OPTS_INIT;
  so.pool_size = 2;
  CHECK_OK(ct_supervisor_new(&so, &rd->sup));
  ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
  CHECK_OK(ct_process_pool_create(rd->sup, &po));
  CHECK_OK(ct_supervisor_start(rd->sup));
  CHECK_OK(ct_loop_create(rd->sup, "race", &rd->loop));
  atomic_store(&rd->submitting, true);

  pthread_t subs[SUBMITTERS], cans[CANCELERS];
  submitter_arg_t args[SUBMITTERS];
  for (int i = 0; i < CANCELERS; i++)
    CHECK(pthread_create(&cans[i], NULL, canceler, rd) == 0);
  for (int i = 0; i < SUBMITTERS; i++) {
    args[i] = (submitter_arg_t){rd, i};
    CHECK(pthread_create(&subs[i], NULL, submitter, &args[i]) == 0);
  }
  /* Stop while everyone is at work, a quarter, half or three quarters of
   * the way (every other round drains), once a cancel by id has hit (the
   * ring always holds long-delayed tasks, so one does even when the
   * submitters are done first). */
  long target = (long)SUBMITTERS * PER_SUBMITTER * (1 + round % 3) / 4;
  while (atomic_load(&rd->started) < SUBMITTERS || atomic_load(&rd->handed) < target ||
         atomic_load(&rd->canceled_by_id) == 0)
    sched_yield();
  CHECK_OK(ct_supervisor_stop(rd->sup, round % 2 ? CT_STOP_DRAIN : CT_STOP_CANCEL,
                              WAIT_BOUND_S));
  for (int i = 0; i < SUBMITTERS; i++)
    pthread_join(subs[i], NULL);
  atomic_store(&rd->submitting, false);
  for (int i = 0; i < CANCELERS; i++)
    pthread_join(cans[i], NULL);

  long accepted = 0;
  check_round(rd, &accepted);
  ct_stats_t st = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(rd->sup, &st));
  CHECK_EQ_INT(st.submitted, accepted);
  CHECK_EQ_INT(st.completed + st.failed + st.canceled, accepted);
  CHECK_EQ_INT(st.queued, 0);
  CHECK_EQ_INT(st.delayed, 0);
  CHECK_EQ_INT(st.running, 0);
  CHECK_EQ_INT(ct_supervisor_registry_size(rd->sup), 0);
  CHECK_OK(ct_supervisor_free(rd->sup));
  fprintf(stderr, "round %d: %ld accepted, %ld canceled by id (%ld by a guessed id)\n", round,
          accepted, atomic_load(&rd->canceled_by_id), atomic_load(&rd->canceled_by_guess));
  CHECK(atomic_load(&rd->canceled_by_id) > 0);
  free(rd);
}

TEST(cancel_by_id_while_submitting_and_stopping) {
  for (int round = 0; round < ROUNDS; round++)
    run_round(round);
}

int main(void) {
  CHECK_OK(ct_process_register("echo", fn_echo, NULL));
  RUN(cancel_by_id_while_submitting_and_stopping);
  return check_done();
}
