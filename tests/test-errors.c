/* Errors that say what was wrong: names of codes, refusals that tell a
 * supervisor never started from one that stopped, a missing process pool,
 * registration closed while a process pool exists. */
#include <ctasker.h>

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
  wo.process = "echo";
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, NULL, &wo, &w));
  logcap_clear(&cap);
  CHECK_EQ_INT(ct_worker_start(w, NULL), CT_ENOENT);
  CHECK(logcap_has(&cap, "ct_worker_start", "no process pool"));
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

int main(void) {
  CHECK_OK(ct_process_register("echo", child_echo, NULL));
  RUN(err_name_names_success);
  RUN(submission_before_start_says_not_started);
  RUN(submission_after_stop_is_not_called_not_started);
  RUN(missing_process_pool_says_so);
  RUN(registration_is_closed_while_a_process_pool_exists);
  return check_done();
}
