/* Statistics: the counters and the JSON snapshot. */
#include "gate.h"

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

static json_int_t task_count(json_t *js, const char *key) {
  json_t *v = json_object_get(json_object_get(js, "tasks"), key);
  CHECK(json_is_integer(v));
  return json_integer_value(v);
}

static json_int_t pool_value(json_t *js, const char *key) {
  json_t *v = json_object_get(json_object_get(js, "pool"), key);
  CHECK(json_is_integer(v));
  return json_integer_value(v);
}

/* A waiter may wake before the pool thread has counted the task it ran:
 * wait until the pool has counted n finished tasks. */
static void wait_counted(ct_supervisor_t *sup, uint64_t n) {
  double deadline = ct_now() + WAIT_BOUND_S;
  ct_stats_t st;
  for (;;) {
    CHECK_OK(ct_supervisor_stats(sup, &st));
    if (st.completed + st.failed >= n)
      return;
    CHECK(ct_now() < deadline);
    check_sleep(0.001);
  }
}

TEST(counters) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 1;
  o.reserve_normal = 1;
  o.reserve_high = 2;
  o.min_threads = 1;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  ct_stats_t st;
  CHECK_EQ_INT(ct_supervisor_stats(sup, NULL), CT_EINVAL);
  json_t *js = ct_supervisor_stats_json(sup);
  CHECK_EQ_STR(json_string_value(json_object_get(js, "state")), "init");
  json_decref(js);
  CHECK_OK(ct_supervisor_start(sup));

  gate_t gate;
  gate_init(&gate);
  ct_task_t *blocker = submit(sup, gate_task, &gate, CT_PRIORITY_LOW);
  gate_wait_arrived(&gate, 1);
  ct_task_t *ok[3], *bad[2], *queued[4], *delayed[2];
  for (int i = 0; i < 3; i++)
    ok[i] = submit(sup, nothing, NULL, CT_PRIORITY_HIGH);
  for (int i = 0; i < 2; i++)
    bad[i] = submit(sup, fail, NULL, CT_PRIORITY_HIGH);
  CHECK_OK(ct_wait_completed(ok, 3, -1));
  CHECK_OK(ct_wait_completed(bad, 2, -1));
  wait_counted(sup, 5);
  for (int i = 0; i < 4; i++)
    queued[i] = submit(sup, nothing, NULL, CT_PRIORITY_LOW);
  ct_task_opts_t d = CT_TASK_OPTS_INIT;
  d.delay = 3600;
  for (int i = 0; i < 2; i++)
    CHECK_OK(ct_background_task(sup, nothing, NULL, &d, &delayed[i]));

  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.submitted, 1 + 3 + 2 + 4 + 2);
  CHECK_EQ_INT(st.queued, 4);
  CHECK_EQ_INT(st.delayed, 2);
  CHECK(st.running >= 1); /* the blocker; a finished task may still count */
  CHECK(st.threads >= 1 && st.threads <= 4);

  CHECK_OK(ct_task_cancel(queued[0]));
  CHECK_OK(ct_task_cancel(delayed[0]));
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.queued, 3);
  CHECK_EQ_INT(st.delayed, 1);
  CHECK_EQ_INT(st.canceled, 2);

  js = ct_supervisor_stats_json(sup);
  CHECK(js != NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(js, "state")), "running");
  CHECK_EQ_INT(task_count(js, "submitted"), 12);
  CHECK_EQ_INT(task_count(js, "queued"), 3);
  CHECK_EQ_INT(task_count(js, "delayed"), 1);
  CHECK_EQ_INT(task_count(js, "canceled"), 2);
  CHECK_EQ_INT(task_count(js, "failed"), 2);
  CHECK_EQ_INT(task_count(js, "completed"), 3);
  CHECK(task_count(js, "running") >= 1);
  CHECK_EQ_INT(task_count(js, "registered"), 1 + 3 + 1);
  CHECK_EQ_INT(pool_value(js, "size"), 1);
  CHECK_EQ_INT(pool_value(js, "reserve_normal"), 1);
  CHECK_EQ_INT(pool_value(js, "reserve_high"), 2);
  CHECK_EQ_INT(pool_value(js, "min_threads"), 1);
  CHECK_EQ_INT(pool_value(js, "max_threads"), 4);
  CHECK(pool_value(js, "threads") >= 1);
  CHECK(pool_value(js, "threads_idle") >= 0);
  json_decref(js);

  gate_open(&gate);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0));
  js = ct_supervisor_stats_json(sup);
  const char *state = json_string_value(json_object_get(js, "state"));
  CHECK(strcmp(state, "stopping") == 0 || strcmp(state, "stopped") == 0);
  json_decref(js);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));

  /* At rest everything adds up: the delayed one left was canceled by stop. */
  CHECK_OK(ct_supervisor_stats(sup, &st));
  CHECK_EQ_INT(st.submitted, 12);
  CHECK_EQ_INT(st.completed, 1 + 3 + 3);
  CHECK_EQ_INT(st.failed, 2);
  CHECK_EQ_INT(st.canceled, 3);
  CHECK_EQ_INT(st.completed + st.failed + st.canceled, st.submitted);
  CHECK_EQ_INT(st.queued + st.delayed + st.running + st.threads, 0);
  js = ct_supervisor_stats_json(sup);
  CHECK_EQ_STR(json_string_value(json_object_get(js, "state")), "stopped");
  CHECK_EQ_INT(task_count(js, "registered"), 0);
  json_decref(js);

  ct_task_unref(blocker);
  for (int i = 0; i < 3; i++)
    ct_task_unref(ok[i]);
  for (int i = 0; i < 2; i++) {
    ct_task_unref(bad[i]);
    ct_task_unref(delayed[i]);
  }
  for (int i = 0; i < 4; i++)
    ct_task_unref(queued[i]);
  CHECK_OK(ct_supervisor_free(sup));
  gate_destroy(&gate);
}

/* The JSON snapshot prints (a dashboard's use). */
TEST(json_dumps) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  json_t *js = ct_supervisor_stats_json(sup);
  char *text = json_dumps(js, JSON_COMPACT);
  CHECK(text != NULL);
  CHECK(strstr(text, "\"state\":\"running\"") != NULL);
  free(text);
  json_decref(js);
  stop_and_free(sup);
}

int main(void) {
  RUN(counters);
  RUN(json_dumps);
  return check_done();
}
