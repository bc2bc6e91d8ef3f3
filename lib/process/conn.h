/* Framed socket I/O on a libev loop: one socket, a read watcher the owner's
 * callback drives (feeding ct__frame_feed), and a write buffer flushed as
 * the socket takes it. Loop thread only. */
#ifndef CT_LIB_CONN_H
#define CT_LIB_CONN_H

#include <ev.h>
#include <stddef.h>

#include "process/frame.h"

typedef struct ct__conn {
  int fd; /* -1: closed */
  ev_io rio, wio;
  ct__frame_decoder_t dec;
  char *out;
  size_t out_len, out_off;
} ct__conn_t;

/* Take `fd` (frames up to `max` bytes) and start reading: on_read and
 * on_write are the watchers' callbacks, `data` their watchers' data. */
void ct__conn_init(struct ev_loop *ev, ct__conn_t *c, int fd, size_t max,
                   void (*on_read)(struct ev_loop *, ev_io *, int),
                   void (*on_write)(struct ev_loop *, ev_io *, int), void *data);

/* Stop the watchers, close the socket, drop what was not written (no-op
 * if closed). */
void ct__conn_close(struct ev_loop *ev, ct__conn_t *c);

/* Write what is pending. Returns 0, or -1 if the peer is gone. */
int ct__conn_flush(struct ev_loop *ev, ct__conn_t *c);

/* Queue bytes (copied) and try to write them. Returns 0 or -1. */
int ct__conn_send(struct ev_loop *ev, ct__conn_t *c, const char *buf, size_t len);

#endif
