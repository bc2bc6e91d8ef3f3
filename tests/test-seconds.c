/* Seconds at the edges: every public call and option that takes seconds,
 * given NAN, INFINITY, DBL_MAX, 1e19 and a negative value. NaN is refused;
 * a huge or infinite timeout waits without a bound (it does not time out at
 * once); a huge keepalive lets idle threads sleep, not spin. */
#include <ctasker.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"
#include "gate.h"

static const double huge[] = {INFINITY, DBL_MAX, 1e19};
#define N_HUGE (sizeof huge / sizeof huge[0])

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

/* Opens a gate from another thread a little later, so that a call waiting
 * for what the gate holds has begun to wait (no duration is asserted: the
 * call must return 0 whenever the gate opens). */
typedef struct {
  gate_t *gate;
  pthread_t thread;
} opener_t;

static void *open_later(void *arg) {
  opener_t *o = arg;
  check_sleep(0.05);
  gate_open(o->gate);
  return NULL;
}

static void open_soon(opener_t *o, gate_t *gate) {
  o->gate = gate;
  CHECK_OK(pthread_create(&o->thread, NULL, open_later, o));
}

static void opened(opener_t *o) { CHECK_OK(pthread_join(o->thread, NULL)); }

static ct_supervisor_t *new_with(ct_supervisor_opts_t *o, int *rc) {
  ct_supervisor_t *sup = NULL;
  *rc = ct_supervisor_new(o, &sup);
  return sup;
}

TEST(supervisor_options) {
  double *fields[4];
  for (int f = 0; f < 4; f++) {
    ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
    fields[0] = &o.keepalive;
    fields[1] = &o.timeout_warning;
    fields[2] = &o.timeout_critical;
    fields[3] = &o.idle_spin;
    int rc;
    *fields[f] = NAN;
    CHECK(new_with(&o, &rc) == NULL && rc == CT_EINVAL);
    *fields[f] = -1;
    CHECK(new_with(&o, &rc) == NULL && rc == CT_EINVAL);
    for (size_t i = 0; i < N_HUGE; i++) {
      *fields[f] = huge[i];
      ct_supervisor_t *sup = new_with(&o, &rc);
      if (f == 3) { /* idle_spin is at most 0.001 */
        CHECK(sup == NULL && rc == CT_EINVAL);
        continue;
      }
      CHECK_OK(rc);
      CHECK_OK(ct_supervisor_start(sup));
      ct_task_t *t = submit(sup, nothing, NULL, CT_PRIORITY_NORMAL);
      CHECK_OK(ct_task_wait(t, -1));
      CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
      ct_task_unref(t);
      stop_and_free(sup);
    }
  }
}

static int run_count(ct_worker_run_t *run) {
  atomic_fetch_add((atomic_int *)run->data, 1);
  return CT_WORKER_CONTINUE;
}

static int run_gated(ct_worker_run_t *run) {
  gate_pass(run->data);
  return CT_WORKER_CONTINUE;
}

static void call_gated(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  gate_pass(data);
}

static json_t *fn_sleep(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  check_sleep(json_real_value(args));
  return json_integer(1);
}

