/* The one copy of a caller's versioned options struct. Every public
 * options struct begins with `size_t size`, which its INIT macro sets to
 * the sizeof the caller compiled against: an older, smaller struct fills
 * only the fields it has, and the newer ones keep their defaults, so the
 * ABI can grow (STYLE: options go in through a struct with a size field).
 */
#ifndef CT_LIB_OPTS_H
#define CT_LIB_OPTS_H

#include <stddef.h>
#include <string.h>

#include "ctasker/common.h"

/* Copy `in` (NULL: nothing) over *dst, which holds the defaults and is
 * `dst_size` bytes, this library's version of the struct. `oldest` is the
 * smallest size ever published. Returns 0, or CT_EINVAL for a size below
 * `oldest` or above `dst_size` (*dst is then left as it was). */
static inline int ct__opts_copy(void *dst, size_t dst_size, const void *in, size_t oldest) {
  size_t size;
  if (!in)
    return 0;
  memcpy(&size, in, sizeof size);
  if (size < oldest || size > dst_size)
    return CT_EINVAL;
  memcpy(dst, in, size);
  return 0;
}

#endif
