/* Formatting a log line for the user's callback (base/log.h). */
#include "base/log.h"

#include <stdio.h>

void ct__vlog(ct_log_fn fn, void *data, int level, const char *fmt, va_list ap) {
  if (!fn)
    return;
  char buf[512];
  vsnprintf(buf, sizeof buf, fmt, ap);
  fn(level, buf, data);
}

void ct__log(ct_log_fn fn, void *data, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ct__vlog(fn, data, level, fmt, ap);
  va_end(ap);
}
