/* The fork server and the pool children's main loop.
 *
 * Protocol on the parent <-> fork server socket (frames, see frame.h):
 *   parent -> server  {"op":"spawn","slot":i}
 *                     {"op":"reap","pid":p,"slot":i,"grace":ms}  end the
 *                                             child (kill after the grace);
 *                                             ignored once it was reaped
 *   server -> parent  {"spawned":i,"pid":p}   with the parent's end of the
 *                                             child's socket and, where the
 *                                             kernel has them, a pidfd of the
 *                                             child (SCM_RIGHTS, one set),
 *                     {"spawned":i,"pid":0,"error":"..."}  without one,
 *                     {"reaped":p,"slot":i,"exit":n | "signal":n |
 *                      "lost":true,"killed":bool}  once per child: when it
 *                                             ended by itself, or on request
 * Parent <-> child:   {"id":n,"fn":"name","args":...} -> {"id":n,"result":...}
 * End of stream from the parent makes the server (and a child) exit.
 */
#ifndef CT_LIB_FORKSERVER_H
#define CT_LIB_FORKSERVER_H

#include <stddef.h>
#include <sys/types.h>

/* At the end of its parent's stream, the fork server gives its children
 * this long, in all, to end before it kills them. */
#define CT__SHUTDOWN_GRACE_MS 2000

/* Fork the fork server, with every signal blocked around fork() and the
 * process function table held still. Returns 0 with *pid and *fd (the
 * parent's end, close-on-exec), or CT_EAGAIN / CT_EMFILE / CT_ENOMEM. */
int ct__forkserver_start(size_t max_frame, pid_t *pid, int *fd);

#endif
