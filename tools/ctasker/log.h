/* The worker's log: lines to stderr or a file, text or JSON, with a level
 * filter; the file is opened again on request (SIGHUP, for logrotate). */
#ifndef CTASKER_CLI_LOG_H
#define CTASKER_CLI_LOG_H

#include <stdbool.h>

/* path NULL: stderr. Returns 0, or an errno value if path cannot be opened. */
int dlog_init(int min_level, bool json, const char *path);

/* Open the file again (stderr: nothing to do). Returns 0 or an errno value
 * (the old file is then kept). */
int dlog_reopen(void);

void dlog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* As a ct_log_fn (data unused). */
void dlog_line(int level, const char *msg, void *data);

/* A level's number from its name (debug, info, warning, error); -1 if none. */
int dlog_level(const char *name);

#endif
