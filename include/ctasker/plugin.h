/** @file
 * ctasker — handler plugins for the `ctasker worker` command.
 *
 * A plugin is a shared object that `ctasker worker --handlers ./x.so`
 * loads (dlopen) before the worker starts. It exports one entry point,
 * named by CT_PLUGIN_ENTRY_NAME, which registers its task handlers on the
 * worker's broker handle with ct_broker_register() and returns how many it
 * registered (a negative CT_E* code on failure). The worker refuses a
 * plugin that cannot be loaded, lacks the entry point, fails, or registers
 * nothing. Most plugins need only a table and CT_PLUGIN_HANDLERS():
 *
 * @code
 * #include <ctasker/plugin.h>
 *
 * static json_t *add(ct_task_t *self, const json_t *kwargs, void *data) {
 *   (void)self; (void)data;
 *   return json_integer(json_integer_value(json_object_get(kwargs, "a")) +
 *                       json_integer_value(json_object_get(kwargs, "b")));
 * }
 *
 * static const ct_plugin_handler_t handlers[] = {{"add", add, NULL}};
 * CT_PLUGIN_HANDLERS(handlers)
 * @endcode
 *
 * Build it with `cc -shared -fPIC $(pkg-config --cflags ctasker) x.c -o x.so`.
 * Handlers run on the worker's pool threads, several at once; the plugin
 * stays loaded until the command exits. A plugin registers thread
 * handlers (ct_broker_handler_fn), and process handlers with
 * ct_broker_register_process() for process functions it registers with
 * ct_process_register() (once per process: the entry point runs once per
 * --queue), which need `ctasker worker --processes N`, and loop handlers
 * with ct_broker_register_loop() on the command's default loop (a NULL
 * loop name), from an entry point of its own (CT_PLUGIN_ENTRY()), as
 * examples/plugin/handlers.c does.
 */
#ifndef CTASKER_PLUGIN_H
#define CTASKER_PLUGIN_H

#include "broker.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The entry point's symbol name; the version in it changes if its
 * signature ever does, so an old plugin is refused rather than misread. */
#define CT_PLUGIN_ENTRY_NAME "ctasker_plugin_v1"

/** The entry point's type: register handlers on `broker`; return how many
 * (> 0), 0 if none, or a negative CT_E* code. */
typedef int (*ct_plugin_entry_fn)(ct_broker_t *broker);

/** One handler of a plugin's table (CT_PLUGIN_HANDLERS()). */
typedef struct ct_plugin_handler {
  const char *name;        /**< the task name */
  ct_broker_handler_fn fn; /**< the handler */
  void *data;              /**< given to fn */
} ct_plugin_handler_t;

#if defined(__GNUC__) || defined(__clang__)
#define CT__PLUGIN_VISIBLE __attribute__((visibility("default")))
#else
#define CT__PLUGIN_VISIBLE
#endif

/** Define the plugin's entry point with `fn`, a function
 * `int fn(ct_broker_t *broker)` that registers the handlers. */
#define CT_PLUGIN_ENTRY(fn)                                                    \
  CT__PLUGIN_VISIBLE int ctasker_plugin_v1(ct_broker_t *broker);               \
  CT__PLUGIN_VISIBLE int ctasker_plugin_v1(ct_broker_t *broker) { return fn(broker); }

/** Define the plugin's entry point from a static array of
 * ct_plugin_handler_t: each is registered in turn; the first failure is
 * returned. */
#define CT_PLUGIN_HANDLERS(table)                                              \
  static int ct__plugin_register_table(ct_broker_t *broker) {                  \
    for (size_t i = 0; i < sizeof(table) / sizeof((table)[0]); i++) {          \
      int rc = ct_broker_register(broker, (table)[i].name, (table)[i].fn,      \
                                  (table)[i].data);                            \
      if (rc != 0)                                                             \
        return rc;                                                             \
    }                                                                          \
    return (int)(sizeof(table) / sizeof((table)[0]));                          \
  }                                                                            \
  CT_PLUGIN_ENTRY(ct__plugin_register_table)

#ifdef __cplusplus
}
#endif
#endif
