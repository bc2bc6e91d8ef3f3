/* The public process-pool calls: a supervisor's one process pool
 * (process/procpool.c, the engine) is created, given tasks and stopped
 * here. The supervisor fills in the pool's config: its own loop thread,
 * its log callback, and an on_stopped hook that pokes its stop check. A
 * task finishes on the submitting loop only if that is another loop of the
 * same supervisor (they live as long as the pool); a task from any other
 * loop finishes on the supervisor's loop.
 */
#include <stdlib.h>

#include "base/clock.h"
#include "process/procpool.h"
#include "supervisor/supervisor-internal.h"

/* The pool's on_stopped hook, on the loop thread. */
static void pool_stopped(void *data) {
  ct_supervisor_t *sup = data;
  ct__loop_kick(&sup->loop, &sup->stop_check);
}

int ct_process_pool_create(ct_supervisor_t *sup, const ct_process_pool_opts_t *opts) {
  ct_process_pool_opts_t o;
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup)
    return CT_EINVAL;
  ct__opts_check_t c = ct__sup_opts_check(sup, "ct_process_pool_opts_t", "ct_process_pool_create");
  if (ct__procpool_read_options(&c, opts, &o) != 0)
    return CT_EINVAL;
  if (ct__loop_is_own_thread(&sup->loop))
    return CT_EDEADLK;
  ct__procpool_cfg_t cfg = {.loop = &sup->loop,
                            .log = sup->opts.log,
                            .log_data = sup->opts.log_data,
                            .on_stopped = pool_stopped,
                            .data = sup};
  ct__procpool_t *pool = ct__procpool_new(&o, &cfg);
  if (!pool)
    return CT_ENOMEM;
  pthread_mutex_lock(&sup->state_lock);
  int state = atomic_load(&sup->state);
  int rc = atomic_load(&sup->procpool) ? CT_EBUSY
           : state == CT__SUP_INIT || state == CT__SUP_RUNNING ? 0
                                                                : CT_ESHUTDOWN;
  if (rc == 0)
    rc = ct__procpool_start(pool);
  if (rc == 0)
    atomic_store(&sup->procpool, pool);
  pthread_mutex_unlock(&sup->state_lock);
  if (rc != 0)
    ct__procpool_free(pool);
  return rc;
}

/* A process task takes the common task options but no arg_free (it has no
 * arg: its args are JSON, copied at submission). Its timeout goes into its
 * call (the child is killed), not into a deadline of the supervisor's: the
 * options the task is made with have none. */
static int read_task_opts(ct_supervisor_t *sup, const ct_task_opts_t *in, ct_task_opts_t *o,
                          double *timeout) {
  int rc = ct__read_task_options(sup, "ct_process_task", in, o);
  *timeout = o->timeout;
  o->timeout = 0;
  if (rc == 0 && o->arg_free) {
    ct__opts_check_t c = ct__sup_opts_check(sup, "ct_task_opts_t", "ct_process_task");
    rc = ct__opts_bad(&c, "arg_free", "a process task has no arg to free");
  }
  return rc;
}

/* Where a task submitted from this thread finishes (NULL: the pool's loop). */
static ct__loop_t *reply_loop(ct_supervisor_t *sup) {
  ct__loop_t *current = ct__loop_current();
  return current && current != &sup->loop && current->data == sup ? current : NULL;
}

/* Give a new process task (our reference) to the pool, or, with a delay,
 * its call prepared, to a delay timer (delay.c). Returns 0 or an error
 * (nothing taken). */
static int hand_over(ct_supervisor_t *sup, ct__procpool_t *pool, ct_task_t *t, const char *name,
                     const json_t *args, double delay, double timeout) {
  if (delay == 0) {
    ct__task_stamp_queued(t);
    return ct__procpool_submit(pool, t, name, args, reply_loop(sup), timeout);
  }
  int rc = ct__procpool_prepare(pool, t, name, args, reply_loop(sup), timeout);
  if (rc != 0)
    return rc;
  ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_DELAYED); /* nobody else sees t yet */
  if ((rc = ct__delay_start(sup, t, delay, NULL)) != 0)
    ct__procpool_release_call(t);
  return rc;
}

int ct__sup_process_task(ct_supervisor_t *sup, const char *name, const json_t *args,
                         const ct_task_opts_t *opts, ct_task_t **out) {
  ct_task_opts_t o;
  double timeout;
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !name || read_task_opts(sup, opts, &o, &timeout) != 0)
    return CT_EINVAL;
  ct__procpool_t *pool = atomic_load(&sup->procpool);
  if (!pool)
    return ct__sup_refuse_no_procpool(sup, "ct_process_task");
  if (atomic_load(&sup->state) != CT__SUP_RUNNING)
    return ct__sup_refuse_not_running(sup, "ct_process_task");
  ct_task_t *t = ct__supervisor_new_task(sup, NULL, NULL, &o, out != NULL,
                                         ct__supervisor_begin(sup));
  if (!t) {
    atomic_fetch_add(&sup->refused, 1);
    return CT_ENOMEM;
  }
  int rc = ct__supervisor_track(sup, t, out);
  if (rc == 0)
    rc = hand_over(sup, pool, t, name, args, o.delay, timeout);
  if (rc == 0) {
    ct__supervisor_publish(sup, out); /* findable only once the pool or a delay holds it */
    return 0;
  }
  ct__supervisor_abandon(sup, t, out);
  return rc;
}

int ct_process_task(ct_supervisor_t *sup, const char *name, const json_t *args,
                    const ct_task_opts_t *opts, ct_task_t **out) {
  return ct__sup_process_task(sup, name, args, opts, out);
}

int ct_process_pool_stop(ct_supervisor_t *sup, double timeout) {
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  ct__procpool_t *pool = atomic_load(&sup->procpool);
  if (!pool)
    return CT_ENOENT;
  ct__procpool_stop_begin(pool, false);
  int state = atomic_load(&sup->state);
  if (state == CT__SUP_INIT || state == CT__SUP_STOPPED)
    return 0; /* no loop to wind it down: ct_supervisor_free() does */
  if (timeout == 0 || ct__procpool_stopped(pool))
    return 0;
  if (ct__loop_is_own_thread(&sup->loop))
    return CT_EDEADLK;
  return ct__procpool_wait_stopped(pool, timeout);
}
