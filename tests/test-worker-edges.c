/* Workers at the edges: user callbacks that call back into their own
 * worker, stops racing accepted work, starts that cannot get what a worker
 * needs (a timer, a loop), and names read while restarts change them. */
#include <ctasker.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"
#include "gate.h"

/* What the runs and callbacks record. */
typedef struct {
  gate_t gate;           /* runs that wait, wait here */
  atomic_int runs, drops, drop_put_refused, drop_stop_deadlk, drop_on_run_thread;
  atomic_uintptr_t lowest_frame, highest_frame; /* on_drop's stack frames */
  pthread_t run_thread;
  atomic_int gated_run;      /* the number of the run that waits at the gate */
  atomic_int scheduled_runs; /* runs with a due time (timer runs) */
} rec_t;

static void rec_init(rec_t *r) {
  gate_init(&r->gate);
  atomic_init(&r->runs, 0);
  atomic_init(&r->drops, 0);
  atomic_init(&r->drop_put_refused, 0);
  atomic_init(&r->drop_stop_deadlk, 0);
  atomic_init(&r->drop_on_run_thread, 0);
  atomic_init(&r->lowest_frame, UINTPTR_MAX);
  atomic_init(&r->highest_frame, 0);
  atomic_init(&r->gated_run, 0);
  atomic_init(&r->scheduled_runs, 0);
}

static ct_worker_t *make(ct_supervisor_t *sup, ct_worker_kind_t kind, ct_worker_fn fn, rec_t *r,
                         ct_worker_drop_fn on_drop, ct_worker_opts_t *o) {
  ct_worker_opts_t defaults = CT_WORKER_OPTS_INIT;
  if (!o)
    o = &defaults;
  o->data = r;
  o->on_drop = on_drop;
  o->drop_data = r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, kind, fn, o, &w));
  return w;
}

/* Counts the run; run number `gated_run` (the first, by default) waits at
 * the gate. */
static int run_gated(ct_worker_run_t *run) {
  rec_t *r = run->data;
  r->run_thread = pthread_self();
  if (run->scheduled > 0)
    atomic_fetch_add(&r->scheduled_runs, 1);
  if (atomic_fetch_add(&r->runs, 1) == atomic_load(&r->gated_run))
    gate_pass(&r->gate);
  return CT_WORKER_CONTINUE;
}

static void note_frame(rec_t *r) {
  uintptr_t here = (uintptr_t)__builtin_frame_address(0);
  uintptr_t low = atomic_load(&r->lowest_frame), high = atomic_load(&r->highest_frame);
  while (here < low && !atomic_compare_exchange_weak(&r->lowest_frame, &low, here)) {
  }
  while (here > high && !atomic_compare_exchange_weak(&r->highest_frame, &high, here)) {
  }
}

/* An on_drop that calls into its own worker: a put (refused: it is
 * stopping), a statistics read, and a stop that does not wait. */
static void drop_calling_back(ct_worker_t *w, void *item, void *data) {
  (void)item;
  rec_t *r = data;
  note_frame(r);
  atomic_fetch_add(&r->drops, 1);
  if (ct_queue_worker_put(w, item, 100) == CT_ESHUTDOWN)
    atomic_fetch_add(&r->drop_put_refused, 1);
  ct_worker_stats_t s = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &s));
  CHECK(s.state != CT_WORKER_RUNNING);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, 0));
}

#define MANY_ITEMS 200000

