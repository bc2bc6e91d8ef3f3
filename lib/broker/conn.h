/* One Redis connection on a loop of its own (see conn.c). */
#ifndef CT_BROKER_CONN_H
#define CT_BROKER_CONN_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>

#include "ctasker/loop.h"
#include "url.h"

typedef struct ct__rconn ct__rconn_t;

typedef struct ct__rconn_opts {
  ct_supervisor_t *sup;
  const ct__redis_url_t *url; /* copied */
  double connect_timeout;     /* > 0 */
  double command_timeout;     /* > 0 */
  ct_log_fn log;              /* NULL: none */
  void *log_data;
} ct__rconn_opts_t;

/* Called on the loop thread with a command's reply (never NULL: a missing
 * reply is CT_ETIMEDOUT without a call), while the caller still waits; it
 * reads what it needs into data and returns the command's result code. */
typedef int (*ct__rconn_reply_fn)(const redisReply *reply, void *data);

/* Make the loop, connect and wait for the first attempt's outcome.
 * Returns 0 and *out; CT_ETIMEDOUT if the first attempt failed (logged);
 * CT_ENOMEM, CT_EAGAIN, CT_EMFILE, CT_ESHUTDOWN from making the loop. */
int ct__rconn_new(const ct__rconn_opts_t *o, ct__rconn_t **out);

/* Close and free; waits for the loop thread to end. NULL does nothing. */
void ct__rconn_free(ct__rconn_t *c);

/* Send one command and wait for its reply, which goes to on_reply.
 * Returns on_reply's code; CT_ETIMEDOUT if no reply came within the
 * command timeout (including the wait for a connection); CT_EDEADLK on
 * the connection's loop thread; CT_ESHUTDOWN if the loop has ended;
 * CT_ENOMEM. Thread-safety: any other thread. */
int ct__rconn_command(ct__rconn_t *c, int argc, const char **argv, const size_t *argvlen,
                      ct__rconn_reply_fn on_reply, void *data);

/* ct__rconn_command() with its own reply timeout (seconds, > 0), for a
 * command that blocks in the server, such as BLPOP. */
int ct__rconn_command_within(ct__rconn_t *c, double timeout, int argc, const char **argv,
                             const size_t *argvlen, ct__rconn_reply_fn on_reply, void *data);

/* Make the loop and start connecting, without waiting: commands posted
 * meanwhile wait for the connection, each within its own timeout, and a
 * failed attempt is made again with the same pause as a lost connection.
 * Returns 0 and *out; CT_ENOMEM, CT_EAGAIN, CT_EMFILE, CT_ESHUTDOWN from
 * making the loop. */
int ct__rconn_open(const ct__rconn_opts_t *o, ct__rconn_t **out);

/* Called on the loop thread once a command posted with ct__rconn_post() is
 * answered: rc is what its reader returned (0 without a reader), or, with
 * no reply, CT_ETIMEDOUT (none within its timeout, or the connection broke
 * after it was sent) or CT_ESHUTDOWN (the loop ended). */
typedef void (*ct__rconn_done_fn)(int rc, void *data);

/* Send one command without waiting for it: reply (may be NULL) reads the
 * reply, if one comes, and done (may be NULL) is called exactly once, both
 * on the loop thread, after which the connection no longer touches data. Returns 0; CT_ESHUTDOWN if
 * the loop has ended, CT_ENOMEM (done is then never called).
 * Thread-safety: any thread, the loop's included. */
int ct__rconn_post(ct__rconn_t *c, double timeout, int argc, const char **argv,
                   const size_t *argvlen, ct__rconn_reply_fn reply, ct__rconn_done_fn done,
                   void *data);

/* One command of a pipeline: argc, argv and argvlen (NULL: strlen) and the
 * reply function and its data as for ct__rconn_command(); rc: its code. */
typedef struct ct__rconn_cmd {
  int argc;
  const char **argv;
  const size_t *argvlen;
  ct__rconn_reply_fn on_reply;
  void *data;
  int rc; /* out */
} ct__rconn_cmd_t;

/* Send the n commands in one go (one hop to the loop, one write), in
 * order, each with the reply timeout `timeout` (seconds, > 0), and wait
 * for every reply: a command sent behind a blocking one (BLPOP) runs as
 * soon as that one returns, without another round trip. Returns 0 once
 * every cmds[i].rc is set (as ct__rconn_command() returns); CT_EDEADLK,
 * CT_ESHUTDOWN or CT_ENOMEM if none was sent. Thread-safety: any other
 * thread. */
int ct__rconn_pipeline(ct__rconn_t *c, double timeout, size_t n, ct__rconn_cmd_t *cmds);

/* The connection's loop (borrowed, valid until ct__rconn_free()), for
 * timers that go with the connection. */
ct_loop_t *ct__rconn_loop(ct__rconn_t *c);

/* Whether the calling thread is the connection's loop thread. */
bool ct__rconn_on_loop_thread(const ct__rconn_t *c);

/* Have fn(data) called on the loop thread as the loop ends (its supervisor
 * stopped, or ct__rconn_free()), after every command was answered; set
 * once, before anything depends on it. Returns 0; CT_ENOMEM; CT_ESHUTDOWN
 * if the loop has ended. */
int ct__rconn_on_end(ct__rconn_t *c, void (*fn)(void *data), void *data);

/* The server's CLIENT ID of the connection as it now is (asked for as
 * each connection becomes ready, ahead of every other command), or 0 while
 * not connected or not yet known. A connection made again has another.
 * Thread-safety: any thread. */
long long ct__rconn_client_id(ct__rconn_t *c);

/* Whether the connection is up now (made, AUTH and SELECT done), as its
 * loop last saw it: a command sent while it is down waits for it to be
 * made again, up to its timeout. Thread-safety: any thread. */
bool ct__rconn_up(ct__rconn_t *c);

/* How many times the connection has been made (AUTH and SELECT done): what
 * was learnt of the server on one connection may be stale on the next (it
 * may have restarted without its data). Thread-safety: any thread. */
unsigned ct__rconn_made(ct__rconn_t *c);

/* On the connection's loop thread only: send a command now without
 * waiting and without a deadline of its own (a command with one that
 * overruns drops the connection, and this one with it); fn (may be NULL)
 * gets the reply, or NULL if none comes, on the loop thread, as hiredis
 * calls it. Returns 0, or CT_EAGAIN while not connected (fn is then never
 * called). */
int ct__rconn_loop_send(ct__rconn_t *c, int argc, const char **argv, const size_t *argvlen,
                        redisCallbackFn *fn, void *data);

#endif
