/* Locker: a lock whose acquire waits at most a bound and reports, as
 * critical, when it cannot take the lock, instead of hanging (atasker's
 * Locker). A mutex and a condition variable on the monotonic clock guard
 * who holds it and how often; the report goes through the supervisor's
 * timeout callback (or its log), on the acquiring thread, after the
 * Locker's mutex is let go. The mutex is a leaf: nothing is taken under
 * it and no user code runs while it is held.
 */
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/cond.h"
#include "base/opts.h"
#include "ctasker/locker.h"
#include "supervisor/supervisor-internal.h"

struct ct_locker {
  ct_supervisor_t *sup; /* reports go to it */
  char *name;
  double timeout;       /* resolved: > 0, or no bound */
  bool recursive;
  pthread_mutex_t m;    /* guards what follows */
  pthread_cond_t c;     /* broadcast when it becomes free */
  bool held;
  pthread_t owner;      /* with held */
  unsigned depth;       /* times the owner holds it */
};

/* Copy and check the options; each bad field is logged through the
 * supervisor's log. *timeout: the bound, the supervisor's timeout_critical
 * for 0. Returns 0 or CT_EINVAL. */
static int read_options(ct_supervisor_t *sup, const ct_locker_opts_t *in, ct_locker_opts_t *o,
                        double *timeout) {
  ct_locker_opts_t defaults = CT_LOCKER_OPTS_INIT;
  ct__opts_check_t c = ct__sup_opts_check(sup, "ct_locker_opts_t", "ct_locker_new");
  *o = defaults;
  if (ct__opts_read(&c, o, sizeof *o, in, sizeof *o) != 0)
    return CT_EINVAL;
  if (!ct__opts_seconds(&c, "timeout", o->timeout, CT__SEC_LIMIT))
    return CT_EINVAL;
  *timeout = o->timeout > 0 ? o->timeout : sup->opts.timeout_critical;
  if (*timeout <= 0)
    ct__opts_bad(&c, "timeout", "0 takes the supervisor's timeout_critical, which is off: "
                 "a Locker needs a bound");
  return c.rc;
}

static int init_sync(ct_locker_t *l) {
  int rc = ct__cond_init_monotonic(&l->c);
  if (rc != 0)
    return CT_ENOMEM;
  if (pthread_mutex_init(&l->m, NULL) != 0) {
    pthread_cond_destroy(&l->c);
    return CT_ENOMEM;
  }
  return 0;
}

int ct_locker_new(ct_supervisor_t *sup, const ct_locker_opts_t *opts, ct_locker_t **out) {
  ct_locker_opts_t o;
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  double timeout;
  if (!sup || !out || read_options(sup, opts, &o, &timeout) != 0)
    return CT_EINVAL;
  ct_locker_t *l = calloc(1, sizeof *l);
  if (!l)
    return CT_ENOMEM;
  *l = (ct_locker_t){.sup = sup, .timeout = timeout, .recursive = o.recursive};
  if (!(l->name = strdup(o.name ? o.name : "locker")) || init_sync(l) != 0) {
    free(l->name);
    free(l);
    return CT_ENOMEM;
  }
  *out = l;
  return 0;
}

/* The Locker could not be taken in time: a critical report, no lock held. */
static void report(ct_locker_t *l) {
  ct_supervisor_t *sup = l->sup;
  if (sup->opts.on_timeout) {
    sup->opts.on_timeout(sup, NULL, CT_TIMEOUT_CRITICAL, true, sup->opts.timeout_data);
    return;
  }
  ct__sup_log(sup, CT_LOG_ERROR,
              "ctasker: locker %s not acquired within %g s (held by another thread): "
              "locking broken",
              l->name, l->timeout);
}

/* Under m: whether the calling thread holds it. */
static bool held_here(const ct_locker_t *l) {
  return l->held && pthread_equal(l->owner, pthread_self());
}

int ct_locker_acquire(ct_locker_t *l) {
  if (!l)
    return CT_EINVAL;
  struct timespec deadline;
  bool bounded = ct__timeout_deadline(l->timeout, &deadline);
  int rc = 0;
  pthread_mutex_lock(&l->m);
  if (held_here(l)) {
    rc = l->recursive ? 0 : CT_EDEADLK;
    l->depth += rc == 0;
    pthread_mutex_unlock(&l->m);
    return rc;
  }
  while (l->held && rc == 0) {
    if (!bounded)
      pthread_cond_wait(&l->c, &l->m);
    else if (pthread_cond_timedwait(&l->c, &l->m, &deadline) != 0 && l->held)
      rc = CT_ETIMEDOUT;
  }
  if (rc == 0) {
    l->held = true;
    l->owner = pthread_self();
    l->depth = 1;
  }
  pthread_mutex_unlock(&l->m);
  if (rc == CT_ETIMEDOUT)
    report(l);
  return rc;
}

int ct_locker_release(ct_locker_t *l) {
  if (!l)
    return CT_EINVAL;
  pthread_mutex_lock(&l->m);
  int rc = held_here(l) ? 0 : CT_EINVAL;
  if (rc == 0 && --l->depth == 0) {
    l->held = false;
    pthread_cond_broadcast(&l->c);
  }
  pthread_mutex_unlock(&l->m);
  return rc;
}

int ct_locker_free(ct_locker_t *l) {
  if (!l)
    return 0;
  pthread_mutex_lock(&l->m);
  bool held = l->held;
  pthread_mutex_unlock(&l->m);
  if (held)
    return CT_EBUSY;
  pthread_mutex_destroy(&l->m);
  pthread_cond_destroy(&l->c);
  free(l->name);
  free(l);
  return 0;
}
