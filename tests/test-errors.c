/* Errors that say what was wrong: names of codes, refusals that tell a
 * supervisor never started from one that stopped, a missing process pool,
 * registration closed while a process pool exists. */
#include <ctasker.h>
#include <math.h>

#include "check.h"
#include "logcap.h"

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

static int idle_run(ct_worker_run_t *run) {
  (void)run;
  return CT_WORKER_CONTINUE;
}

static json_t *child_echo(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  return json_incref(args);
}

static ct_supervisor_t *new_logged(logcap_t *cap) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 1;
  o.log = logcap_fn;
  o.log_data = cap;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  return sup;
}

TEST(err_name_names_success) {
  CHECK_EQ_STR(ct_err_name(0), "CT_OK");
  CHECK_EQ_INT(CT_OK, 0);
  CHECK_EQ_STR(ct_strerror(CT_OK), "success");
  CHECK_EQ_STR(ct_err_name(CT_EINVAL), "CT_EINVAL");
  CHECK_EQ_STR(ct_err_name(12345), "CT_UNKNOWN");
}

TEST(submission_before_start_says_not_started) {
  logcap_t cap;
  logcap_init(&cap);
  ct_supervisor_t *sup = new_logged(&cap);
  CHECK_EQ_INT(ct_background_task(sup, nothing, NULL, NULL, NULL), CT_ESHUTDOWN);
  CHECK(logcap_has(&cap, "ct_background_task", "not started"));
  ct_loop_t *loop;
  CHECK_EQ_INT(ct_loop_create(sup, "x", &loop), CT_ESHUTDOWN);
  CHECK(logcap_has(&cap, "ct_loop_create", "not started"));
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, idle_run, NULL, &w));
  CHECK_EQ_INT(ct_worker_start(w, NULL), CT_ESHUTDOWN);
  CHECK(logcap_has(&cap, "ct_worker_start", "not started"));
  CHECK(!logcap_has(&cap, "stopped", NULL));
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(submission_after_stop_is_not_called_not_started) {
  logcap_t cap;
  logcap_init(&cap);
  ct_supervisor_t *sup = new_logged(&cap);
  CHECK_OK(ct_supervisor_start(sup));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  logcap_clear(&cap);
  CHECK_EQ_INT(ct_background_task(sup, nothing, NULL, NULL, NULL), CT_ESHUTDOWN);
  CHECK(!logcap_has(&cap, "not started", NULL));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(missing_process_pool_says_so) {
  logcap_t cap;
  logcap_init(&cap);
  ct_supervisor_t *sup = new_logged(&cap);
  CHECK_OK(ct_supervisor_start(sup));
  CHECK_EQ_INT(ct_process_task(sup, "echo", NULL, NULL, NULL), CT_ENOENT);
  CHECK(logcap_has(&cap, "ct_process_task", "no process pool"));
  ct_worker_opts_t wo = CT_WORKER_OPTS_INIT;
  wo.process = "never.registered";
  ct_worker_t *w;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_EVENT, NULL, &wo, &w), CT_ENOENT);
  CHECK(logcap_has(&cap, "ct_worker_opts_t.process", "\"never.registered\" is registered"));
  wo.process = "echo";
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, NULL, &wo, &w));
  logcap_clear(&cap);
  CHECK_EQ_INT(ct_worker_start(w, NULL), CT_ENOENT);
  CHECK(logcap_has(&cap, "ct_worker_start", "no process pool"));
  /* Nor does a group start it as if it had been freed: the group's start
   * fails with the member's answer, and the log says why. */
  ct_worker_group_t *g;
  CHECK_OK(ct_worker_group_new(NULL, &g));
  CHECK_OK(ct_worker_group_add(g, w));
  logcap_clear(&cap);
  CHECK_EQ_INT(ct_worker_group_start(g, NULL), CT_ENOENT);
  CHECK(logcap_has(&cap, "ct_worker_start", "no process pool"));
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_INIT);
  CHECK_OK(ct_worker_group_free(g));
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(registration_is_closed_while_a_process_pool_exists) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
  po.pool_size = 1;
  CHECK_OK(ct_process_pool_create(sup, &po));
  CHECK_EQ_INT(ct_process_register("late", child_echo, NULL), CT_ENOTSUP);
  /* Nothing was registered: the running pool answers as it always did. */
  ct_task_t *t;
  CHECK_OK(ct_process_task(sup, "late", NULL, NULL, &t));
  CHECK_OK(ct_task_wait(t, 30));
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t)), "UnknownTask");
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(ct_process_register("late", child_echo, NULL), CT_ENOTSUP);
  CHECK_OK(ct_supervisor_free(sup));
  /* No pool left: registration is open again, for pools created later. */
  CHECK_OK(ct_process_register("late", child_echo, NULL));
}

