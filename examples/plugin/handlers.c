/* An example plugin for `ctasker worker --handlers ./handlers.so`.
 *
 * Four thread handlers: add (a + b), echo (its kwargs back), sleep (waits
 * `seconds`, ending early if the task is canceled) and fail (an exception
 * with the class and message it is given); a process handler, pid,
 * which runs in a child of the worker's process pool (`--processes N`)
 * and answers with the child's pid; and a loop handler, after, which
 * answers with its kwargs' `value` `seconds` later from a timer on the
 * worker's default loop, holding no thread meanwhile. CT_PLUGIN_ENTRY
 * exports the entry point that registers them (ctasker/plugin.h).
 *
 *   cc -shared -fPIC $(pkg-config --cflags ctasker) handlers.c -o handlers.so
 *   ctasker worker --url unix:///tmp/redis.sock --handlers ./handlers.so
 *   ctasker call add '{"a": 2, "b": 3}' --url unix:///tmp/redis.sock
 */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include <ctasker.h>
#include <ctasker/plugin.h>

static json_t *add(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  const json_t *a = json_object_get(kwargs, "a"), *b = json_object_get(kwargs, "b");
  if (!json_is_number(a) || !json_is_number(b))
    return ct_error_new("TypeError", "add needs numbers a and b");
  if (json_is_integer(a) && json_is_integer(b))
    return json_integer(json_integer_value(a) + json_integer_value(b));
  return json_real(json_number_value(a) + json_number_value(b));
}

static json_t *echo(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  return json_deep_copy(kwargs);
}

/* Sleeps in short steps so that a cancel is seen within 10 ms. */
static json_t *sleep_for(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)data;
  double end = ct_now() + json_number_value(json_object_get(kwargs, "seconds"));
  while (ct_now() < end) {
    if (ct_task_cancel_requested(self))
      return ct_error_new("Canceled", "sleep canceled");
    nanosleep(&(struct timespec){0, 10000000}, NULL);
  }
  return json_true();
}

static json_t *fail(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  const char *cls = json_string_value(json_object_get(kwargs, "class"));
  const char *msg = json_string_value(json_object_get(kwargs, "message"));
  return ct_error_new(cls ? cls : "ValueError", "%s", msg ? msg : "failed as asked");
}

/* In a pool child: {"pid": its pid}. */
static json_t *child_pid(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  return json_pack("{s:i}", "pid", (int)getpid());
}

/* A run of `after`: its timer, on the loop thread. */
typedef struct {
  ev_timer timer;
  ct_broker_run_t *run;
  json_t *value;
} after_t;

static void after_end(struct ev_loop *ev, after_t *a, json_t *result) {
  ev_timer_stop(ev, &a->timer);
  ct_broker_run_complete(a->run, result);
  json_decref(a->value);
  free(a);
}

/* The value itself is the result: a value the loop thread kept a
 * reference to could not be released here while the worker uses it. */
static void after_fire(struct ev_loop *ev, ev_timer *t, int revents) {
  (void)revents;
  after_t *a = t->data;
  json_t *value = a->value;
  a->value = NULL;
  after_end(ev, a, value);
}

/* Asked to cancel (a run timeout, a lost lease): stop at once. */
static void after_cancel(ct_broker_run_t *run, struct ev_loop *ev, void *data) {
  (void)run;
  after_end(ev, data, ct_error_new("Canceled", "after canceled"));
}

static void after(ct_broker_run_t *run, struct ev_loop *ev, const json_t *kwargs, void *data) {
  (void)data;
  after_t *a = calloc(1, sizeof *a);
  if (!a) {
    ct_broker_run_complete(run, ct_error_new("MemoryError", "no memory"));
    return;
  }
  a->run = run;
  a->value = json_deep_copy(json_object_get(kwargs, "value"));
  ev_timer_init(&a->timer, after_fire, json_number_value(json_object_get(kwargs, "seconds")),
                0);
  a->timer.data = a;
  ev_timer_start(ev, &a->timer);
  ct_broker_run_on_cancel(run, after_cancel, a);
}

static const ct_plugin_handler_t handlers[] = {
    {"add", add, NULL},
    {"echo", echo, NULL},
    {"sleep", sleep_for, NULL},
    {"fail", fail, NULL},
};

/* The thread handlers, then the process handler and the loop handler.
 * The process function is registered once per process (the entry point
 * runs once per --queue: CT_EBUSY the next times), before the worker
 * creates its pool. */
static int register_all(ct_broker_t *broker) {
  for (size_t i = 0; i < sizeof handlers / sizeof *handlers; i++) {
    int rc = ct_broker_register(broker, handlers[i].name, handlers[i].fn, handlers[i].data);
    if (rc != 0)
      return rc;
  }
  int rc = ct_process_register("example.pid", child_pid, NULL);
  if (rc != 0 && rc != CT_EBUSY)
    return rc;
  rc = ct_broker_register_process(broker, "pid", "example.pid", 30);
  if (rc == 0)
    rc = ct_broker_register_loop(broker, "after", NULL, after, NULL);
  return rc != 0 ? rc : (int)(sizeof handlers / sizeof *handlers) + 2;
}
CT_PLUGIN_ENTRY(register_all)
