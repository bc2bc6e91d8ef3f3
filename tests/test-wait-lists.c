/* Waiting on lists of tasks as test harnesses do it: any of a list (in
 * completion order), the results of a list in input order, releasing a
 * list, and asking a result for an error of a class. Order and counts
 * only, never durations. */
#include <ctasker.h>
#include <math.h>
#include <stdatomic.h>

#include "check.h"
#include "gate.h"

enum { N = 4 };

typedef struct {
  gate_t gate[N];
  atomic_int done[N]; /* on_done has run for task i */
} held_t;

static json_t *held_task(ct_task_t *self, void *arg) {
  (void)self;
  gate_pass(arg);
  return json_integer(7);
}

static void mark_done(ct_task_t *task, void *data) {
  (void)task;
  atomic_store((atomic_int *)data, 1);
}

/* N tasks, task i held at gate i until the test opens it. */
static void submit_held(ct_supervisor_t *sup, held_t *h, ct_task_t **tasks) {
  for (int i = 0; i < N; i++) {
    gate_init(&h->gate[i]);
    atomic_init(&h->done[i], 0);
    ct_task_opts_t o = CT_TASK_OPTS_INIT;
    o.on_done = mark_done;
    o.done_data = &h->done[i];
    CHECK_OK(ct_background_task(sup, held_task, &h->gate[i], &o, &tasks[i]));
  }
  for (int i = 0; i < N; i++)
    gate_wait_arrived(&h->gate[i], 1);
}

typedef struct {
  gate_t *gate;
  atomic_int *waiting;
} opener_t;

/* Opens a gate once the test is about to wait (most likely waiting by
 * then; the test holds either way). */
static void *open_soon(void *arg) {
  opener_t *o = arg;
  while (!atomic_load(o->waiting))
    check_sleep(0.001);
  check_sleep(0.02);
  gate_open(o->gate);
  return NULL;
}

TEST(wait_any_returns_tasks_in_completion_order) {
  ct_supervisor_t *sup = start_supervisor(N, 0, 0);
  held_t h;
  ct_task_t *tasks[N];
  submit_held(sup, &h, tasks);
  size_t i = 99;
  CHECK_EQ_INT(ct_wait_any(tasks, N, 0, &i), CT_ETIMEDOUT); /* none is done */
  CHECK_EQ_INT(ct_wait_any(tasks, N, 0.01, &i), CT_ETIMEDOUT);
  CHECK_EQ_INT(i, 99);
  const int order[N] = {2, 0, 3, 1};
  for (int k = 0; k < N; k++) {
    atomic_int waiting = 0;
    opener_t o = {&h.gate[order[k]], &waiting};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, open_soon, &o) == 0);
    atomic_store(&waiting, 1);
    CHECK_OK(ct_wait_any(tasks, N, 30, &i)); /* woken by the one that finished */
    CHECK_EQ_INT(i, order[k]);
    CHECK_EQ_INT(atomic_load(&h.done[i]), 1); /* its callback has returned */
    CHECK(json_integer_value(ct_task_result(tasks[i])) == 7);
    ct_task_unref(tasks[i]);
    tasks[i] = NULL;
    pthread_join(th, NULL);
  }
  CHECK_EQ_INT(ct_wait_any(tasks, N, -1, &i), CT_ENOENT); /* all taken */
  for (int k = 0; k < N; k++)
    gate_destroy(&h.gate[k]);
  stop_and_free(sup);
}

TEST(wait_any_takes_the_lowest_index_of_those_already_done) {
  ct_supervisor_t *sup = start_supervisor(N, 0, 0);
  held_t h;
  ct_task_t *tasks[N];
  submit_held(sup, &h, tasks);
  gate_open(&h.gate[3]);
  gate_open(&h.gate[1]);
  CHECK_OK(ct_wait_completed((ct_task_t *[]){tasks[1], tasks[3]}, 2, 30));
  size_t i;
  CHECK_OK(ct_wait_any(tasks, N, 0, &i));
  CHECK_EQ_INT(i, 1);
  gate_open(&h.gate[0]);
  gate_open(&h.gate[2]);
  CHECK_OK(ct_wait_completed(tasks, N, 30)); /* none still at its gate */
  ct_task_unref_list(tasks, N);
  for (int k = 0; k < N; k++) {
    CHECK(tasks[k] == NULL);
    gate_destroy(&h.gate[k]);
  }
  stop_and_free(sup);
}

