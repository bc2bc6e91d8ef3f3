/* Checking options structs (base/opts.h): the one place that words a
 * CT_EINVAL caused by an options field, so every struct's refusals read
 * alike and name their field. */
#include "base/opts.h"

#include <stdarg.h>
#include <stdio.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"

int ct__opts_bad(ct__opts_check_t *c, const char *field, const char *why, ...) {
  char reason[256];
  va_list ap;
  va_start(ap, why);
  vsnprintf(reason, sizeof reason, why, ap);
  va_end(ap);
  ct__log(c->log, c->log_data, CT_LOG_ERROR, "ctasker: %s: invalid %s.%s: %s", c->fn, c->type,
          field, reason);
  c->rc = CT_EINVAL;
  return CT_EINVAL;
}

int ct__opts_read(ct__opts_check_t *c, void *dst, size_t dst_size, const void *in,
                  size_t oldest) {
  if (ct__opts_copy(dst, dst_size, in, oldest) == 0)
    return 0;
  size_t size;
  memcpy(&size, in, sizeof size);
  return ct__opts_bad(c, "size",
                      "%zu is not a size this library knows (%zu to %zu): start from the "
                      "struct's INIT macro",
                      size, oldest, dst_size);
}

bool ct__opts_int(ct__opts_check_t *c, const char *field, long long v, long long lo,
                  long long hi) {
  if (v >= lo && v <= hi)
    return true;
  ct__opts_bad(c, field, "%lld is out of range (%lld to %lld)", v, lo, hi);
  return false;
}

bool ct__opts_seconds(ct__opts_check_t *c, const char *field, double v, int kind) {
  if (ct__seconds_valid(v, kind))
    return true;
  if (isnan(v))
    ct__opts_bad(c, field, "NaN is not a number of seconds");
  else if (v < 0)
    ct__opts_bad(c, field, "%g seconds: must not be negative", v);
  else
    ct__opts_bad(c, field, "%g seconds: must be finite (a delay or an interval)", v);
  return false;
}

bool ct__opts_text(ct__opts_check_t *c, const char *field, const char *v) {
  if (!v || ct__utf8_valid(v, strlen(v)))
    return true;
  ct__opts_bad(c, field, "not UTF-8 (it is shown in JSON)");
  return false;
}
