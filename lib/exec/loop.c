/* The loop thread.
 *
 * Owns one libev loop. Other threads append messages to the inbox under
 * inbox_lock and wake the loop; the loop thread moves the whole inbox out
 * under the lock and runs the messages in order, without the lock, so
 * wake-ups coalesce and a message may post further messages.
 *
 * The wake-up is an eventfd of our own, watched with an ev_io, not an
 * ev_async: libev creates the ev_async descriptor lazily, inside
 * ev_async_start, and aborts the process (ev_syserr) if it cannot, which is
 * exactly when a host has run out of descriptors. Making the descriptor
 * here lets ct__loop_init() return CT_EMFILE instead. The write is
 * coalesced as libev's is: wake_sent is set by the writer that writes, and
 * cleared by the loop thread after it has read the eventfd and before it
 * looks at the inbox and the kicks, so a writer that skips its write
 * (wake_sent still set) posted before the look and is seen by it.
 *
 * The thread names itself: naming it from the creating thread would use a
 * pthread_t whose thread may already have ended and been joined.
 */
#include "exec/loop.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ctasker/common.h"

static _Thread_local ct__loop_t *own_loop;

static void drain_inbox(ct__loop_t *loop) {
  pthread_mutex_lock(&loop->inbox_lock);
  ct__loop_msg_t *msg = loop->inbox_head;
  loop->inbox_head = loop->inbox_tail = NULL;
  pthread_mutex_unlock(&loop->inbox_lock);
  while (msg) {
    ct__loop_msg_t *next = msg->next;
    msg->run(loop, msg);
    msg = next;
  }
}

static void run_kicks(ct__loop_t *loop) {
  for (ct__loop_kick_t *k = loop->kicks; k; k = k->next)
    if (atomic_exchange(&k->pending, false))
      k->run(loop, k);
}

static void on_wake(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  (void)revents;
  ct__loop_t *loop = w->data;
  uint64_t n;
  (void)!read(loop->wake_fd, &n, sizeof n); /* EAGAIN: a spurious wake-up */
  /* Cleared after the read: a writer that skips its write from here on
   * posted before this point, so the drain below sees its message. */
  atomic_store(&loop->wake_sent, false);
  drain_inbox(loop);
  run_kicks(loop);
}

/* Wake the loop thread; the write is skipped when one is already pending. */
static void wake(ct__loop_t *loop) {
  if (atomic_exchange(&loop->wake_sent, true))
    return;
  uint64_t one = 1;
  (void)!write(loop->wake_fd, &one, sizeof one); /* EAGAIN: already readable */
}

int ct__loop_init(ct__loop_t *loop, void *data) {
  memset(loop, 0, sizeof *loop);
  atomic_init(&loop->quit_posted, false);
  atomic_init(&loop->wake_sent, false);
  loop->data = data;
  loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop->wake_fd < 0)
    return errno == EMFILE || errno == ENFILE ? CT_EMFILE : CT_ENOMEM;
  /* ev_loop_new returns NULL when no backend can start (with no descriptor
   * left it falls back to poll, which needs none). */
  loop->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  int rc = loop->ev ? 0 : errno == EMFILE || errno == ENFILE ? CT_EMFILE : CT_ENOMEM;
  if (rc == 0 && pthread_mutex_init(&loop->inbox_lock, NULL) != 0)
    rc = CT_ENOMEM;
  if (rc == 0 && pthread_mutex_init(&loop->join_lock, NULL) != 0) {
    pthread_mutex_destroy(&loop->inbox_lock);
    rc = CT_ENOMEM;
  }
  if (rc != 0) {
    if (loop->ev)
      ev_loop_destroy(loop->ev);
    close(loop->wake_fd);
    return rc;
  }
  ev_io_init(&loop->wake_io, on_wake, loop->wake_fd, EV_READ);
  loop->wake_io.data = loop;
  ev_io_start(loop->ev, &loop->wake_io);
  return 0;
}

void ct__loop_add_kick(ct__loop_t *loop, ct__loop_kick_t *kick,
                       void (*run)(ct__loop_t *loop, ct__loop_kick_t *kick), void *data) {
  kick->run = run;
  kick->data = data;
  atomic_init(&kick->pending, false);
  kick->next = loop->kicks;
  loop->kicks = kick;
}