TEST(nan_is_invalid_everywhere) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_task_t *t = submit(sup, nothing, NULL, CT_PRIORITY_NORMAL);
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(ct_task_wait(t, NAN), CT_EINVAL);
  CHECK_EQ_INT(ct_wait_completed(&t, 1, NAN), CT_EINVAL);
  CHECK_EQ_INT(ct_wait_completed(NULL, 0, NAN), CT_EINVAL);
  ct_task_unref(t);

  ct_loop_t *loop;
  CHECK_OK(ct_loop_create(sup, "nan", &loop));
  CHECK_EQ_INT(ct_loop_stop(loop, NAN), CT_EINVAL);
  CHECK_OK(ct_loop_stop(loop, -1));

  ct_task_opts_t to = CT_TASK_OPTS_INIT;
  to.delay = NAN;
  CHECK_EQ_INT(ct_background_task(sup, nothing, NULL, &to, NULL), CT_EINVAL);
  to.delay = -1;
  CHECK_EQ_INT(ct_background_task(sup, nothing, NULL, &to, NULL), CT_EINVAL);

  double bad_timing[] = {NAN, INFINITY, -1};
  for (int i = 0; i < 3; i++) {
    for (int f = 0; f < 3; f++) {
      ct_worker_opts_t wo = CT_WORKER_OPTS_INIT;
      wo.interval = 1;
      double *field = f == 0 ? &wo.interval : f == 1 ? &wo.delay : &wo.delay_before;
      if (f == 1)
        wo.interval = 0;
      *field = bad_timing[i];
      ct_worker_t *w = NULL;
      CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, run_count, &wo, &w), CT_EINVAL);
      CHECK(w == NULL);
    }
  }

  atomic_int runs = 0;
  ct_worker_opts_t wo = CT_WORKER_OPTS_INIT;
  wo.interval = 1000;
  wo.data = &runs;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_INTERVAL, run_count, &wo, &w));
  for (int f = 0; f < 3; f++) {
    ct_worker_start_opts_t so = CT_WORKER_START_OPTS_INIT;
    *(f == 0 ? &so.interval : f == 1 ? &so.delay : &so.delay_before) = NAN;
    CHECK_EQ_INT(ct_worker_start(w, &so), CT_EINVAL);
    CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_INIT);
    *(f == 0 ? &so.interval : f == 1 ? &so.delay : &so.delay_before) = INFINITY;
    CHECK_EQ_INT(ct_worker_start(w, &so), CT_EINVAL); /* delays are finite */
    CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_INIT);
  }
  CHECK_OK(ct_worker_start(w, NULL));
  CHECK_EQ_INT(ct_worker_stop(w, CT_WORKER_DRAIN, NAN), CT_EINVAL);
  ct_worker_group_t *g;
  CHECK_OK(ct_worker_group_new(NULL, &g));
  CHECK_OK(ct_worker_group_add(g, w));
  CHECK_EQ_INT(ct_worker_group_stop(g, CT_WORKER_DRAIN, NAN), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_RUNNING);
  CHECK_OK(ct_worker_group_stop(g, CT_WORKER_DRAIN, -1));
  CHECK_OK(ct_worker_group_free(g));
  CHECK_OK(ct_worker_free(w));

  ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
  po.task_timeout = NAN;
  CHECK_EQ_INT(ct_process_pool_create(sup, &po), CT_EINVAL);
  po.task_timeout = -1;
  CHECK_EQ_INT(ct_process_pool_create(sup, &po), CT_EINVAL);
  CHECK_EQ_INT(ct_process_pool_stop(sup, NAN), CT_EINVAL);
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_DRAIN, NAN), CT_EINVAL);
  stop_and_free(sup);

  CHECK_OK(ct_default_start(NULL));
  CHECK_EQ_INT(ct_default_stop(CT_STOP_DRAIN, NAN), CT_EINVAL);
  CHECK(ct_supervisor_default() != NULL); /* refused: still installed */
  CHECK_OK(ct_default_stop(CT_STOP_DRAIN, INFINITY));
}

/* A huge timeout waits until the task is done, as a negative one does. */
TEST(huge_timeouts_wait_for_tasks) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  double all[N_HUGE + 1];
  for (size_t i = 0; i < N_HUGE; i++)
    all[i] = huge[i];
  all[N_HUGE] = -1;
  for (size_t i = 0; i < N_HUGE + 1; i++) {
    for (int list = 0; list < 2; list++) {
      gate_t gate;
      gate_init(&gate);
      ct_task_t *t = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
      opener_t o;
      open_soon(&o, &gate);
      CHECK_OK(list ? ct_wait_completed(&t, 1, all[i]) : ct_task_wait(t, all[i]));
      CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
      opened(&o);
      ct_task_unref(t);
      gate_destroy(&gate);
    }
  }
  stop_and_free(sup);
}

