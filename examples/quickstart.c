/* quickstart: start a supervisor, run tasks in the background, wait for
 * them, read their results, and print the statistics.
 *
 *   build/examples/quickstart
 */
#include <ctasker.h>
#include <stdio.h>

/* A task: sums 1..n. It returns a new JSON reference as its result. */
static json_t *sum_to(ct_task_t *self, void *arg) {
  (void)self;
  long n = (long)(intptr_t)arg, sum = 0;
  if (n < 0)
    return ct_error_new("ValueError", "n must not be negative, got %ld", n);
  for (long i = 1; i <= n; i++)
    sum += i;
  return json_integer(sum);
}

static void announce(ct_task_t *task, void *data) {
  (void)data;
  printf("callback: task %llu (%s) finished\n", (unsigned long long)ct_task_id(task),
         ct_task_name(task));
}

int main(void) {
  ct_supervisor_t *sup;
  ct_supervisor_opts_t opts = CT_SUPERVISOR_OPTS_INIT;
  opts.pool_size = 2;
  int rc = ct_supervisor_new(&opts, &sup);
  if (rc == 0)
    rc = ct_supervisor_start(sup);
  if (rc != 0) {
    fprintf(stderr, "cannot start: %s\n", ct_strerror(rc));
    return 1;
  }

  /* Fire-and-forget: no handle, the cheapest path. */
  for (int i = 0; i < 1000; i++)
    ct_background_task(sup, sum_to, (void *)(intptr_t)i, NULL, NULL);

  /* Tracked tasks: a name, a priority, a delay, a callback, a handle. */
  long inputs[3] = {100, -1, 1000000};
  ct_task_t *tasks[3];
  for (int i = 0; i < 3; i++) {
    ct_task_opts_t t = CT_TASK_OPTS_INIT;
    char name[32];
    snprintf(name, sizeof name, "sum-%ld", inputs[i]);
    t.name = name;
    t.priority = i == 2 ? CT_PRIORITY_HIGH : CT_PRIORITY_NORMAL;
    t.delay = i == 0 ? 0.05 : 0;
    t.on_done = announce;
    rc = ct_background_task(sup, sum_to, (void *)(intptr_t)inputs[i], &t, &tasks[i]);
    if (rc != 0) {
      fprintf(stderr, "submit: %s\n", ct_strerror(rc));
      return 1;
    }
  }
  if (ct_wait_completed(tasks, 3, 10.0) != 0) {
    fprintf(stderr, "tasks did not finish in time\n");
    return 1;
  }
  for (int i = 0; i < 3; i++) {
    char *text = json_dumps(ct_task_result(tasks[i]), JSON_ENCODE_ANY);
    printf("%s -> %s%s\n", ct_task_name(tasks[i]), text,
           ct_task_failed(tasks[i]) ? " (failed)" : "");
    free(text);
    ct_task_unref(tasks[i]);
  }

  ct_supervisor_stop(sup, CT_STOP_DRAIN, -1);
  json_t *stats = ct_supervisor_stats_json(sup);
  char *text = json_dumps(stats, JSON_INDENT(2));
  printf("%s\n", text);
  free(text);
  json_decref(stats);
  ct_supervisor_free(sup);
  return 0;
}