void ct__loop_kick(ct__loop_t *loop, ct__loop_kick_t *kick) {
  atomic_store(&kick->pending, true);
  wake(loop);
}

/* Close the libev loop and the wake-up descriptor. Only once nobody can
 * write to it: the inbox is closed and no kick is sent any more. */
static void release(ct__loop_t *loop) {
  if (!loop->ev)
    return;
  ev_io_stop(loop->ev, &loop->wake_io);
  ev_loop_destroy(loop->ev);
  close(loop->wake_fd);
  loop->ev = NULL;
  loop->wake_fd = -1;
}

static bool inbox_closed(ct__loop_t *loop) {
  pthread_mutex_lock(&loop->inbox_lock);
  bool closed = loop->closed;
  pthread_mutex_unlock(&loop->inbox_lock);
  return closed;
}

static void *loop_main(void *arg) {
  ct__loop_t *loop = arg;
  own_loop = loop;
  pthread_setname_np(pthread_self(), loop->thread_name);
  /* Only ct__loop_quit() ends the loop. ev_run() also returns when a call
   * broke it, or unreferenced the loop (libev's ev_unref(), after starting
   * a watcher of its own) until libev counts no active watcher, ours on
   * the inbox included: count one again and go on, so that what is posted
   * later is still run. */
  ev_run(loop->ev, 0);
  while (!inbox_closed(loop)) {
    ev_ref(loop->ev);
    ev_run(loop->ev, 0);
  }
  /* A message posted between the last drain and the close is run now. */
  drain_inbox(loop);
  if (loop->on_exit)
    loop->on_exit(loop);
  if (loop->release_at_exit)
    release(loop); /* the inbox is closed: ev_run ends only by quit */
  return NULL;
}

int ct__loop_start(ct__loop_t *loop, const char *name) {
  sigset_t all, old;
  sigfillset(&all);
  loop->thread_name = name;
  /* Under join_lock: a joiner sees the thread and thread_started together. */
  pthread_mutex_lock(&loop->join_lock);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&loop->thread, NULL, loop_main, loop);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  loop->thread_started = rc == 0;
  pthread_mutex_unlock(&loop->join_lock);
  return rc == 0 ? 0 : CT_EAGAIN;
}

static int post(ct__loop_t *loop, ct__loop_msg_t *msg, bool embedded) {
  msg->next = NULL;
  msg->embedded = embedded;
  pthread_mutex_lock(&loop->inbox_lock);
  if (loop->closed) {
    pthread_mutex_unlock(&loop->inbox_lock);
    return CT_ESHUTDOWN;
  }
  if (loop->inbox_tail)
    loop->inbox_tail->next = msg;
  else
    loop->inbox_head = msg;
  loop->inbox_tail = msg;
  /* Sent under the lock so that the loop cannot be destroyed in between. */
  wake(loop);
  pthread_mutex_unlock(&loop->inbox_lock);
  return 0;
}

int ct__loop_post(ct__loop_t *loop, ct__loop_msg_t *msg) { return post(loop, msg, false); }

int ct__loop_post_embedded(ct__loop_t *loop, ct__loop_msg_t *msg) {
  return post(loop, msg, true);
}

void ct__loop_quit(ct__loop_t *loop) {
  pthread_mutex_lock(&loop->inbox_lock);
  loop->closed = true;
  pthread_mutex_unlock(&loop->inbox_lock);
  ev_break(loop->ev, EVBREAK_ALL);
}

void ct__loop_join(ct__loop_t *loop) {
  pthread_mutex_lock(&loop->join_lock);
  if (loop->thread_started && !loop->joined) {
    pthread_join(loop->thread, NULL);
    loop->joined = true;
  }
  pthread_mutex_unlock(&loop->join_lock);
}

void ct__loop_destroy(ct__loop_t *loop) {
  ct__loop_msg_t *msg = loop->inbox_head;
  while (msg) {
    ct__loop_msg_t *next = msg->next;
    if (!msg->embedded)
      free(msg);
    msg = next;
  }
  loop->inbox_head = loop->inbox_tail = NULL;
  release(loop);
  pthread_mutex_destroy(&loop->inbox_lock);
  pthread_mutex_destroy(&loop->join_lock);
  free(loop->name);
  loop->name = NULL;
}

bool ct__loop_is_own_thread(const ct__loop_t *loop) { return own_loop == loop; }

ct__loop_t *ct__loop_current(void) { return own_loop; }
