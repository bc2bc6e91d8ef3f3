/* Background workers on threads of their own: they leave the pool to the
 * tasks and the other workers' runs, whatever its size; each thread is
 * named after its worker and blocks signals; a thread that cannot be
 * started fails the start with an error and a log line; a supervisor stop
 * waits for the threads, and a run that waits for that stop is refused.
 *
 * The library's pthread_create() goes through __wrap_pthread_create()
 * (--wrap, see tests/meson.build), which fails with EAGAIN while the test
 * says so, as RLIMIT_NPROC would. Counts and order only, never durations.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>

#include "gate.h"

int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);

static atomic_bool refuse_threads;

int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg) {
  if (atomic_load(&refuse_threads))
    return EAGAIN;
  return __real_pthread_create(th, attr, fn, arg);
}

static atomic_int thread_errors_logged;

static void count_log(int level, const char *msg, void *data) {
  (void)data;
  if (level == CT_LOG_ERROR && strstr(msg, "could not start a thread for bg-refused"))
    atomic_fetch_add(&thread_errors_logged, 1);
}

/* A started supervisor with `pool` threads and no reservations, and every
 * pool thread already started (min_threads), logging to count_log. */
static ct_supervisor_t *start_small(int pool) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = pool;
  o.min_threads = pool;
  o.log = count_log;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
}

static ct_worker_t *make(ct_supervisor_t *sup, ct_worker_kind_t kind, ct_worker_fn fn,
                         const char *name, void *data) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = name;
  o.data = data;
  if (kind == CT_WORKER_INTERVAL)
    o.interval = 0.005;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, kind, fn, &o, &w));
  return w;
}

/* A background run that holds its thread until its worker is stopped. */
static int run_until_stopped(ct_worker_run_t *run) {
  counter_add(run->data, 1);
  ct_worker_sleep(run->worker, INFINITY);
  return CT_WORKER_CONTINUE;
}

static int run_count(ct_worker_run_t *run) {
  counter_add(run->data, 1);
  return CT_WORKER_CONTINUE;
}

TEST(background_workers_leave_the_pool_to_an_interval_worker) {
  ct_supervisor_t *sup = start_small(2);
  counter_t bg, ticks;
  counter_init(&bg);
  counter_init(&ticks);
  ct_worker_t *a = make(sup, CT_WORKER_BACKGROUND, run_until_stopped, "bg-a", &bg);
  ct_worker_t *b = make(sup, CT_WORKER_BACKGROUND, run_until_stopped, "bg-b", &bg);
  ct_worker_t *tick = make(sup, CT_WORKER_INTERVAL, run_count, "tick", &ticks);
  CHECK_OK(ct_worker_start(a, NULL));
  CHECK_OK(ct_worker_start(b, NULL));
  counter_wait_at_least(&bg, 2); /* both hold their runs now */
  CHECK_OK(ct_worker_start(tick, NULL));
  counter_wait_at_least(&ticks, 5); /* on the pool's two threads, which nobody holds */
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK(s.threads <= 2); /* and no pool thread was added for them */
  CHECK_OK(ct_worker_stop(tick, CT_WORKER_DROP, -1));
  CHECK_OK(ct_worker_stop(a, CT_WORKER_DROP, -1));
  CHECK_OK(ct_worker_stop(b, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(counter_get(&bg), 2);
  CHECK_OK(ct_worker_free(tick));
  CHECK_OK(ct_worker_free(a));
  CHECK_OK(ct_worker_free(b));
  stop_and_free(sup);
  counter_destroy(&bg);
  counter_destroy(&ticks);
}

static json_t *return_one(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return json_integer(1);
}

/* More background workers than pool threads all run at once. */
TEST(background_workers_run_beyond_the_pool_size) {
  ct_supervisor_t *sup = start_small(1);
  counter_t bg;
  counter_init(&bg);
  ct_worker_t *w[4];
  for (int i = 0; i < 4; i++) {
    w[i] = make(sup, CT_WORKER_BACKGROUND, run_until_stopped, NULL, &bg);
    CHECK_OK(ct_worker_start(w[i], NULL));
  }
  counter_wait_at_least(&bg, 4);
  ct_task_t *t = submit(sup, return_one, NULL, CT_PRIORITY_LOW); /* the pool is free */
  CHECK_OK(ct_task_wait(t, 30));
  CHECK(json_integer_value(ct_task_result(t)) == 1);
  ct_task_unref(t);
  for (int i = 0; i < 4; i++) {
    CHECK_OK(ct_worker_stop(w[i], CT_WORKER_DROP, -1));
    CHECK_OK(ct_worker_free(w[i]));
  }
  stop_and_free(sup);
  counter_destroy(&bg);
}

typedef struct {
  char name[32];
  atomic_int blocked; /* 1: every signal tried is blocked; 0: one is not */
  atomic_int ran;
} thread_facts_t;

static int run_look_at_thread(ct_worker_run_t *run) {
  thread_facts_t *f = run->data;
  pthread_getname_np(pthread_self(), f->name, sizeof f->name);
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, NULL, &mask);
  int blocked = sigismember(&mask, SIGINT) && sigismember(&mask, SIGTERM) &&
                sigismember(&mask, SIGUSR1) && sigismember(&mask, SIGCHLD);
  atomic_store(&f->blocked, blocked);
  atomic_store(&f->ran, 1);
  return CT_WORKER_STOP;
}

TEST(background_thread_is_named_after_its_worker_and_blocks_signals) {
  ct_supervisor_t *sup = start_small(2);
  thread_facts_t f = {.blocked = -1};
  /* the kernel keeps 15 bytes of a thread's name */
  ct_worker_t *w = make(sup, CT_WORKER_BACKGROUND, run_look_at_thread, "watcher-of-things", &f);
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_OK(ct_worker_wait(w, -1, NULL, NULL));
  CHECK_EQ_INT(atomic_load(&f.ran), 1);
  CHECK_EQ_STR(f.name, "watcher-of-thin");
  CHECK_EQ_INT(atomic_load(&f.blocked), 1);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

static void count_stop(ct_worker_t *w, ct_worker_end_reason_t reason, int code, void *data) {
  (void)w;
  (void)reason;
  (void)code;
  counter_add(data, 1);
}

TEST(a_thread_that_cannot_start_fails_the_start_with_a_log_line) {
  ct_supervisor_t *sup = start_small(2); /* pool threads exist already */
  counter_t runs, stops;
  counter_init(&runs);
  counter_init(&stops);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = "bg-refused";
  o.data = &runs;
  o.on_stop = count_stop;
  o.hook_data = &stops;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_BACKGROUND, run_until_stopped, &o, &w));
  atomic_store(&refuse_threads, true);
  int rc = ct_worker_start(w, NULL);
  atomic_store(&refuse_threads, false);
  CHECK_EQ_INT(rc, CT_EAGAIN);
  CHECK_EQ_INT(atomic_load(&thread_errors_logged), 1);
  CHECK_EQ_INT(counter_get(&runs), 0);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  int code;
  CHECK_EQ_INT(ct_worker_last_end(w, &code, NULL), CT_WORKER_END_FAILED);
  CHECK_EQ_INT(code, CT_EAGAIN);
  CHECK_EQ_INT(counter_get(&stops), 1); /* told, not silent */
  /* threads can be started again: so can the worker */
  CHECK_OK(ct_worker_start(w, NULL));
  counter_wait_at_least(&runs, 1);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(counter_get(&stops), 2);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
  counter_destroy(&runs);
  counter_destroy(&stops);
}

