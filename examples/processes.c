/* Run named functions in pre-forked child processes with JSON in and out.
 * Shows a result, an error result, a crash turned into an error, and a
 * queue worker whose runs execute in the children. */
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

/* A process queue worker's run: args is {"worker", "args", "item", "priority"}. */
static json_t *cube(uint64_t task_id, json_t *args, void *data) {
  (void)task_id;
  (void)data;
  json_int_t x = json_integer_value(json_object_get(args, "item"));
  return json_integer(x * x * x);
}

/* On the supervisor's loop thread, once per run: stop after a big cube. */
static int on_cube(ct_worker_t *w, ct_task_t *task, const json_t *result, void *data) {
  (void)task;
  (void)data;
  printf("worker %s: cube %lld\n", ct_worker_name(w), (long long)json_integer_value(result));
  return json_integer_value(result) > 100 ? CT_WORKER_STOP : CT_WORKER_CONTINUE;
}

/* Items a stop hands back are JSON references: ours to release. */
static void on_drop(ct_worker_t *w, void *item, void *data) {
  (void)w;
  (void)data;
  printf("dropped %lld\n", (long long)json_integer_value(item));
  json_decref(item);
}

static void process_worker(ct_supervisor_t *sup) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.process = "cube";
  o.process_result = on_cube;
  o.on_drop = on_drop;
  ct_worker_t *w;
  if (ct_worker_new(sup, CT_WORKER_QUEUE, NULL, &o, &w) != 0 || ct_worker_start(w, NULL) != 0)
    return;
  for (int i = 1; i <= 8; i++) {
    json_t *item = json_integer(i);
    if (ct_queue_worker_put_json(w, item, CT_PRIORITY_NORMAL) != 0) {
      json_decref(item); /* on error the item is still ours */
      break;             /* on_cube may have stopped the worker already */
    }
  }
  ct_worker_stop(w, CT_WORKER_DRAIN, -1); /* or until on_cube stops it */
  ct_worker_free(w);
}

int main(void) {
  /* Register before creating the pool: children are copies of this process. */
  ct_process_register("square", square, NULL);
  ct_process_register("crash", crash, NULL);
  ct_process_register("cube", cube, NULL);
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
  process_worker(sup);
  ct_supervisor_stop(sup, CT_STOP_DRAIN, -1);
  ct_supervisor_free(sup);
  return 0;
}
