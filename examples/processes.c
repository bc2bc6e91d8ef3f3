/* Run named functions in pre-forked child processes with JSON in and out.
 * Shows a result, an error result, and a crash turned into an error. */
#include <ctasker.h>
#include <stdio.h>
#include <stdlib.h>

static json_t *square(uint64_t task_id, json_t *args, void *data) {
  (void)task_id;
  (void)data;
  json_int_t x = json_integer_value(args);
  return json_integer(x * x);
}

static json_t *crash(uint64_t task_id, json_t *args, void *data) {
  (void)task_id;
  (void)args;
  (void)data;
  abort(); /* only this child dies; its task gets a ProcessCrashed result */
}

int main(void) {
  /* Register before creating the pool: children are copies of this process. */
  ct_process_register("square", square, NULL);
  ct_process_register("crash", crash, NULL);
  ct_supervisor_t *sup;
  if (ct_supervisor_new(NULL, &sup) != 0 || ct_supervisor_start(sup) != 0)
    return 1;
  ct_process_pool_opts_t opts = CT_PROCESS_POOL_OPTS_INIT;
  opts.pool_size = 2;
  opts.task_timeout = 10;
  int rc = ct_process_pool_create(sup, &opts);
  if (rc != 0) {
    fprintf(stderr, "pool: %s\n", ct_strerror(rc));
    return 1;
  }
  ct_task_t *tasks[4];
  const char *names[4] = {"square", "square", "crash", "nope"};
  for (int i = 0; i < 4; i++) {
    json_t *args = json_integer(i + 2);
    ct_process_task(sup, names[i], args, NULL, &tasks[i]);
    json_decref(args);
  }
  ct_wait_completed(tasks, 4, -1);
  for (int i = 0; i < 4; i++) {
    char *text = json_dumps(ct_task_result(tasks[i]), JSON_ENCODE_ANY | JSON_COMPACT);
    printf("%-6s -> %s%s\n", names[i], text, ct_task_failed(tasks[i]) ? " (failed)" : "");
    free(text);
    ct_task_unref(tasks[i]);
  }
  ct_supervisor_stop(sup, CT_STOP_DRAIN, -1);
  ct_supervisor_free(sup);
  return 0;
}
