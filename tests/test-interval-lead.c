/* Interval workers queue each run a little before its deadline and wait
 * for the deadline on the pool thread: a run never starts early, and a
 * stop that arrives while the run waits for its time skips it. */
#include <ctasker.h>
#include <stdatomic.h>

#include "check.h"
#include "gate.h"
#include "workers/worker-internal.h"

typedef struct {
  atomic_int runs;
  atomic_int early; /* runs that started before they were due */
} lead_t;

static int tick(ct_worker_run_t *run) {
  lead_t *l = run->data;
  if (ct_now() < run->scheduled)
    atomic_fetch_add(&l->early, 1);
  atomic_fetch_add(&l->runs, 1);
  return CT_WORKER_CONTINUE;
}

/* Whether a pool thread has taken the run (the trigger is consumed) but
 * the run has not begun: it waits for its deadline. */
static bool waiting_for_due(ct_worker_t *w) {
  pthread_mutex_lock(&w->lock);
  bool waiting = w->inflight && !w->wanted && !w->in_run;
  pthread_mutex_unlock(&w->lock);
  return waiting;
}

static ct_worker_t *make_ticker(ct_supervisor_t *sup, lead_t *l, double interval) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.interval = interval;
  o.data = l;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_INTERVAL, tick, &o, &w));
  return w;
}

TEST(never_early) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  lead_t l = {0};
  ct_worker_t *w = make_ticker(sup, &l, 0.004);
  CHECK_OK(ct_worker_start(w, NULL));
  for (int i = 0; atomic_load(&l.runs) < 50; i++) {
    CHECK(i < 60000);
    check_sleep(0.001);
  }
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(atomic_load(&l.early), 0);
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(stop_while_waiting_for_due_skips_the_run) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  int skipped = 0;
  for (int round = 0; round < 10; round++) {
    lead_t l = {0};
    ct_worker_t *w = make_ticker(sup, &l, 0.02);
    CHECK_OK(ct_worker_start(w, NULL));
    for (int i = 0; !waiting_for_due(w); i++) {
      CHECK(i < 10000000);
      sched_yield();
    }
    int before = atomic_load(&l.runs);
    CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
    /* The run that waited may have just begun before the stop; none after. */
    int after = atomic_load(&l.runs);
    CHECK(after <= before + 1);
    skipped += after == before;
    check_sleep(0.03);
    CHECK_EQ_INT(atomic_load(&l.runs), after);
    CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
    CHECK_OK(ct_worker_free(w));
  }
  /* Without the skip every round would run once more; losing the race
   * (the deadline passing between the check and the stop) in all ten
   * rounds would take a very long stall each time. */
  CHECK(skipped >= 1);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

int main(void) {
  RUN(never_early);
  RUN(stop_while_waiting_for_due_skips_the_run);
  return check_done();
}
