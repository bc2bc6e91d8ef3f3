/* Log lines go to the user's callback (DESIGN: the library never prints by
 * itself). Each layer that logs is handed the callback and its data by the
 * layer above, in its config, as the thread pool and the process pool are. */
#ifndef CT_LIB_LOG_H
#define CT_LIB_LOG_H

#include <stdarg.h>

#include "ctasker/common.h"

/* Format a line (at most 511 bytes are kept) and pass it to fn(level,
 * line, data); nothing if fn is NULL. Any thread. */
void ct__log(ct_log_fn fn, void *data, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void ct__vlog(ct_log_fn fn, void *data, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#endif
