/* One blocking Redis connection, used by one caller at a time (see
 * sync-conn.c). */
#ifndef CT_BROKER_SYNC_CONN_H
#define CT_BROKER_SYNC_CONN_H

#include <stdbool.h>

#include "conn.h"

typedef struct ct__rsync ct__rsync_t;

/* Connect, AUTH and SELECT as the URL says, and wait while the server
 * loads its data, all within `timeout` seconds (> 0). Returns 0 and *out;
 * CT_ETIMEDOUT if it failed (logged through log, which may be NULL);
 * CT_ENOMEM. */
int ct__rsync_new(const ct__redis_url_t *url, double timeout, ct_log_fn log, void *log_data,
                  ct__rsync_t **out);

/* Close and free. NULL does nothing. */
void ct__rsync_free(ct__rsync_t *c);

/* Whether the connection is still of use: nothing has failed on it, and,
 * idle, the server has not closed it (a restart, an idle timeout). A
 * connection with a reply owed (a read that timed out) is of no use. */
bool ct__rsync_usable(ct__rsync_t *c);

/* Make the owner's send or read under way (or next) fail at once, without
 * a log line: the connection is then of no use. Thread-safety: any
 * thread, while the owner uses it. */
void ct__rsync_interrupt(ct__rsync_t *c);

/* Send the n commands in one write, within `timeout` seconds; their
 * replies are then read with ct__rsync_read(), in order. Returns 0;
 * CT_ENOMEM; CT_ETIMEDOUT if the write failed (logged: the connection is
 * then of no use). */
int ct__rsync_send(ct__rsync_t *c, double timeout, size_t n, const ct__rconn_cmd_t *cmds);

/* Read the reply of the oldest command sent and not yet read, within
 * `timeout` seconds, and hand it to cmd->on_reply (which may be NULL);
 * cmd->rc gets what it returns (0 without it), which is also returned.
 * CT_ETIMEDOUT if no reply came (logged: the connection is then of no
 * use). */
int ct__rsync_read(ct__rsync_t *c, double timeout, ct__rconn_cmd_t *cmd);

#endif
