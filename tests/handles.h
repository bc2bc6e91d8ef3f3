/* A handle table of the tests' own, as test-core and test-handle-table
 * make them: on the heap (it is large and 64-byte aligned). */
#ifndef CT_TESTS_HANDLES_H
#define CT_TESTS_HANDLES_H

#include <stdlib.h>

#include "check.h"
#include "core/handles.h"

static inline ct__handles_t *new_handles(void) {
  ct__handles_t *h = aligned_alloc(_Alignof(ct__handles_t), sizeof *h);
  CHECK(h);
  CHECK_OK(ct__handles_init(h));
  return h;
}

static inline void free_handles(ct__handles_t *h) {
  ct__handles_destroy(h);
  free(h);
}

#endif
