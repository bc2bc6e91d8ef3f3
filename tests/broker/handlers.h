/* Task handlers several broker tests register under the same names, with
 * the same meaning: "echo" answers its kwargs, "fail" raises ValueError.
 * Inline so that a test using only one of them has no unused function. */
#ifndef CT_TESTS_BROKER_HANDLERS_H
#define CT_TESTS_BROKER_HANDLERS_H

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

#endif
