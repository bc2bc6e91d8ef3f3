/* Triggering an event worker from a real signal handler: raise() and
 * kill() from another thread reach the handler, which calls
 * ct_event_worker_signal(); the worker runs once per trigger (signals that
 * come before the run merge, a forced one adds a run), errno survives the
 * call, and a worker that is not running refuses. Counts only, never
 * durations. */
#include <ctasker.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gate.h"

static ct_worker_t *_Atomic target;
static volatile sig_atomic_t handler_rc, handler_errno_kept, handled;
static volatile sig_atomic_t handler_force;

static void on_usr1(int sig) {
  (void)sig;
  int saved = errno; /* a handler leaves errno as it found it */
  errno = EBADF;     /* a value to see kept */
  handler_rc = ct_event_worker_signal(atomic_load(&target), handler_force);
  handler_errno_kept = errno == EBADF;
  handled = handled + 1;
  errno = saved;
}

/* Raise SIGUSR1 and wait for its handler to have run (a sanitizer may
 * deliver it a little later). */
static void raise_handled(void) {
  sig_atomic_t before = handled;
  CHECK(raise(SIGUSR1) == 0);
  WAIT_FOR(handled == before + 1);
}

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
}

typedef struct {
  counter_t runs;
  gate_t gate;
  atomic_bool hold;
} rec_t;

static int count_run(ct_worker_run_t *run) {
  rec_t *r = run->data;
  counter_add(&r->runs, 1);
  if (atomic_load(&r->hold))
    gate_pass(&r->gate);
  return CT_WORKER_CONTINUE;
}

static ct_worker_t *make_event(ct_supervisor_t *sup, rec_t *r) {
  counter_init(&r->runs);
  gate_init(&r->gate);
  atomic_init(&r->hold, false);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = "on-signal";
  o.data = r;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, count_run, &o, &w));
  return w;
}

static void *kill_from_another_thread(void *arg) {
  (void)arg;
  CHECK(kill(getpid(), SIGUSR1) == 0);
  return NULL;
}

TEST(a_signal_handler_triggers_an_event_worker) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  ct_worker_t *w = make_event(sup, &r);
  CHECK_OK(ct_worker_start(w, NULL));
  atomic_store(&target, w);
  install();
  handler_force = 1; /* one run per signal, also if the last run is still ending */
  for (long k = 1; k <= 3; k++) {
    raise_handled();
    CHECK_EQ_INT(handler_rc, 0);
    CHECK_EQ_INT(handler_errno_kept, 1);
    counter_wait_at_least(&r.runs, k);
  }
  pthread_t th; /* delivered to whichever thread does not block it */
  CHECK(pthread_create(&th, NULL, kill_from_another_thread, NULL) == 0);
  pthread_join(th, NULL);
  WAIT_FOR(handled == 4); /* the one kill() above */
  CHECK_EQ_INT(handler_rc, 0);
  counter_wait_at_least(&r.runs, 4);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(counter_get(&r.runs), 4);
  /* a worker that is not running refuses at once */
  raise_handled();
  CHECK_EQ_INT(handler_rc, CT_ESHUTDOWN);
  signal(SIGUSR1, SIG_IGN);
  atomic_store(&target, NULL);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  counter_destroy(&r.runs);
  gate_destroy(&r.gate);
}

static void hold_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  gate_pass(data);
}

static void count_call(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  counter_add(data, 1);
}

/* Return once the supervisor's loop has passed on every mark made before
 * the call: a loop runs its messages, then its kicks, so the second of two
 * messages posted one after the other runs after the kicks pending at the
 * first. */
static void loop_barrier(ct_supervisor_t *sup) {
  counter_t calls;
  counter_init(&calls);
  for (long k = 1; k <= 2; k++) {
    CHECK_OK(ct_loop_call(ct_supervisor_loop(sup), count_call, &calls));
    counter_wait_at_least(&calls, k);
  }
  counter_destroy(&calls);
}

