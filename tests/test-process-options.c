/* Task options of process tasks: a per-task timeout that overrides the
 * pool's task_timeout (the child is killed), and delays (run after the
 * delay; a cancel or a stop during the delay ends them once). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "gate.h"
#include "pool.h"

/* Sleep args.sleep seconds, then answer with our pid. */
static json_t *fn_sleep(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  check_sleep(json_real_value(json_object_get(args, "sleep")));
  return json_integer((json_int_t)getpid());
}

static json_t *fn_echo(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  return json_incref(args);
}

static atomic_int done_calls;
static void count_done(ct_task_t *task, void *data) {
  (void)task;
  (void)data;
  atomic_fetch_add(&done_calls, 1);
}

static atomic_int pool_stopped_warnings;
static void watch_log(int level, const char *msg, void *data) {
  (void)data;
  if (level >= CT_LOG_WARNING && strstr(msg, "the process pool stopped"))
    atomic_fetch_add(&pool_stopped_warnings, 1);
}

static ct_supervisor_t *start_with_pool(double task_timeout, int children) {
  ct_supervisor_opts_t so = CT_SUPERVISOR_OPTS_INIT;
  so.pool_size = 2;
  so.log = watch_log;
  return pool_sup_start(&so, children, task_timeout);
}

static ct_task_t *submit_sleep(ct_supervisor_t *sup, double sleep, double timeout) {
  json_t *args = json_pack("{s:f}", "sleep", sleep);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.timeout = timeout;
  ct_task_t *t;
  CHECK_OK(ct_process_task(sup, "sleep", args, &o, &t));
  json_decref(args);
  return t;
}

TEST(a_process_task_timeout_kills_its_child) {
  ct_supervisor_t *sup = start_with_pool(0, 1); /* one child, no pool timeout */
  ct_task_t *first = submit_sleep(sup, 0, 0);
  CHECK_OK(ct_task_wait(first, WAIT_BOUND_S));
  int pid = (int)json_integer_value(ct_task_result(first)); /* the only child */
  CHECK(pid > 0);
  ct_task_unref(first);
  ct_task_t *t = submit_sleep(sup, 60, 0.3);
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t)), "TimeoutError");
  CHECK(strstr(ct_result_error_str(ct_task_result(t)), "0.3 s") != NULL);
  WAIT_FOR(kill(pid, 0) != 0 && errno == ESRCH); /* killed and reaped */
  json_t *j = ct_supervisor_stats_json(sup);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "processes"), "timeouts")), 1);
  json_decref(j);
  ct_task_unref(t);
  stop_and_free(sup);
}

TEST(a_process_task_timeout_overrides_the_pools) {
  ct_supervisor_t *sup = start_with_pool(0.2, 2);
  ct_task_t *lifted = submit_sleep(sup, 0.5, INFINITY); /* no bound for this one */
  ct_task_t *pools = submit_sleep(sup, 60, 0);           /* 0: the pool's 0.2 s */
  CHECK_OK(ct_task_wait(lifted, WAIT_BOUND_S));
  CHECK_OK(ct_task_wait(pools, WAIT_BOUND_S));
  CHECK(json_is_integer(ct_task_result(lifted)));
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(pools)), "TimeoutError");
  ct_task_unref(lifted);
  ct_task_unref(pools);
  stop_and_free(sup);
}

TEST(a_delayed_process_task_runs_after_its_delay) {
  ct_supervisor_t *sup = start_with_pool(0, 2);
  json_t *args = json_pack("{s:i}", "x", 7);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.delay = 0.2;
  ct_task_t *t;
  double before = ct_now();
  CHECK_OK(ct_process_task(sup, "echo", args, &o, &t));
  json_decref(args); /* borrowed and encoded at once, delay or not */
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  CHECK_EQ_INT(json_integer_value(json_object_get(ct_task_result(t), "x")), 7);
  CHECK(ct_task_time_started(t) >= before + 0.2 - 1e-3); /* a lower bound: never early */
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK_EQ_INT(s.delayed, 0);
  CHECK_EQ_INT(s.submitted, 1);
  ct_task_unref(t);
  stop_and_free(sup);
}

TEST(a_delayed_process_task_canceled_or_stopped_in_its_delay_ends_once) {
  ct_supervisor_t *sup = start_with_pool(0, 2);
  atomic_store(&done_calls, 0);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.delay = 3600;
  o.on_done = count_done;
  ct_task_t *canceled, *by_stop;
  CHECK_OK(ct_process_task(sup, "echo", NULL, &o, &canceled));
  CHECK_EQ_INT(ct_task_status(canceled), CT_TASK_DELAYED);
  CHECK_OK(ct_task_cancel(canceled));
  CHECK_EQ_INT(ct_task_status(canceled), CT_TASK_CANCELED);
  CHECK_EQ_INT(ct_task_cancel(canceled), CT_EALREADY);
  CHECK_EQ_INT(atomic_load(&done_calls), 1);
  CHECK_OK(ct_process_task(sup, "echo", NULL, &o, &by_stop));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(by_stop), CT_TASK_CANCELED);
  CHECK_EQ_INT(atomic_load(&done_calls), 2);
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK_EQ_INT(s.submitted, 2);
  CHECK_EQ_INT(s.canceled, 2);
  CHECK_EQ_INT(s.delayed, 0);
  ct_task_unref(canceled);
  ct_task_unref(by_stop);
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(a_delayed_process_task_whose_pool_stopped_is_canceled_and_said) {
  ct_supervisor_t *sup = start_with_pool(0, 2);
  atomic_store(&done_calls, 0);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.delay = 3; /* the pool stops well before */
  o.on_done = count_done;
  ct_task_t *t;
  CHECK_OK(ct_process_task(sup, "echo", NULL, &o, &t));
  CHECK_OK(ct_process_pool_stop(sup, WAIT_BOUND_S));
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  CHECK_EQ_INT(atomic_load(&done_calls), 1);
  CHECK_EQ_INT(atomic_load(&pool_stopped_warnings), 1);
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK_EQ_INT(s.canceled, 1);
  CHECK_EQ_INT(s.submitted, 1);
  ct_task_unref(t);
  stop_and_free(sup);
}

int main(void) {
  CHECK_OK(ct_process_register("sleep", fn_sleep, NULL));
  CHECK_OK(ct_process_register("echo", fn_echo, NULL));
  RUN(a_process_task_timeout_kills_its_child);
  RUN(a_process_task_timeout_overrides_the_pools);
  RUN(a_delayed_process_task_runs_after_its_delay);
  RUN(a_delayed_process_task_canceled_or_stopped_in_its_delay_ends_once);
  RUN(a_delayed_process_task_whose_pool_stopped_is_canceled_and_said);
  return check_done();
}
