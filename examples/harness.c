/* A test harness: start a batch of cases, take results as they complete,
 * then check them all in input order, and release the handles in one call.
 * Case 5 fails on purpose, to show a failure report; the exit status is 1
 * when any case failed.
 */
#include <ctasker.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

enum { N = 8 };

/* Case k takes (N - k) * 10 ms and returns k * k; case 5 fails. */
static json_t *run_case(ct_task_t *self, void *arg) {
  (void)self;
  intptr_t k = (intptr_t)arg;
  struct timespec ts = {0, (long)(N - k) * 10000000L};
  nanosleep(&ts, NULL);
  if (k == 5)
    return ct_error_new("AssertionError", "case %ld: expected 5, got 6", (long)k);
  return json_integer(k * k);
}

int main(void) {
  if (ct_default_start(NULL) != 0)
    return 1;
  ct_task_t *tasks[N], *pending[N];
  for (intptr_t k = 0; k < N; k++) {
    ct_task_opts_t o = CT_TASK_OPTS_INIT;
    if (ct_background_task(NULL, run_case, (void *)k, &o, &tasks[k]) != 0)
      return 1;
    pending[k] = tasks[k];
  }

  size_t i; /* as completed: clear each one taken */
  while (ct_wait_any(pending, N, 30, &i) == 0) {
    printf("case %zu done%s\n", i, ct_task_failed(pending[i]) ? " (failed)" : "");
    pending[i] = NULL;
  }

  json_t *results[N];
  if (ct_wait_results(tasks, N, 30, results) != 0)
    return 1;
  int failed = 0;
  for (size_t k = 0; k < N; k++) {
    if (ct_result_is_error_class(results[k], "AssertionError")) {
      printf("FAIL case %zu: %s\n", k, ct_result_error_str(results[k]));
      failed++;
    } else if (ct_result_is_error(results[k]) ||
               json_integer_value(results[k]) != (json_int_t)(k * k)) {
      printf("ERROR case %zu\n", k);
      failed++;
    }
  }
  printf("%d of %d cases failed\n", failed, N);
  ct_task_unref_list(tasks, N);
  return ct_default_stop(CT_STOP_DRAIN, -1) == 0 && failed == 0 ? 0 : 1;
}