typedef struct {
  ct_supervisor_t *sup;
  gate_t started, hold;
  atomic_int stop_rc, returned;
} waiter_t;

/* Starts its own supervisor's stop, waiting (refused), then holds until
 * the gate opens, and returns. */
static int run_waits_for_supervisor(ct_worker_run_t *run) {
  waiter_t *x = run->data;
  gate_pass(&x->started);
  atomic_store(&x->stop_rc, ct_supervisor_stop(x->sup, CT_STOP_DRAIN, -1));
  gate_pass(&x->hold);
  atomic_store(&x->returned, 1);
  return CT_WORKER_CONTINUE;
}

/* Opens the run's hold once it waits there, a moment later (so that the
 * test's stop is most likely waiting by then; the test holds either way). */
static void *open_later(void *arg) {
  waiter_t *x = arg;
  gate_wait_arrived(&x->hold, 1);
  check_sleep(0.05);
  gate_open(&x->hold);
  return NULL;
}

TEST(supervisor_stop_waits_for_background_threads) {
  waiter_t x = {.sup = start_small(2)};
  gate_init(&x.started);
  gate_init(&x.hold);
  ct_worker_t *w = make(x.sup, CT_WORKER_BACKGROUND, run_waits_for_supervisor, "bg-wait", &x);
  CHECK_OK(ct_worker_start(w, NULL));
  gate_wait_arrived(&x.started, 1); /* the run is under way */
  gate_open(&x.started);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, open_later, &x) == 0);
  /* Returns only once the run has returned and its thread has let go. */
  CHECK_OK(ct_supervisor_stop(x.sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(atomic_load(&x.returned), 1);
  CHECK_EQ_INT(atomic_load(&x.stop_rc), CT_EDEADLK); /* from its own thread, refused */
  pthread_join(th, NULL);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_supervisor_free(x.sup));
  gate_destroy(&x.started);
  gate_destroy(&x.hold);
}

static int run_held(ct_worker_run_t *run) {
  gate_pass(run->data);
  return CT_WORKER_CONTINUE;
}

/* A run a bounded stop gave up on keeps its thread (and its worker, freed
 * meanwhile) until it returns; the supervisor's stop waits for it. */
TEST(force_stopped_background_run_keeps_its_thread_until_it_returns) {
  ct_supervisor_t *sup = start_small(1);
  gate_t gate;
  gate_init(&gate);
  ct_worker_t *w = make(sup, CT_WORKER_BACKGROUND, run_held, "bg-held", &gate);
  CHECK_OK(ct_worker_start(w, NULL));
  gate_wait_arrived(&gate, 1);
  CHECK_EQ_INT(ct_worker_stop(w, CT_WORKER_DROP, 0.05), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_worker_start(w, NULL), CT_EBUSY); /* its run still executes */
  CHECK_OK(ct_worker_free(w));
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0.05), CT_ETIMEDOUT);
  gate_open(&gate);
  stop_and_free(sup);
  gate_destroy(&gate);
}

int main(void) {
  RUN(background_workers_leave_the_pool_to_an_interval_worker);
  RUN(background_workers_run_beyond_the_pool_size);
  RUN(background_thread_is_named_after_its_worker_and_blocks_signals);
  RUN(a_thread_that_cannot_start_fails_the_start_with_a_log_line);
  RUN(supervisor_stop_waits_for_background_threads);
  RUN(force_stopped_background_run_keeps_its_thread_until_it_returns);
  return check_done();
}