TEST(supervisor_options_name_the_bad_field) {
  logcap_t cap;
  logcap_init(&cap);
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.log = logcap_fn;
  o.log_data = &cap;
  o.pool_size = -1;
  o.idle_spin = 0.5;
  ct_supervisor_t *sup;
  CHECK_EQ_INT(ct_supervisor_new(&o, &sup), CT_EINVAL);
  CHECK(sup == NULL);
  /* Every bad field is told, each with its reason. */
  CHECK(logcap_has(&cap, "ct_supervisor_opts_t.pool_size", "-1 is out of range"));
  CHECK(logcap_has(&cap, "ct_supervisor_opts_t.idle_spin", "at most 0.001"));
  CHECK_EQ_INT(logcap_lines(&cap), 2);
  logcap_clear(&cap);
  o = (ct_supervisor_opts_t)CT_SUPERVISOR_OPTS_INIT;
  o.log = logcap_fn;
  o.log_data = &cap;
  o.pool_size = 2;
  o.min_threads = 3;
  o.keepalive = NAN;
  CHECK_EQ_INT(ct_supervisor_new(&o, &sup), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_supervisor_opts_t.keepalive", "NaN"));
  logcap_clear(&cap);
  o.keepalive = 0;
  CHECK_EQ_INT(ct_supervisor_new(&o, &sup), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_supervisor_opts_t.min_threads",
                   "3: from 0 to pool_size + reserve_normal + reserve_high (2)"));
  /* A size this library does not know: the struct's callback is not to be
   * trusted then, so nothing is called; the code alone says it. */
  logcap_clear(&cap);
  o.min_threads = 0;
  o.size = 3;
  CHECK_EQ_INT(ct_supervisor_new(&o, &sup), CT_EINVAL);
  CHECK_EQ_INT(logcap_lines(&cap), 0);
}

TEST(task_options_name_the_bad_field) {
  logcap_t cap;
  logcap_init(&cap);
  ct_supervisor_t *sup = new_logged(&cap);
  CHECK_OK(ct_supervisor_start(sup));
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.priority = 300;
  CHECK_EQ_INT(ct_background_task(sup, nothing, NULL, &o, NULL), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_background_task: invalid ct_task_opts_t.priority",
                   "300 is out of range (0 to 255)"));
  o = (ct_task_opts_t)CT_TASK_OPTS_INIT;
  o.delay = INFINITY;
  CHECK_EQ_INT(ct_background_task(sup, nothing, NULL, &o, NULL), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_task_opts_t.delay", "must be finite"));
  o = (ct_task_opts_t)CT_TASK_OPTS_INIT;
  o.size = 1;
  CHECK_EQ_INT(ct_background_task(sup, nothing, NULL, &o, NULL), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_task_opts_t.size", "1 is not a size this library knows"));
  ct_supervisor_t *other = new_logged(&cap);
  CHECK_OK(ct_supervisor_start(other));
  o = (ct_task_opts_t)CT_TASK_OPTS_INIT;
  o.loop = ct_supervisor_loop(other);
  CHECK_EQ_INT(ct_background_task(sup, nothing, NULL, &o, NULL), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_task_opts_t.loop", "not a loop of this supervisor"));
  CHECK_OK(ct_supervisor_stop(other, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(other));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(worker_options_name_the_bad_field) {
  logcap_t cap;
  logcap_init(&cap);
  ct_supervisor_t *sup = new_logged(&cap);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  ct_worker_t *w;
  o.priority = -5;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_EVENT, idle_run, &o, &w), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_worker_new: invalid ct_worker_opts_t.priority", "-5"));
  o = (ct_worker_opts_t)CT_WORKER_OPTS_INIT;
  o.process = "echo";
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_EVENT, idle_run, &o, &w), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_worker_opts_t.process", "give one of them"));
  o = (ct_worker_opts_t)CT_WORKER_OPTS_INIT;
  o.interval = 1;
  o.delay = 1;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_INTERVAL, idle_run, &o, &w), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_worker_opts_t.interval", "exactly one of interval and delay"));
  o.delay = 0;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_INTERVAL, idle_run, &o, &w));
  ct_worker_start_opts_t so = CT_WORKER_START_OPTS_INIT;
  so.priority = 999;
  so.delay_before = NAN;
  logcap_clear(&cap);
  CHECK_EQ_INT(ct_worker_start(w, &so), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_worker_start: invalid ct_worker_start_opts_t.priority", "999"));
  so.priority = -1;
  CHECK_EQ_INT(ct_worker_start(w, &so), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_worker_start_opts_t.delay_before", "NaN"));
  CHECK_OK(ct_worker_free(w));
  CHECK_OK(ct_supervisor_free(sup));
}

TEST(process_options_name_the_bad_field) {
  logcap_t cap;
  logcap_init(&cap);
  ct_supervisor_t *sup = new_logged(&cap);
  ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
  po.pool_size = 0;
  po.task_timeout = -2;
  CHECK_EQ_INT(ct_process_pool_create(sup, &po), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_process_pool_create: invalid ct_process_pool_opts_t.pool_size",
                   "0 is out of range (1 to 4096)"));
  CHECK(logcap_has(&cap, "ct_process_pool_opts_t.task_timeout", "must not be negative"));
  CHECK_OK(ct_supervisor_start(sup));
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.arg_free = free;
  logcap_clear(&cap);
  CHECK_EQ_INT(ct_process_task(sup, "echo", NULL, &o, NULL), CT_EINVAL);
  CHECK(logcap_has(&cap, "ct_process_task: invalid ct_task_opts_t.arg_free", NULL));
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

int main(void) {
  CHECK_OK(ct_process_register("echo", child_echo, NULL));
  RUN(err_name_names_success);
  RUN(submission_before_start_says_not_started);
  RUN(submission_after_stop_is_not_called_not_started);
  RUN(missing_process_pool_says_so);
  RUN(registration_is_closed_while_a_process_pool_exists);
  RUN(supervisor_options_name_the_bad_field);
  RUN(task_options_name_the_bad_field);
  RUN(worker_options_name_the_bad_field);
  RUN(process_options_name_the_bad_field);
  return check_done();
}
