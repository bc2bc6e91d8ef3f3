/* A libev loop running in its own thread, reached from other threads only
 * through a locked inbox and a wake-up eventfd (DESIGN decision 7). */
#ifndef CT_LIB_LOOP_H
#define CT_LIB_LOOP_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "base/list.h"
#include "core/task-internal.h"

/* The public ct_loop_t (loop.h) is this struct. */
typedef struct ct_loop ct__loop_t;

/* A message for the loop thread. The sender allocates it; `run` is called
 * on the loop thread and then owns it (frees it or keeps it). */
typedef struct ct__loop_msg {
  struct ct__loop_msg *next;
  void (*run)(ct__loop_t *loop, struct ct__loop_msg *msg);
  bool embedded; /* set by the post call: never freed by the loop */
} ct__loop_msg_t;

/* A coalescing wake-up with a handler, as libev's ev_async (which the loop
 * does not use: see loop.c). Kicks before the handler runs merge into one
 * run of it, on the loop thread. */
typedef struct ct__loop_kick {
  struct ct__loop_kick *next;
  void (*run)(ct__loop_t *loop, struct ct__loop_kick *kick);
  void *data;
  atomic_bool pending;
} ct__loop_kick_t;

/* Guards: I: set before the thread starts, then read-only.  B: inbox_lock.
 * J: join_lock.  T: the loop thread only.  A: atomic, any thread.
 * O: the owner of the loop (its supervisor, under its loops_lock). */
struct ct_loop {
  struct ev_loop *ev;  /* T; NULL once released (loop.c) */
  int wake_fd;         /* I: an eventfd the loop thread watches with wake_io */
  ev_io wake_io;       /* T */
  atomic_bool wake_sent; /* A: a wake-up is written and not yet read */
  ct__loop_kick_t *kicks; /* I */
  pthread_mutex_t inbox_lock; /* a leaf */
  ct__loop_msg_t *inbox_head, *inbox_tail; /* B */
  bool closed;      /* B: no more messages are taken */
  const char *thread_name; /* I: a static string: the thread names itself */
  pthread_mutex_t join_lock; /* a leaf */
  pthread_t thread;    /* J */
  bool thread_started; /* J */
  bool joined;         /* J */
  void (*on_exit)(ct__loop_t *loop); /* I: on the loop thread, after ev_run returns */
  bool release_at_exit; /* I: extra loops: descriptors go when the thread ends */
  void *data;           /* I */
  ct__loop_msg_t quit_msg;  /* extra loops (supervisor/loops.c): posted once, by its flag */
  atomic_bool quit_posted;  /* A */
  char *name;          /* I: extra loops (supervisor/loops.c): owned; NULL for the supervisor's */
  ct__list_t in_owner; /* O: in its owner's list (a supervisor's extra loops) */
};

/* Create the libev loop and its wake-up descriptor (not yet running).
 * Returns 0, CT_EMFILE (no descriptor) or CT_ENOMEM; never aborts. */
int ct__loop_init(ct__loop_t *loop, void *data);

/* Register a kick (before the thread starts): run(loop, kick) runs on the
 * loop thread after ct__loop_kick(). */
void ct__loop_add_kick(ct__loop_t *loop, ct__loop_kick_t *kick,
                       void (*run)(ct__loop_t *loop, ct__loop_kick_t *kick), void *data);

/* Any thread: have the kick's handler run soon on the loop thread. The loop
 * must not have been destroyed (a kick after the thread has ended is
 * harmless: nothing runs). Not for loops with release_at_exit. */
void ct__loop_kick(ct__loop_t *loop, ct__loop_kick_t *kick);

/* Start the loop thread (signals blocked; it names itself `name`, a static
 * string). Returns 0 or CT_EAGAIN. */
int ct__loop_start(ct__loop_t *loop, const char *name);

/* Post a message; any thread. Returns 0, or CT_ESHUTDOWN once the loop has
 * ended (the message is then not taken). */
int ct__loop_post(ct__loop_t *loop, ct__loop_msg_t *msg);

/* Post a message that lives inside another object (so it is never freed
 * by the loop); the same otherwise. */
int ct__loop_post_embedded(ct__loop_t *loop, ct__loop_msg_t *msg);

/* On the loop thread: make ev_run return after this iteration; messages
 * posted later are refused. */
void ct__loop_quit(ct__loop_t *loop);

/* Join the loop thread once (no-op if never started or already joined).
 * Any thread but the loop's; callers may join at the same time, and each
 * returns once the thread has ended. Call it with no lock held that code on
 * the loop thread may take. */
void ct__loop_join(ct__loop_t *loop);

/* Free the loop; the thread must have been joined. Messages never run (a
 * loop that never started) are freed with free(), embedded ones left.
 * Descriptors already released at the thread's end are not touched again. */
void ct__loop_destroy(ct__loop_t *loop);

/* Counters of the tasks run on loops (exec/loop-task.c), which no pool
 * counts; the caller keeps them, as many loops may share one set. */
typedef struct ct__loop_counts {
  atomic_uint_fast64_t completed, failed, canceled;
  atomic_uint_fast64_t accepted; /* counted before the outcome: read it last */
} ct__loop_counts_t;

/* Run a QUEUED task on the loop's thread, in posting order; the loop takes
 * the reference and counts the outcome in *counts, which must outlive it.
 * Returns 0, CT_ENOMEM or CT_ESHUTDOWN (nothing taken). Any thread. */
int ct__loop_exec(ct__loop_t *loop, ct_task_t *t, ct__loop_counts_t *counts);

/* ct__loop_exec() for a DELAYED task whose delay has passed: it is counted
 * accepted before it turns QUEUED, so that a cancel that finds it QUEUED
 * (and counts itself canceled) never comes before its acceptance, which
 * would make the count of active loop tasks wrap. Returns 0 (taken);
 * CT_EALREADY if it was canceled while DELAYED (nothing taken, nothing
 * counted); CT_ENOMEM or CT_ESHUTDOWN if the loop refused it: it is QUEUED
 * then and counted accepted, and the caller cancels it with
 * ct__loop_cancel_queued(), which balances the count. Any thread. */
int ct__loop_exec_delayed(ct__loop_t *loop, ct_task_t *t, ct__loop_counts_t *counts);

/* Cancel a QUEUED task given to ct__loop_exec(): true if this call made it
 * CANCELED (it is dropped when its message runs). Any thread. */
bool ct__loop_cancel_queued(ct__loop_counts_t *counts, ct_task_t *t);

/* Whether the calling thread is this loop's thread. */
bool ct__loop_is_own_thread(const ct__loop_t *loop);

/* The loop whose thread is calling, or NULL on any other thread. */
ct__loop_t *ct__loop_current(void);

#endif
