/* An example plugin for `ctasker worker --handlers ./handlers.so`.
 *
 * Four thread handlers: add (a + b), echo (its kwargs back), sleep (waits
 * `seconds`, ending early if the task is canceled) and fail (an exception
 * with the class and message it is given). CT_PLUGIN_HANDLERS exports the
 * entry point that registers them (ctasker/plugin.h).
 *
 *   cc -shared -fPIC $(pkg-config --cflags ctasker) handlers.c -o handlers.so
 *   ctasker worker --url unix:///tmp/redis.sock --handlers ./handlers.so
 *   ctasker call add '{"a": 2, "b": 3}' --url unix:///tmp/redis.sock
 */
#include <time.h>

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

static const ct_plugin_handler_t handlers[] = {
    {"add", add, NULL},
    {"echo", echo, NULL},
    {"sleep", sleep_for, NULL},
    {"fail", fail, NULL},
};
CT_PLUGIN_HANDLERS(handlers)
