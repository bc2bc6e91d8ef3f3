/* Workers under load: many puts and triggers from several threads while the
 * worker is started and stopped again and again. Nothing is lost: every
 * accepted item is run or handed back exactly once. */
#include <ctasker.h>
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

#define PUTTERS 4
#define PER_PUTTER 10000

static atomic_uchar seen[PUTTERS * PER_PUTTER];
static atomic_bool accepted[PUTTERS * PER_PUTTER];
static atomic_int runs, drops, putters_done;

static void mark(void *item) {
  size_t i = (size_t)(uintptr_t)item;
  CHECK(atomic_fetch_add(&seen[i], 1) == 0);
}

static int run_item(ct_worker_run_t *run) {
  mark(run->item);
  atomic_fetch_add(&runs, 1);
  return (uintptr_t)run->item % 997 == 996 ? CT_WORKER_STOP : CT_WORKER_CONTINUE;
}

static void on_drop(ct_worker_t *w, void *item, void *data) {
  (void)w;
  (void)data;
  mark(item);
  atomic_fetch_add(&drops, 1);
}

typedef struct {
  ct_worker_t *w;
  int id;
} putter_t;

static void *putter(void *arg) {
  putter_t *p = arg;
  for (int k = 0; k < PER_PUTTER; k++) {
    size_t i = (size_t)p->id * PER_PUTTER + (size_t)k;
    int rc = ct_queue_worker_put(p->w, (void *)(uintptr_t)i, k % 256);
    CHECK(rc == 0 || rc == CT_ESHUTDOWN || rc == CT_ENOBUFS);
    if (rc == 0)
      atomic_store(&accepted[i], true);
    if (k % 256 == 0)
      check_sleep(0.0002);
  }
  atomic_fetch_add(&putters_done, 1);
  return NULL;
}

static void stress_queue(bool by_priority) {
  memset(seen, 0, sizeof seen);
  memset(accepted, 0, sizeof accepted);
  atomic_store(&runs, 0);
  atomic_store(&drops, 0);
  atomic_store(&putters_done, 0);
  ct_supervisor_opts_t so = CT_SUPERVISOR_OPTS_INIT;
  so.pool_size = 3;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&so, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.priority_queue = by_priority;
  o.max_queue = 5000;
  o.on_drop = on_drop;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, run_item, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  pthread_t th[PUTTERS];
  putter_t ps[PUTTERS];
  for (int i = 0; i < PUTTERS; i++) {
    ps[i] = (putter_t){w, i};
    CHECK(pthread_create(&th[i], NULL, putter, &ps[i]) == 0);
  }
  for (int round = 0; atomic_load(&putters_done) < PUTTERS; round++) {
    check_sleep(0.0005);
    int rc = ct_worker_stop(w, round % 2 ? CT_WORKER_DROP : CT_WORKER_DRAIN,
                            round % 3 ? -1 : 0);
    CHECK_OK(rc);
    rc = ct_worker_start(w, NULL);
    CHECK(rc == 0 || rc == CT_EBUSY);
  }
  for (int i = 0; i < PUTTERS; i++)
    pthread_join(th[i], NULL);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  int accepted_n = 0;
  for (size_t i = 0; i < PUTTERS * PER_PUTTER; i++) {
    if (atomic_load(&accepted[i])) {
      accepted_n++;
      CHECK_EQ_INT(atomic_load(&seen[i]), 1);
    } else {
      CHECK_EQ_INT(atomic_load(&seen[i]), 0);
    }
  }
  CHECK_EQ_INT(atomic_load(&runs) + atomic_load(&drops), accepted_n);
  ct_worker_stats_t s = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &s));
  CHECK_EQ_INT(s.runs, atomic_load(&runs));
  CHECK_EQ_INT(s.dropped, atomic_load(&drops));
  fprintf(stderr, "accepted %d, ran %d, handed back %d\n", accepted_n, atomic_load(&runs),
          atomic_load(&drops));
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(queue_puts_while_starting_and_stopping_fifo) { stress_queue(false); }
TEST(queue_puts_while_starting_and_stopping_priority) { stress_queue(true); }

static atomic_int event_runs;
static int run_event(ct_worker_run_t *run) {
  (void)run;
  atomic_fetch_add(&event_runs, 1);
  return CT_WORKER_CONTINUE;
}

static void *trigger_loop(void *arg) {
  for (int k = 0; k < 20000; k++) {
    int rc = ct_event_worker_trigger(arg, k % 7 == 0);
    CHECK(rc == 0 || rc == CT_ESHUTDOWN);
  }
  return NULL;
}

TEST(triggers_and_supervisor_stop_race) {
  for (int round = 0; round < 20; round++) {
    ct_supervisor_t *sup;
    CHECK_OK(ct_supervisor_new(NULL, &sup));
    CHECK_OK(ct_supervisor_start(sup));
    ct_worker_t *ev, *iv;
    ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
    o.interval = 0.0005;
    CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, run_event, NULL, &ev));
    CHECK_OK(ct_worker_new(sup, CT_WORKER_INTERVAL, run_event, &o, &iv));
    CHECK_OK(ct_worker_start(ev, NULL));
    CHECK_OK(ct_worker_start(iv, NULL));
    pthread_t th[2];
    CHECK(pthread_create(&th[0], NULL, trigger_loop, ev) == 0);
    CHECK(pthread_create(&th[1], NULL, trigger_loop, iv) == 0);
    check_sleep(0.002 * (round % 5));
    CHECK_OK(ct_supervisor_stop(sup, round % 2 ? CT_STOP_CANCEL : CT_STOP_DRAIN, -1));
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    CHECK_EQ_INT(ct_worker_state(ev), CT_WORKER_STOPPED);
    CHECK_EQ_INT(ct_worker_state(iv), CT_WORKER_STOPPED);
    CHECK_OK(ct_worker_free(ev));
    CHECK_OK(ct_worker_free(iv));
    CHECK_OK(ct_supervisor_free(sup));
  }
}

int main(void) {
  RUN(queue_puts_while_starting_and_stopping_fifo);
  RUN(queue_puts_while_starting_and_stopping_priority);
  RUN(triggers_and_supervisor_stop_race);
  return check_done();
}