TEST(on_drop_calling_its_worker_hands_many_items_back_without_recursion) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  rec_init(&r);
  ct_worker_t *w = make(sup, CT_WORKER_QUEUE, run_gated, &r, drop_calling_back, NULL);
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_queue_worker_put(w, (void *)0, 100));
  gate_wait_arrived(&r.gate, 1); /* the first run holds; the rest wait */
  for (intptr_t i = 1; i <= MANY_ITEMS; i++)
    CHECK_OK(ct_queue_worker_put(w, (void *)i, 100));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, 0)); /* hands back on this thread */
  CHECK_EQ_INT(atomic_load(&r.drops), MANY_ITEMS);
  CHECK_EQ_INT(atomic_load(&r.drop_put_refused), MANY_ITEMS);
  /* Every on_drop ran at about the same stack depth: one loop, not one
   * nested call per item (which needs at least 200 bytes each). */
  CHECK(atomic_load(&r.highest_frame) - atomic_load(&r.lowest_frame) < 64 * 1024);
  gate_open(&r.gate);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  ct_worker_stats_t s = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &s));
  CHECK_EQ_INT(s.state, CT_WORKER_STOPPED);
  CHECK_EQ_INT(s.dropped, MANY_ITEMS);
  CHECK_EQ_INT(s.pending, 0);
  CHECK_EQ_INT(s.runs, 1);
  CHECK_OK(ct_worker_free(w));
  gate_destroy(&r.gate);
  stop_and_free(sup);
}

/* The first run stops its worker; the items left are handed back on the
 * run's own thread. */
static int run_gated_then_stop(ct_worker_run_t *run) {
  run_gated(run);
  return CT_WORKER_STOP;
}

/* A waiting stop from on_drop: on the run's thread it would wait for the
 * run task that is calling it. */
static void drop_stopping_and_waiting(ct_worker_t *w, void *item, void *data) {
  (void)item;
  rec_t *r = data;
  atomic_fetch_add(&r->drops, 1);
  if (pthread_equal(pthread_self(), r->run_thread))
    atomic_fetch_add(&r->drop_on_run_thread, 1);
  if (ct_worker_stop(w, CT_WORKER_DROP, -1) == CT_EDEADLK)
    atomic_fetch_add(&r->drop_stop_deadlk, 1);
}

/* Runs on a pool thread (loop NULL) or on `loop`'s thread. */
static void check_waiting_stop_from_on_drop(ct_supervisor_t *sup, ct_loop_t *loop) {
  rec_t r;
  rec_init(&r);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.loop = loop;
  ct_worker_t *w = make(sup, CT_WORKER_QUEUE, run_gated_then_stop, &r,
                        drop_stopping_and_waiting, &o);
  CHECK_OK(ct_worker_start(w, NULL));
  for (intptr_t i = 0; i < 4; i++)
    CHECK_OK(ct_queue_worker_put(w, (void *)i, 100));
  gate_wait_arrived(&r.gate, 1);
  gate_open(&r.gate);
  WAIT_FOR(ct_worker_state(w) == CT_WORKER_STOPPED); /* a hang fails here */
  CHECK_EQ_INT(atomic_load(&r.runs), 1);
  CHECK_EQ_INT(atomic_load(&r.drops), 3);
  CHECK_EQ_INT(atomic_load(&r.drop_on_run_thread), 3);
  CHECK_EQ_INT(atomic_load(&r.drop_stop_deadlk), 3);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_OK(ct_worker_free(w));
  gate_destroy(&r.gate);
}

TEST(waiting_stop_from_on_drop_on_the_run_thread_would_deadlock) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  check_waiting_stop_from_on_drop(sup, NULL);
  ct_loop_t *loop;
  CHECK_OK(ct_loop_create(sup, "drops", &loop));
  check_waiting_stop_from_on_drop(sup, loop);
  stop_and_free(sup);
}

/* A forced trigger accepted while the run executes, and a trigger
 * accepted while the only pool thread is busy, are both run by a DRAIN
 * stop; a DROP stop drops a forced trigger. */
static void check_triggers_survive_drain(ct_worker_kind_t kind) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  rec_t r;
  rec_init(&r);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.interval = 3600; /* interval workers: the timer never fires here */
  o.delay_before = 3600;
  ct_worker_t *w = make(sup, kind, run_gated, &r, NULL, &o);

  /* a forced trigger while run 0 executes, then a drain */
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  gate_wait_arrived(&r.gate, 1);
  CHECK_OK(ct_event_worker_trigger(w, true));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, 0));
  gate_open(&r.gate);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(atomic_load(&r.runs), 2);

  /* a trigger queued behind the busy thread, then a drain */
  gate_t busy;
  gate_init(&busy);
  ct_task_t *hold = submit(sup, gate_task, &busy, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&busy, 1);
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, 0));
  gate_open(&busy);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(atomic_load(&r.runs), 3);

  /* a forced trigger while run 3 executes, then a drop */
  gate_destroy(&r.gate);
  gate_init(&r.gate);
  atomic_store(&r.gated_run, 3);
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_event_worker_trigger(w, false));
  gate_wait_arrived(&r.gate, 1);
  CHECK_OK(ct_event_worker_trigger(w, true));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, 0));
  gate_open(&r.gate);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(atomic_load(&r.runs), 4);

  CHECK_EQ_INT(atomic_load(&r.scheduled_runs), 0);
  CHECK_OK(ct_worker_free(w));
  ct_task_unref(hold);
  gate_destroy(&busy);
  gate_destroy(&r.gate);
  stop_and_free(sup);
}