TEST(huge_timeouts_wait_for_stops) {
  for (size_t i = 0; i < N_HUGE; i++) {
    /* The supervisor's stop waits for its running task. */
    ct_supervisor_t *sup = start_supervisor(2, 0, 0);
    gate_t gate;
    gate_init(&gate);
    ct_task_t *t = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
    gate_wait_arrived(&gate, 1);
    opener_t o;
    open_soon(&o, &gate);
    CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, huge[i]));
    CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
    opened(&o);
    ct_task_unref(t);
    CHECK_OK(ct_supervisor_free(sup));
    gate_destroy(&gate);

    /* A worker's stop and a group's stop wait for the current run, and
     * do not force-stop the worker. */
    sup = start_supervisor(2, 0, 0);
    for (int grouped = 0; grouped < 2; grouped++) {
      gate_init(&gate);
      ct_worker_opts_t wo = CT_WORKER_OPTS_INIT;
      wo.data = &gate;
      ct_worker_t *w;
      CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, run_gated, &wo, &w));
      ct_worker_group_t *g = NULL;
      if (grouped) {
        CHECK_OK(ct_worker_group_new(NULL, &g));
        CHECK_OK(ct_worker_group_add(g, w));
      }
      CHECK_OK(ct_worker_start(w, NULL));
      CHECK_OK(ct_event_worker_trigger(w, false));
      gate_wait_arrived(&gate, 1);
      open_soon(&o, &gate);
      CHECK_OK(grouped ? ct_worker_group_stop(g, CT_WORKER_DRAIN, huge[i])
                       : ct_worker_stop(w, CT_WORKER_DRAIN, huge[i]));
      CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
      opened(&o);
      if (g)
        CHECK_OK(ct_worker_group_free(g));
      CHECK_OK(ct_worker_free(w));
      gate_destroy(&gate);
    }

    /* An extra loop's stop waits for the call it runs. */
    gate_init(&gate);
    ct_loop_t *loop;
    CHECK_OK(ct_loop_create(sup, "huge", &loop));
    CHECK_OK(ct_loop_call(loop, call_gated, &gate));
    gate_wait_arrived(&gate, 1);
    open_soon(&o, &gate);
    CHECK_OK(ct_loop_stop(loop, huge[i]));
    CHECK_EQ_INT(ct_loop_call(loop, call_gated, &gate), CT_ESHUTDOWN); /* it has ended */
    opened(&o);
    gate_destroy(&gate);
    stop_and_free(sup);
  }
}

/* The process pool: a huge task_timeout is no limit; the pool's stop waits
 * for its running task. */
TEST(huge_seconds_in_the_process_pool) {
  for (size_t i = 0; i < N_HUGE; i++) {
    ct_supervisor_t *sup = start_supervisor(2, 0, 0);
    ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
    po.pool_size = 1;
    po.task_timeout = huge[i];
    CHECK_OK(ct_process_pool_create(sup, &po));
    json_t *args = json_real(0.1);
    ct_task_t *t;
    CHECK_OK(ct_process_task(sup, "sleep", args, NULL, &t));
    CHECK_OK(ct_task_wait(t, huge[i]));
    CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
    CHECK(!ct_task_failed(t));
    ct_task_unref(t);
    CHECK_OK(ct_process_task(sup, "sleep", args, NULL, &t));
    json_decref(args);
    CHECK_OK(ct_process_pool_stop(sup, huge[i]));
    CHECK(ct_task_is_terminal(t));
    CHECK(!ct_task_failed(t));
    ct_task_unref(t);
    stop_and_free(sup);
  }
}