TEST(signals_merge_and_during_a_run_count_only_when_forced) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  rec_t r;
  ct_worker_t *w = make_event(sup, &r);
  CHECK_OK(ct_worker_start(w, NULL));
  atomic_store(&target, w);
  install();
  atomic_store(&r.hold, true);
  /* three signals while the loop is busy: one trigger, one run */
  gate_t busy;
  gate_init(&busy);
  CHECK_OK(ct_loop_call(ct_supervisor_loop(sup), hold_loop, &busy));
  gate_wait_arrived(&busy, 1);
  handler_force = 0;
  for (int k = 0; k < 3; k++)
    raise_handled();
  gate_open(&busy);
  gate_wait_arrived(&r.gate, 1); /* the run holds */
  for (int k = 0; k < 3; k++) /* not forced, while it runs: ignored */
    raise_handled();
  loop_barrier(sup);
  handler_force = 1;
  for (int k = 0; k < 3; k++) /* forced, while it runs: one more run */
    raise_handled();
  loop_barrier(sup);
  CHECK_EQ_INT(handler_rc, 0);
  atomic_store(&r.hold, false);
  gate_open(&r.gate);
  counter_wait_at_least(&r.runs, 2);
  signal(SIGUSR1, SIG_IGN);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
  CHECK_EQ_INT(counter_get(&r.runs), 2);
  atomic_store(&target, NULL);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  counter_destroy(&r.runs);
  gate_destroy(&r.gate);
  gate_destroy(&busy);
}

/* A mark the loop thread has not passed on when a stop comes: the stop
 * wins, the trigger is dropped and said (worker.h). It ran in the next
 * start instead, unsaid; and a worker freed after its stop lost it unsaid. */
static atomic_int dropped_said;

static void count_dropped(int level, const char *msg, void *data) {
  (void)data;
  if (level == CT_LOG_WARNING && strstr(msg, "came after its stop; dropped"))
    atomic_fetch_add(&dropped_said, 1);
}

static void mark_then_stop_while_the_loop_is_held(bool free_it) {
  ct_supervisor_t *sup = start_supervisor_logging(2, count_dropped);
  atomic_store(&dropped_said, 0);
  rec_t r;
  ct_worker_t *w = make_event(sup, &r);
  CHECK_OK(ct_worker_start(w, NULL));
  gate_t busy;
  gate_init(&busy);
  CHECK_OK(ct_loop_call(ct_supervisor_loop(sup), hold_loop, &busy));
  gate_wait_arrived(&busy, 1);
  CHECK_OK(ct_event_worker_signal(w, true));
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  if (free_it)
    CHECK_OK(ct_worker_free(w));
  else
    CHECK_OK(ct_worker_start(w, NULL));
  gate_open(&busy);
  loop_barrier(sup);
  CHECK_EQ_INT(counter_get(&r.runs), 0);
  CHECK_EQ_INT(atomic_load(&dropped_said), 1);
  if (!free_it) {
    CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
    CHECK_OK(ct_worker_free(w));
  }
  stop_and_free(sup);
  counter_destroy(&r.runs);
  gate_destroy(&r.gate);
  gate_destroy(&busy);
}

TEST(a_mark_from_before_a_stop_is_dropped_and_said_not_run_after_a_restart) {
  mark_then_stop_while_the_loop_is_held(false);
}

TEST(a_mark_from_before_a_stop_is_said_dropped_when_the_worker_is_freed) {
  mark_then_stop_while_the_loop_is_held(true);
}

TEST(signal_bad_input) {
  CHECK_EQ_INT(ct_event_worker_signal(NULL, false), CT_EINVAL);
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_worker_t *q;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, count_run, NULL, &q));
  CHECK_EQ_INT(ct_event_worker_signal(q, false), CT_EINVAL);
  CHECK_OK(ct_worker_free(q));
  rec_t r;
  ct_worker_t *w = make_event(sup, &r);
  CHECK_EQ_INT(ct_event_worker_signal(w, false), CT_ESHUTDOWN); /* never started */
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  counter_destroy(&r.runs);
  gate_destroy(&r.gate);
}

int main(void) {
  RUN(a_signal_handler_triggers_an_event_worker);
  RUN(signals_merge_and_during_a_run_count_only_when_forced);
  RUN(a_mark_from_before_a_stop_is_dropped_and_said_not_run_after_a_restart);
  RUN(a_mark_from_before_a_stop_is_said_dropped_when_the_worker_is_freed);
  RUN(signal_bad_input);
  return check_done();
}