TEST(event_triggers_accepted_before_a_drain_stop_run) {
  check_triggers_survive_drain(CT_WORKER_EVENT);
}

TEST(interval_triggers_accepted_before_a_drain_stop_run) {
  check_triggers_survive_drain(CT_WORKER_INTERVAL);
}

static atomic_int timer_errors_logged;
static void count_timer_errors(int level, const char *msg, void *data) {
  (void)data;
  if (level == CT_LOG_ERROR && strstr(msg, "no timer"))
    atomic_fetch_add(&timer_errors_logged, 1);
}

/* Fill the descriptor table (under a lowered limit); returns how many
 * descriptors were taken into fds. */
static int fill_descriptors(int *fds, int max) {
  int n = 0, any = open("/dev/null", O_RDONLY | O_CLOEXEC);
  CHECK(any >= 0);
  fds[n++] = any;
  while (n < max) {
    int fd = dup(any);
    if (fd < 0) {
      CHECK(errno == EMFILE);
      return n;
    }
    fds[n++] = fd;
  }
  CHECK(!"the lowered limit left descriptors free");
  return n;
}

#define FD_LIMIT 512

TEST(interval_worker_without_a_timer_does_not_start) {
  ct_supervisor_opts_t so = CT_SUPERVISOR_OPTS_INIT;
  so.log = count_timer_errors;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&so, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  rec_t r;
  rec_init(&r);
  atomic_store(&r.gated_run, -1);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.interval = 0.01;
  ct_worker_t *w = make(sup, CT_WORKER_INTERVAL, run_gated, &r, NULL, &o);

  struct rlimit old;
  CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
  struct rlimit low = old;
  if (low.rlim_cur > FD_LIMIT)
    low.rlim_cur = FD_LIMIT;
  CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
  static int fds[FD_LIMIT];
  int n = fill_descriptors(fds, FD_LIMIT);
  int rc = ct_worker_start(w, NULL);
  for (int i = 0; i < n; i++)
    close(fds[i]);
  CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);

  CHECK_EQ_INT(rc, CT_EMFILE);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_INIT);
  CHECK_EQ_INT(atomic_load(&timer_errors_logged), 1);
  CHECK_EQ_INT(ct_event_worker_trigger(w, false), CT_ESHUTDOWN);
  /* left startable: with descriptors back, it starts and runs */
  CHECK_OK(ct_worker_start(w, NULL));
  WAIT_FOR(atomic_load(&r.scheduled_runs) >= 2);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_free(w));
  gate_destroy(&r.gate);
  stop_and_free(sup);
}

TEST(start_on_an_ended_loop_is_refused) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_loop_t *ended, *ending;
  CHECK_OK(ct_loop_create(sup, "ended", &ended));
  CHECK_OK(ct_loop_create(sup, "ending", &ending));
  CHECK_OK(ct_loop_stop(ended, -1));
  CHECK_OK(ct_loop_stop(ending, 0));
  rec_t r;
  rec_init(&r);
  atomic_store(&r.gated_run, -1);
  const ct_worker_kind_t kinds[] = {CT_WORKER_QUEUE, CT_WORKER_EVENT, CT_WORKER_INTERVAL,
                                    CT_WORKER_BACKGROUND};
  ct_loop_t *loops[] = {ended, ending};
  for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
    for (size_t l = 0; l < 2; l++) {
      ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
      o.interval = 0.01;
      o.loop = loops[l];
      ct_worker_t *w = make(sup, kinds[k], run_gated, &r, NULL, &o);
      CHECK_EQ_INT(ct_worker_start(w, NULL), CT_ESHUTDOWN);
      CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_INIT);
      CHECK_OK(ct_worker_free(w));
    }
  }
  CHECK_EQ_INT(atomic_load(&r.runs), 0);
  gate_destroy(&r.gate);
  stop_and_free(sup);
}

