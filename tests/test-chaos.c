/* Allocation failure ("chaos"): make the 1st, 2nd, 3rd... allocation of a
 * call fail in turn and check that the call reports CT_ENOMEM (or NULL),
 * leaks nothing (the sanitizer build checks leaks) and never runs a
 * callback for work it refused.
 *
 * The library's allocations fail on demand through chaos.h (the linker's
 * --wrap), jansson's too with json_set_alloc_funcs(). Only the calling
 * thread's allocations are counted, so the library's own threads are not
 * disturbed.
 */
#include "chaos.h"
#include "gate.h"

static void *json_alloc(size_t size) { return __wrap_malloc(size); }

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return json_integer(1);
}

static counter_t callbacks;

static void count_callback(ct_task_t *task, void *data) {
  (void)task;
  (void)data;
  counter_add(&callbacks, 1);
}

/* Submit with every option that allocates, failing allocation k. Returns
 * whether allocation k was reached. */
static bool submit_failing(long k, double delay) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0); /* a fresh, empty handle table */
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.name = "chaos";
  o.delay = delay;
  o.on_done = count_callback;
  ct_task_t *t = (ct_task_t *)1;
  long before = counter_get(&callbacks);
  chaos_arm(k);
  int rc = ct_background_task(sup, answer, NULL, &o, &t);
  bool reached = chaos_disarm();
  if (reached) {
    CHECK_EQ_INT(rc, CT_ENOMEM);
    CHECK(t == NULL);
    CHECK_EQ_INT(ct_supervisor_registry_size(sup), 0);
  } else {
    CHECK_OK(rc);
    CHECK_OK(ct_task_wait(t, -1));
    CHECK_EQ_INT(json_integer_value(ct_task_result(t)), 1);
    ct_task_unref(t);
  }
  stop_and_free(sup);
  CHECK_EQ_INT(counter_get(&callbacks), before + (reached ? 0 : 1));
  return reached;
}

TEST(background_task) {
  long k = 0;
  while (submit_failing(k, 0))
    k++;
  CHECK(k >= 2); /* its name, the handle table (the task's record comes from a slab) */
  fprintf(stderr, "   %ld allocations, each failed once\n", k);
}

TEST(background_task_delayed) {
  long k = 0;
  while (submit_failing(k, 0.001))
    k++;
  CHECK(k >= 3); /* ... and the delay record */
  fprintf(stderr, "   %ld allocations, each failed once\n", k);
}

/* Fire-and-forget: once the slab's cache is warm, a submission makes no
 * heap allocation at all (the record comes from the slab; its own failure
 * is tested in test-slab). */
TEST(fire_and_forget) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  CHECK_OK(ct_background_task(sup, answer, NULL, NULL, NULL));
  chaos_arm(0);
  int rc = ct_background_task(sup, answer, NULL, NULL, NULL);
  CHECK(!chaos_disarm());
  CHECK_OK(rc);
  stop_and_free(sup);
}

TEST(supervisor_new) {
  for (long k = 0;; k++) {
    ct_supervisor_t *sup = (ct_supervisor_t *)1;
    chaos_arm(k);
    int rc = ct_supervisor_new(NULL, &sup);
    bool reached = chaos_disarm();
    if (!reached) {
      CHECK_OK(rc);
      CHECK_OK(ct_supervisor_free(sup));
      break;
    }
    CHECK_EQ_INT(rc, CT_ENOMEM);
    CHECK(sup == NULL);
  }
}

TEST(error_results_and_stats_json) {
  for (long k = 0;; k++) {
    chaos_arm(k);
    json_t *e = ct_error_new("ValueError", "number %d", 42);
    bool reached = chaos_disarm();
    if (!reached) {
      CHECK_EQ_STR(ct_result_error_str(e), "number 42");
      json_decref(e);
      break;
    }
    CHECK(e == NULL);
  }
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  for (long k = 0;; k++) {
    chaos_arm(k);
    json_t *js = ct_supervisor_stats_json(sup);
    bool reached = chaos_disarm();
    if (!reached) {
      CHECK(js != NULL);
      json_decref(js);
      break;
    }
    CHECK(js == NULL);
  }
  stop_and_free(sup);
}

/* A cancel that cannot allocate its message to the loop still cancels;
 * the delay record is freed by the stop instead. */
TEST(cancel_delayed_without_memory) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.delay = 3600;
  o.on_done = count_callback;
  long before = counter_get(&callbacks);
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, answer, NULL, &o, &t));
  /* Let the CancelledError result be made; fail the loop message. */
  for (long k = 0;; k++) {
    chaos_arm(k);
    json_t *probe = ct_error_new("CancelledError", "task %llu was canceled", 1ULL);
    bool reached = chaos_disarm();
    json_decref(probe);
    if (!reached) {
      chaos_arm(k);
      break;
    }
  }
  int rc = ct_task_cancel(t);
  CHECK(chaos_disarm());
  CHECK_OK(rc);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  CHECK_EQ_STR(ct_result_error_class(ct_task_result(t)), "CancelledError");
  CHECK_EQ_INT(counter_get(&callbacks), before + 1);
  ct_task_unref(t);
  stop_and_free(sup);
  CHECK_EQ_INT(counter_get(&callbacks), before + 1);
}

int main(void) {
  json_set_alloc_funcs(json_alloc, free);
  counter_init(&callbacks);
  RUN(background_task);
  RUN(background_task_delayed);
  RUN(fire_and_forget);
  RUN(supervisor_new);
  RUN(error_results_and_stats_json);
  RUN(cancel_delayed_without_memory);
  counter_destroy(&callbacks);
  return check_done();
}