TEST(wait_any_bad_input) {
  ct_task_t *none[2] = {NULL, NULL};
  size_t i;
  CHECK_EQ_INT(ct_wait_any(none, 2, 0, &i), CT_ENOENT);
  CHECK_EQ_INT(ct_wait_any(none, 0, 0, &i), CT_ENOENT);
  CHECK_EQ_INT(ct_wait_any(NULL, 0, -1, &i), CT_ENOENT);
  CHECK_EQ_INT(ct_wait_any(NULL, 1, 0, &i), CT_EINVAL);
  CHECK_EQ_INT(ct_wait_any(none, 2, 0, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_wait_any(none, 2, NAN, &i), CT_EINVAL);
}

static json_t *ten_times(ct_task_t *self, void *arg) {
  (void)self;
  intptr_t k = (intptr_t)arg;
  if (k == 2)
    return ct_error_new("ValueError", "task %d fails", (int)k);
  return json_integer(10 * k);
}

TEST(wait_results_fills_results_in_input_order) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_task_t *tasks[5];
  for (intptr_t k = 0; k < 5; k++)
    CHECK_OK(ct_background_task(sup, ten_times, (void *)k, NULL, &tasks[k]));
  json_t *results[5];
  CHECK_OK(ct_wait_results(tasks, 5, 30, results));
  for (int k = 0; k < 5; k++) {
    CHECK(results[k] == ct_task_result(tasks[k])); /* borrowed */
    if (k != 2)
      CHECK(json_integer_value(results[k]) == 10 * k);
  }
  CHECK(ct_result_is_error_class(results[2], "ValueError"));
  CHECK(ct_result_is_error_class(results[2], NULL));
  CHECK(!ct_result_is_error_class(results[2], "TimeoutError"));
  CHECK(!ct_result_is_error_class(results[1], "ValueError"));
  CHECK(!ct_result_is_error_class(results[1], NULL));
  ct_task_unref_list(tasks, 5);
  ct_task_unref_list(NULL, 5); /* does nothing */
  stop_and_free(sup);
}

TEST(wait_results_at_a_timeout_fills_what_is_done) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *tasks[3];
  CHECK_OK(ct_background_task(sup, ten_times, (void *)1, NULL, &tasks[0]));
  CHECK_OK(ct_background_task(sup, gate_task, &gate, NULL, &tasks[1]));
  CHECK_OK(ct_background_task(sup, ten_times, (void *)3, NULL, &tasks[2]));
  CHECK_OK(ct_wait_completed((ct_task_t *[]){tasks[0], tasks[2]}, 2, 30));
  json_t *results[3] = {NULL, json_null(), NULL};
  CHECK_EQ_INT(ct_wait_results(tasks, 3, 0.01, results), CT_ETIMEDOUT);
  CHECK(json_integer_value(results[0]) == 10);
  CHECK(results[1] == NULL); /* not terminal yet */
  CHECK(json_integer_value(results[2]) == 30);
  gate_open(&gate);
  CHECK_OK(ct_wait_results(tasks, 3, -1, results));
  CHECK(json_is_null(results[1]));
  CHECK_EQ_INT(ct_wait_results(tasks, 3, -1, NULL), CT_EINVAL);
  ct_task_t *with_null[2] = {tasks[0], NULL};
  json_t *untouched[2] = {json_true(), json_true()};
  CHECK_EQ_INT(ct_wait_results(with_null, 2, -1, untouched), CT_EINVAL);
  CHECK(untouched[0] == json_true() && untouched[1] == json_true());
  CHECK_OK(ct_wait_results(NULL, 0, -1, NULL)); /* nothing to wait for */
  ct_task_unref_list(tasks, 3);
  gate_destroy(&gate);
  stop_and_free(sup);
}

TEST(error_class_is_null_safe) {
  CHECK(!ct_result_is_error_class(NULL, "ValueError"));
  CHECK(!ct_result_is_error_class(NULL, NULL));
  json_t *e = ct_error_new("TimeoutError", "late");
  CHECK(ct_result_is_error_class(e, "TimeoutError"));
  CHECK(!ct_result_is_error_class(e, "timeouterror"));
  json_decref(e);
  json_t *odd = json_pack("{s:{s:i}}", "exception", "class", 3); /* no string class */
  CHECK(ct_result_is_error_class(odd, NULL)); /* an error, of no class */
  CHECK(!ct_result_is_error_class(odd, "3"));
  json_decref(odd);
  /* a task that is not terminal has no result: false, not a crash */
  CHECK(!ct_result_is_error_class(ct_task_result(NULL), "CancelledError"));
}

int main(void) {
  RUN(wait_any_returns_tasks_in_completion_order);
  RUN(wait_any_takes_the_lowest_index_of_those_already_done);
  RUN(wait_any_bad_input);
  RUN(wait_results_fills_results_in_input_order);
  RUN(wait_results_at_a_timeout_fills_what_is_done);
  RUN(error_class_is_null_safe);
  return check_done();
}