/* ---- names ---- */

static const char *const names[] = {"edge-base", "a", "a-much-longer-override-name-0123456789",
                                    "bb"};
#define N_NAMES (sizeof names / sizeof *names)

typedef struct {
  ct_worker_t *w;
  atomic_bool done;
  atomic_long reads;
} name_race_t;

static void *read_names(void *arg) {
  name_race_t *nr = arg;
  while (!atomic_load(&nr->done)) {
    const char *name = ct_worker_name(nr->w);
    bool known = false;
    for (size_t i = 0; i < N_NAMES && !known; i++)
      known = strcmp(name, names[i]) == 0;
    CHECK(known);
    atomic_fetch_add(&nr->reads, 1);
  }
  return NULL;
}

static int run_nothing(ct_worker_run_t *run) {
  (void)run;
  return CT_WORKER_CONTINUE;
}

TEST(names_stay_valid_while_restarts_override_them) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = names[0];
  name_race_t nr = {.done = false, .reads = 0};
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, run_nothing, &o, &nr.w));
  pthread_t readers[2];
  for (int i = 0; i < 2; i++)
    CHECK(pthread_create(&readers[i], NULL, read_names, &nr) == 0);
  ct_worker_start_opts_t so = CT_WORKER_START_OPTS_INIT;
  for (int i = 0; i < 3000; i++) {
    so.name = i % 4 == 0 ? NULL : names[1 + i % 3];
    CHECK_OK(ct_worker_start(nr.w, &so));
    CHECK_EQ_STR(ct_worker_name(nr.w), so.name ? so.name : names[0]);
    CHECK_OK(ct_worker_stop(nr.w, i % 2 ? CT_WORKER_DRAIN : CT_WORKER_DROP, -1));
    if (i == 100)
      WAIT_FOR(atomic_load(&nr.reads) > 0);
  }
  atomic_store(&nr.done, true);
  for (int i = 0; i < 2; i++)
    pthread_join(readers[i], NULL);
  CHECK(atomic_load(&nr.reads) > 0);
  CHECK_OK(ct_worker_free(nr.w));
  stop_and_free(sup);
}

/* An interval worker refused at its creation (a process function nobody
 * registered) closed descriptor 0 on its way out: its timer's descriptor
 * had not been set yet, and read as 0. The caller's descriptors are not
 * the library's to close. */
TEST(an_interval_worker_refused_at_creation_leaves_descriptor_0_open) {
  int fd = open("/dev/null", O_RDONLY);
  CHECK(fd >= 0);
  int saved = dup(0); /* what the test runner gave as standard input, or -1 */
  CHECK(dup2(fd, 0) == 0);
  close(fd);
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.process = "no-such-function";
  o.interval = 1;
  ct_worker_t *w = NULL;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, NULL, &o, &w), CT_ENOENT);
  CHECK(w == NULL);
  CHECK(fcntl(0, F_GETFD) >= 0);
  if (saved >= 0) {
    dup2(saved, 0);
    close(saved);
  } else {
    close(0);
  }
  stop_and_free(sup);
}

int main(void) {
  RUN(an_interval_worker_refused_at_creation_leaves_descriptor_0_open);
  RUN(on_drop_calling_its_worker_hands_many_items_back_without_recursion);
  RUN(waiting_stop_from_on_drop_on_the_run_thread_would_deadlock);
  RUN(event_triggers_accepted_before_a_drain_stop_run);
  RUN(interval_triggers_accepted_before_a_drain_stop_run);
  RUN(interval_worker_without_a_timer_does_not_start);
  RUN(start_on_an_ended_loop_is_refused);
  RUN(names_stay_valid_while_restarts_override_them);
  return check_done();
}
