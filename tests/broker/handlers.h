/* Task handlers several broker tests register under the same names, with
 * the same meaning: "echo" answers its kwargs, "fail" raises ValueError,
 * "gate" runs until the test opens its gate. Inline so that a test using
 * only one of them has no unused function. */
#ifndef CT_TESTS_BROKER_HANDLERS_H
#define CT_TESTS_BROKER_HANDLERS_H

#include <stdatomic.h>

#include "../check.h"
#include "ctasker.h"

static inline json_t *echo(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  return json_deep_copy(kwargs);
}

static inline json_t *fail(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  return ct_error_new("ValueError", "bad input");
}

/* The gate's state: set by "gate" as it starts; set by the test to let it
 * end. A test that runs it more than once clears both in between. */
static atomic_bool gate_handler_started, gate_handler_open;

/* Answers "gated" once the gate is open, after at most 30 s. */
static inline json_t *gate(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  atomic_store(&gate_handler_started, true);
  for (int i = 0; i < 30000 && !atomic_load(&gate_handler_open); i++)
    check_sleep(0.001);
  return json_string("gated");
}

#endif
