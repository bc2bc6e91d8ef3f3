/* Framed socket I/O for the process pool (conn.h): the parent's side of
 * each child's socket and of the fork server's. Writes never block: what
 * the socket does not take waits in `out` and goes when the write watcher
 * fires; MSG_NOSIGNAL keeps a peer that went away from raising SIGPIPE.
 */
#include "process/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void ct__conn_init(struct ev_loop *ev, ct__conn_t *c, int fd, size_t max,
                   void (*on_read)(struct ev_loop *, ev_io *, int),
                   void (*on_write)(struct ev_loop *, ev_io *, int), void *data) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  ct__frame_decoder_init(&c->dec, max);
  ev_io_init(&c->rio, on_read, fd, EV_READ);
  ev_io_init(&c->wio, on_write, fd, EV_WRITE);
  c->rio.data = c->wio.data = data;
  ev_io_start(ev, &c->rio);
}

void ct__conn_close(struct ev_loop *ev, ct__conn_t *c) {
  if (c->fd < 0)
    return;
  ev_io_stop(ev, &c->rio);
  ev_io_stop(ev, &c->wio);
  close(c->fd);
  c->fd = -1;
  free(c->out);
  c->out = NULL;
  c->out_len = c->out_off = 0;
  ct__frame_decoder_reset(&c->dec);
}

int ct__conn_flush(struct ev_loop *ev, ct__conn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      ev_io_start(ev, &c->wio);
      return 0;
    }
    if (n <= 0)
      return -1;
    c->out_off += (size_t)n;
  }
  ev_io_stop(ev, &c->wio);
  free(c->out);
  c->out = NULL;
  c->out_len = c->out_off = 0;
  return 0;
}

int ct__conn_send(struct ev_loop *ev, ct__conn_t *c, const char *buf, size_t len) {
  char *out = realloc(c->out, c->out_len + len);
  if (!out)
    return -1;
  memcpy(out + c->out_len, buf, len);
  c->out = out;
  c->out_len += len;
  return ct__conn_flush(ev, c);
}
