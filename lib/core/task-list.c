/* Helpers for lists of task handles, as test harnesses and batch programs
 * use them: the results of a list in input order, and releasing a list.
 * Built on the public task calls only (task.c does the waiting).
 */
#include "core/task-internal.h"

int ct_wait_results(ct_task_t *const *tasks, size_t n, double timeout, json_t **results) {
  if (n > 0 && !results)
    return CT_EINVAL;
  int rc = ct_wait_completed(tasks, n, timeout);
  if (rc == CT_EINVAL)
    return rc;
  for (size_t i = 0; i < n; i++)
    results[i] = ct_task_result(tasks[i]);
  return rc;
}

void ct_task_unref_list(ct_task_t **tasks, size_t n) {
  if (!tasks)
    return;
  for (size_t i = 0; i < n; i++) {
    ct_task_unref(tasks[i]);
    tasks[i] = NULL;
  }
}
