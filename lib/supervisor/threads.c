/* Threads of their own for a supervisor's parts (a background worker's
 * runs), outside the thread pool and its caps, so that long-lived work can
 * never take the threads one-off tasks and other workers' runs need.
 *
 * Each thread starts with every signal blocked, names itself (a name of
 * the caller's, cut to what the kernel keeps) and is detached. The
 * supervisor counts them in own_threads: a thread is counted before the
 * state is read (as a submission is), a stop completes only once the count
 * is 0 (stop-check.c), and an ending thread lets go of the supervisor last,
 * under state_lock, so once a stop has seen STOPPED no such thread touches
 * the supervisor again and it may be freed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "supervisor/supervisor-internal.h"

typedef struct {
  ct_supervisor_t *sup;
  void (*fn)(void *arg);
  void *arg;
  char name[16]; /* the kernel keeps 15 bytes of a thread's name */
} ct__own_thread_t;

/* The supervisor whose own thread this is, or NULL. */
static _Thread_local ct_supervisor_t *own_sup;

/* Uncount a thread. A stop under way looks again. */
static void leave(ct_supervisor_t *sup) {
  atomic_fetch_sub(&sup->own_threads, 1);
  if (atomic_load(&sup->state) != CT__SUP_RUNNING)
    ct__loop_kick(&sup->loop, &sup->stop_check);
}

static void *own_main(void *p) {
  ct__own_thread_t t = *(ct__own_thread_t *)p;
  free(p);
  pthread_setname_np(pthread_self(), t.name);
  own_sup = t.sup;
  t.fn(t.arg);
  /* Under the lock: the stop's loop may end as soon as the count is 0, and
   * the supervisor may not be freed before this kick has returned. */
  pthread_mutex_lock(&t.sup->state_lock);
  leave(t.sup);
  pthread_mutex_unlock(&t.sup->state_lock);
  return NULL;
}

/* A detached thread with every signal blocked. Returns 0 or
 * pthread_create()'s error. */
static int spawn(ct__own_thread_t *t) {
  pthread_attr_t attr;
  pthread_t th;
  sigset_t all, old;
  if (pthread_attr_init(&attr) != 0)
    return ENOMEM;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&th, &attr, own_main, t);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return rc;
}

int ct__sup_thread_start(ct_supervisor_t *sup, const char *name, void (*fn)(void *arg),
                         void *arg) {
  ct__own_thread_t *t = malloc(sizeof *t);
  if (!t)
    return CT_ENOMEM;
  *t = (ct__own_thread_t){.sup = sup, .fn = fn, .arg = arg};
  snprintf(t->name, sizeof t->name, "%s", name);
  /* Counted before the state is read: a stop whose loop did not see the
   * count is a stop this check sees (both sequentially consistent). */
  atomic_fetch_add(&sup->own_threads, 1);
  int rc = atomic_load(&sup->state) == CT__SUP_RUNNING ? 0 : CT_ESHUTDOWN;
  if (rc == 0 && (rc = spawn(t)) != 0) {
    ct__sup_log(sup, CT_LOG_ERROR, "ctasker: could not start a thread for %s: %s", name,
                ct_strerror(-rc));
    rc = rc == ENOMEM ? CT_ENOMEM : CT_EAGAIN;
  }
  if (rc != 0) {
    free(t);
    leave(sup); /* the caller's part keeps the supervisor alive meanwhile */
  }
  return rc;
}

bool ct__sup_thread_is_own(const ct_supervisor_t *sup) { return own_sup == sup; }
