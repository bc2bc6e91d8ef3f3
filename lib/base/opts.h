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

/* The one fill of a caller's versioned output struct (ct_stats_t and the
 * like), the mirror of ct__opts_copy(): `out` begins with the size the
 * caller set; the library's whole snapshot `full` (`full_size` bytes, also
 * beginning with a size) is copied up to the smaller of the two sizes, and
 * out's size becomes the bytes written. `oldest` is the smallest size ever
 * published. Returns 0, or CT_EINVAL for a size below it (nothing written). */
static inline int ct__out_fill(void *out, const void *full, size_t full_size, size_t oldest) {
  size_t size;
  memcpy(&size, out, sizeof size);
  if (size < oldest)
    return CT_EINVAL;
  if (size > full_size)
    size = full_size;
  memcpy((char *)out + sizeof size, (const char *)full + sizeof size, size - sizeof size);
  memcpy(out, &size, sizeof size);
  return 0;
}

/* Checking a caller's options struct. Every CT_EINVAL an options struct
 * causes goes through ct__opts_bad(), which logs one line naming the
 * struct, the field and the reason through the log callback the check was
 * given (the supervisor's, or the struct's own once its size is known good;
 * NULL: nowhere), so a caller learns which field was wrong without a
 * debugger. Checks go on after a failure, so every bad field is told. */
typedef struct ct__opts_check {
  const char *type; /* "ct_supervisor_opts_t" */
  const char *fn;   /* the public call, "ct_supervisor_new" */
  ct_log_fn log;
  void *log_data;
  int rc; /* 0, or CT_EINVAL once a field was refused */
} ct__opts_check_t;

/* Refuse `field`: log "ctasker: <fn>: invalid <type>.<field>: <why>" and
 * make c->rc CT_EINVAL. Returns CT_EINVAL. */
int ct__opts_bad(ct__opts_check_t *c, const char *field, const char *why, ...)
    __attribute__((format(printf, 3, 4)));

/* ct__opts_copy(), refusing an unknown size through ct__opts_bad(). */
int ct__opts_read(ct__opts_check_t *c, void *dst, size_t dst_size, const void *in,
                  size_t oldest);

/* `field` must lie in [lo, hi]. Returns whether it does. */
bool ct__opts_int(ct__opts_check_t *c, const char *field, long long v, long long lo,
                  long long hi);

/* `field` is seconds of `kind` (base/clock.h): NaN, negative, or infinite
 * for a delay, is refused with the rule it broke. Returns whether valid. */
bool ct__opts_seconds(ct__opts_check_t *c, const char *field, double v, int kind);

/* `field` is text shown in JSON or logs: NULL, or UTF-8. Returns whether
 * it is. */
bool ct__opts_text(ct__opts_check_t *c, const char *field, const char *v);

#endif
