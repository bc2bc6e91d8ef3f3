/* The loop thread.
 *
 * Owns one libev loop. Other threads append messages to the inbox under
 * inbox_lock and call ev_async_send; the loop thread moves the whole inbox
 * out under the lock and runs the messages in order, without the lock, so
 * wake-ups coalesce and a message may post further messages.
 */
#include "loop.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "ctasker/common.h"

static _Thread_local ct__loop_t *own_loop;

static void drain_inbox(struct ev_loop *ev, ev_async *w, int revents) {
  (void)ev;
  (void)revents;
  ct__loop_t *loop = w->data;
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

int ct__loop_init(ct__loop_t *loop, void *data) {
  memset(loop, 0, sizeof *loop);
  atomic_init(&loop->quit_posted, false);
  loop->data = data;
  loop->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  if (!loop->ev)
    return CT_ENOMEM;
  if (pthread_mutex_init(&loop->inbox_lock, NULL) != 0) {
    ev_loop_destroy(loop->ev);
    return CT_ENOMEM;
  }
  if (pthread_mutex_init(&loop->join_lock, NULL) != 0) {
    pthread_mutex_destroy(&loop->inbox_lock);
    ev_loop_destroy(loop->ev);
    return CT_ENOMEM;
  }
  ev_async_init(&loop->inbox_wake, drain_inbox);
  loop->inbox_wake.data = loop;
  ev_async_start(loop->ev, &loop->inbox_wake);
  return 0;
}

static void *loop_main(void *arg) {
  ct__loop_t *loop = arg;
  own_loop = loop;
  ev_run(loop->ev, 0);
  /* A message posted between the last drain and the close is run now. */
  drain_inbox(loop->ev, &loop->inbox_wake, 0);
  if (loop->on_exit)
    loop->on_exit(loop);
  return NULL;
}

int ct__loop_start(ct__loop_t *loop, const char *name) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&loop->thread, NULL, loop_main, loop);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0)
    return CT_EAGAIN;
  pthread_setname_np(loop->thread, name);
  loop->thread_started = true;
  return 0;
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
  ev_async_send(loop->ev, &loop->inbox_wake);
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
  if (!loop->ev)
    return;
  ct__loop_msg_t *msg = loop->inbox_head;
  while (msg) {
    ct__loop_msg_t *next = msg->next;
    if (!msg->embedded)
      free(msg);
    msg = next;
  }
  ev_async_stop(loop->ev, &loop->inbox_wake);
  ev_loop_destroy(loop->ev);
  pthread_mutex_destroy(&loop->inbox_lock);
  pthread_mutex_destroy(&loop->join_lock);
  free(loop->name);
  loop->name = NULL;
  loop->ev = NULL;
}

bool ct__loop_is_own_thread(const ct__loop_t *loop) { return own_loop == loop; }

ct__loop_t *ct__loop_current(void) { return own_loop; }