/* A huge delay is accepted: the task waits (DELAYED) until canceled. */
TEST(huge_delays_wait_until_canceled) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  for (size_t i = 0; i < N_HUGE; i++) {
    ct_task_opts_t to = CT_TASK_OPTS_INIT;
    to.delay = huge[i];
    ct_task_t *t;
    int rc = ct_background_task(sup, nothing, NULL, &to, &t);
    if (isinf(huge[i])) {
      CHECK_EQ_INT(rc, CT_EINVAL); /* a delay must be finite */
      continue;
    }
    CHECK_OK(rc);
    CHECK_EQ_INT(ct_task_status(t), CT_TASK_DELAYED);
    CHECK_EQ_INT(ct_task_wait(t, 0.05), CT_ETIMEDOUT);
    CHECK_OK(ct_task_cancel(t));
    CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
    ct_task_unref(t);
  }
  stop_and_free(sup);
}

/* An interval worker with a huge delay runs once at its start, then only
 * when triggered: the timer is not taken as already due. */
TEST(huge_worker_delays_do_not_fire) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  for (size_t i = 1; i < N_HUGE; i++) {
    for (int f = 0; f < 2; f++) {
      atomic_int runs = 0;
      ct_worker_opts_t wo = CT_WORKER_OPTS_INIT;
      wo.data = &runs;
      *(f == 0 ? &wo.interval : &wo.delay) = huge[i];
      ct_worker_t *w;
      CHECK_OK(ct_worker_new(sup, CT_WORKER_INTERVAL, run_count, &wo, &w));
      CHECK_OK(ct_worker_start(w, NULL));
      WAIT_FOR(atomic_load(&runs) == 1);
      check_sleep(0.2); /* a timer taken as due would run it again by now */
      CHECK_EQ_INT(atomic_load(&runs), 1);
      CHECK_OK(ct_event_worker_trigger(w, false));
      WAIT_FOR(atomic_load(&runs) == 2);
      CHECK_OK(ct_worker_stop(w, CT_WORKER_DRAIN, -1));
      CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
      CHECK_OK(ct_worker_free(w));
    }
  }
  stop_and_free(sup);
}

static double process_cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Idle pool threads with a huge keepalive sleep: over about a second the
 * whole process uses little CPU (two spinning threads would use about a
 * second or more; the bound is generous for a busy machine). */
TEST(huge_keepalive_does_not_spin) {
  const double keepalive[] = {1e300, DBL_MAX, 1e19, INFINITY};
  for (size_t i = 0; i < 4; i++) {
    ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
    o.pool_size = 2;
    o.min_threads = 1;
    o.keepalive = keepalive[i];
    ct_supervisor_t *sup;
    CHECK_OK(ct_supervisor_new(&o, &sup));
    CHECK_OK(ct_supervisor_start(sup));
    gate_t gate;
    gate_init(&gate);
    ct_task_t *t[2] = {submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL),
                       submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL)};
    gate_wait_arrived(&gate, 2); /* two threads live */
    gate_open(&gate);
    CHECK_OK(ct_wait_completed(t, 2, -1));
    ct_stats_t s = CT_STATS_INIT;
    WAIT_FOR(ct_supervisor_stats(sup, &s) == 0 && s.running == 0);
    double cpu0 = process_cpu_seconds();
    check_sleep(1.0);
    double used = process_cpu_seconds() - cpu0;
    fprintf(stderr, "   keepalive %g: %.3f s CPU in 1 s idle\n", keepalive[i], used);
    CHECK(used < 0.3);
    for (int k = 0; k < 2; k++)
      ct_task_unref(t[k]);
    stop_and_free(sup);
    gate_destroy(&gate);
  }
}

int main(void) {
  CHECK_OK(ct_process_register("sleep", fn_sleep, NULL));
  RUN(supervisor_options);
  RUN(nan_is_invalid_everywhere);
  RUN(huge_timeouts_wait_for_tasks);
  RUN(huge_timeouts_wait_for_stops);
  RUN(huge_seconds_in_the_process_pool);
  RUN(huge_delays_wait_until_canceled);
  RUN(huge_worker_delays_do_not_fire);
  RUN(huge_keepalive_does_not_spin);
  return check_done();
}
