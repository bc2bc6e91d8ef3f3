/* The process pool's parts, shared by its files (and by nothing else):
 *   procpool.c  the engine: its queue, finishing tasks, progress and stop,
 *               and the entry points of procpool.h;
 *   children.c  the children: slots, spawning, requests and results,
 *               timeouts, failure, dispatch;
 *   server.c    the link to the fork server: spawn and reap requests, its
 *               reports, its loss and restart;
 *   conn.c      framed socket I/O under all of them.
 * Everything here but the queue, the counters and the state (pool->lock)
 * is the loop thread's.
 */
#ifndef CT_LIB_PROCPOOL_INTERNAL_H
#define CT_LIB_PROCPOOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "core/runqueue.h"
#include "process/conn.h"
#include "process/procpool.h"

#define CT__DEFAULT_MAX_FRAME (16u << 20)
#define CT__FRAME_SLACK 512     /* room for the request wrapper around args */
#define CT__CLOSE_GRACE_MS 200  /* a child that closed its socket may exit */
#define CT__SPAWN_RETRY 0.5
/* After this many spawns in a row that the fork server could not fork
 * (RLIMIT_NPROC, memory), a pool with no child fails its queued tasks, as
 * one with no fork server does, instead of keeping them for a child that
 * may never come; it goes on trying. */
#define CT__SPAWN_FAILURES_MAX 3
/* A fork server that has not answered a spawn or reap request after this
 * many seconds (past the reap's grace) is taken for hung (stopped, or
 * deadlocked: a fork server forked while another thread held a lock its
 * first steps need) and killed, as one that talks nonsense is; another is
 * started. */
#define CT__SERVER_ANSWER_MAX 10.0
#define CT__RESTART_FIRST 0.1 /* first delay before starting a fork server again */
#define CT__RESTART_MAX 5.0   /* the delay doubles up to this */
#define CT__MAX_PASSED_FDS 16

enum { POOL_RUNNING, POOL_STOPPING, POOL_STOPPED };
enum slot_state { SLOT_EMPTY, SLOT_SPAWNING, SLOT_IDLE, SLOT_BUSY, SLOT_REAPING };

/* What a queued process task carries (in task->arg while queued, then in
 * its slot while it runs). */
typedef struct ct__proc_call {
  char *frame;
  size_t frame_len;
  ct__loop_t *reply_loop; /* where the task finishes (it outlives the pool), or NULL */
  double timeout; /* seconds it may run in its child: the task's or the pool's; 0: no bound */
  json_t *fallback; /* its result should the error that ends it not be
                       allocated (a MemoryError, made with the call) */
} ct__proc_call_t;

/* What one "spawned" report brings along: the child's socket and its
 * pidfd (each -1 if it did not arrive). */
typedef struct ct__passed {
  int sock, pidfd;
} ct__passed_t;

typedef struct ct__slot {
  struct ct__procpool *pool;
  int index;
  enum slot_state state;
  pid_t pid;
  int pidfd; /* the child's pidfd from the fork server, or -1 (none given) */
  ct__conn_t conn;
  ev_timer timer; /* the running task's timeout, a spawn retry, or the
                     wait for the fork server's answer (spawn or reap) */
  ct_task_t *task;
  ct__proc_call_t *call;
  bool orphan; /* a child of a fork server that died: no one reports its end */
} ct__slot_t;

/* Guards: I: set at creation, then read-only.  P: pool->lock.
 * A: atomic, any thread.  L: the loop thread only (or the creating thread
 * before the loop runs). */
struct ct__procpool {
  ct__procpool_cfg_t cfg;      /* I */
  ct_process_pool_opts_t opts; /* I */
  int nslots;                  /* I */

  pthread_mutex_t lock;        /* a leaf */
  pthread_cond_t stopped_cond; /* P: broadcast when state becomes STOPPED */
  ct__runqueue_t rq;           /* P */
  int state, running;          /* P */
  uint64_t submitted, queued, completed, failed, canceled; /* P */
  uint64_t crashed, timeouts, spawned;                     /* P */
  atomic_bool kick_posted;  /* A: kick_msg is in the loop's inbox */
  atomic_bool kill_posted;  /* A: a running task's cancel flag was set since the
                               loop last looked (the kick carries it) */
  ct__loop_msg_t kick_msg;  /* one suffices: kicks coalesce */
  ct__loop_msg_t setup_msg; /* posted once, by ct__procpool_start() */

  pid_t server_pid;                   /* L */
  ct__conn_t server;                  /* L */
  ct__passed_t passed[CT__MAX_PASSED_FDS]; /* L: oldest first */
  int npassed;                             /* L */
  bool server_gone, server_shut, on_loop; /* L */
  unsigned failed_spawns; /* L: spawns in a row the fork server could not fork */
  ev_timer restart_timer; /* L: starts a fork server again after restart_delay */
  ev_timer shut_timer;    /* L: a fork server told to end that does not is killed */
  double restart_delay;   /* L */
  ct__slot_t *slots;      /* I: the array; L: each slot */
};

/* procpool.c */
void ct__proc_log(ct__procpool_t *pool, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ct__proc_call_free(ct__proc_call_t *c);
/* Pool lock held: the first queued task that may start now, STARTED. */
ct_task_t *ct__proc_take_runnable(ct__procpool_t *pool);
/* Finish a started task with `result` (stolen), on its reply loop if it
 * has one; takes over the caller's reference and the call. */
void ct__proc_finish_task(ct__procpool_t *pool, ct_task_t *t, ct__proc_call_t *call,
                          json_t *result);
/* Finish the slot's task with `result` (stolen) and disarm its timeout. */
void ct__proc_slot_finish(ct__slot_t *s, json_t *result);
/* Dispatch what may start, fail what cannot run, wind down a stop. */
void ct__proc_check_progress(ct__procpool_t *pool);

/* children.c */
void ct__proc_request_spawn(ct__slot_t *s);
void ct__proc_schedule_spawn_retry(ct__slot_t *s);
void ct__proc_retry_spawn(struct ev_loop *ev, ev_timer *w, int revents);
int ct__proc_child_frame(void *ctx, json_t *frame);
json_t *ct__proc_stream_error(ct__slot_t *s, int rc);
void ct__proc_child_readable(struct ev_loop *ev, ev_io *w, int revents);
void ct__proc_child_writable(struct ev_loop *ev, ev_io *w, int revents);
void ct__proc_slot_fail(ct__slot_t *s, json_t *error, bool kill_child);
void ct__proc_kill_orphan(ct__slot_t *s);
void ct__proc_slot_forget_child(ct__slot_t *s);
void ct__proc_dispatch(ct__procpool_t *pool);
void ct__proc_kill_canceled(ct__procpool_t *pool);

/* server.c */
int ct__proc_server_send(ct__procpool_t *pool, json_t *msg);
int ct__proc_request_reap(ct__procpool_t *pool, pid_t pid, int slot, int grace_ms);
void ct__proc_restart_server(struct ev_loop *ev, ev_timer *w, int revents);

/* The fork server left a request unanswered for `waited` seconds (past
 * CT__SERVER_ANSWER_MAX): kill and reap it, and start another unless the
 * pool is winding down (server.c). */
void ct__proc_server_unanswering(ct__procpool_t *pool, double waited);
void ct__proc_server_readable(struct ev_loop *ev, ev_io *w, int revents);
void ct__proc_server_writable(struct ev_loop *ev, ev_io *w, int revents);

#endif
