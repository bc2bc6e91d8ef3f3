/* Creating and freeing workers: the top of the workers layer, the one
 * place that knows every kind (its table of operations) and every executor
 * (pool threads and loops by default, the process pool for a worker with a
 * process function), and that takes a worker out of its group when it is
 * freed. The base (worker.c) knows none of them by name.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cond.h"
#include "base/opts.h"
#include "workers/worker-internal.h"

static atomic_uint_fast64_t unnamed_seq;

static const ct__worker_ops_t *ops_of(ct_worker_kind_t kind) {
  switch (kind) {
  case CT_WORKER_BACKGROUND:
    return &ct__background_ops;
  case CT_WORKER_QUEUE:
    return &ct__queue_ops;
  case CT_WORKER_EVENT:
    return &ct__event_ops;
  case CT_WORKER_INTERVAL:
    return &ct__interval_ops;
  }
  return NULL;
}

/* The run function's symbol name, or "worker-N". */
static char *default_name(ct_worker_fn fn) {
  Dl_info info;
  void *addr;
  memcpy(&addr, &fn, sizeof addr);
  if (dladdr(addr, &info) && info.dli_sname && info.dli_saddr == addr)
    return strdup(info.dli_sname);
  char buf[32];
  snprintf(buf, sizeof buf, "worker-%llu",
           (unsigned long long)atomic_fetch_add(&unnamed_seq, 1) + 1);
  return strdup(buf);
}

/* Copy and check the options of a worker of sup running fn; each bad field
 * is logged through sup's log. Returns 0 or CT_EINVAL. */
static int read_worker_options(ct_supervisor_t *sup, ct_worker_fn fn, const ct_worker_opts_t *in,
                               ct_worker_opts_t *o) {
  ct_worker_opts_t defaults = CT_WORKER_OPTS_INIT;
  ct__opts_check_t c = ct__sup_opts_check(sup, "ct_worker_opts_t", "ct_worker_new");
  *o = defaults;
  if (ct__opts_read(&c, o, sizeof *o, in, offsetof(ct_worker_opts_t, loop)) != 0)
    return CT_EINVAL;
  ct__opts_int(&c, "priority", o->priority, CT_PRIORITY_CRITICAL, CT_PRIORITY_MAX);
  ct__opts_text(&c, "name", o->name);
  if (!fn == !o->process)
    ct__opts_bad(&c, "process", fn ? "given with a run function: give one of them"
                                   : "NULL and no run function: give one of them");
  if (o->loop && !ct__loop_is_own(sup, o->loop))
    ct__opts_bad(&c, "loop", "not a loop of this supervisor");
  if (o->loop && o->process)
    ct__opts_bad(&c, "loop", "a process worker runs in pool children, not on a loop");
  return c.rc;
}

static int init_sync(ct_worker_t *w) {
  int rc = ct__cond_init_monotonic(&w->cond);
  if (rc != 0)
    return CT_ENOMEM;
  if (pthread_mutex_init(&w->lock, NULL) != 0) {
    pthread_cond_destroy(&w->cond);
    return CT_ENOMEM;
  }
  return 0;
}

int ct_worker_new(ct_supervisor_t *sup, ct_worker_kind_t kind, ct_worker_fn fn,
                  const ct_worker_opts_t *opts, ct_worker_t **out) {
  ct_worker_opts_t o;
  const ct__worker_ops_t *ops = ops_of(kind);
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !out || !ops || read_worker_options(sup, fn, opts, &o) != 0)
    return CT_EINVAL;
  ct_worker_t *w = calloc(1, ops->size);
  if (!w)
    return CT_ENOMEM;
  w->ops = ops;
  w->sup = sup;
  w->kind = kind;
  w->fn = fn;
  w->base_priority = w->priority = o.priority;
  w->base_data = w->data = o.data;
  w->on_error = o.on_error;
  w->error_data = o.error_data;
  w->on_start = o.on_start;
  w->on_stop = o.on_stop;
  w->hook_data = o.hook_data;
  w->loop = o.loop;
  w->exec = &ct__thread_exec;
  atomic_init(&w->refs, 1);
  atomic_init(&w->state, CT_WORKER_INIT);
  int rc = o.process ? ct__worker_process_setup(w, &o) : 0;
  bool set_up = rc == 0 && ops->setup; /* destroy undoes only a setup that ran */
  if (set_up)
    rc = ops->setup(w, &o);
  if (rc == 0 && !(w->base_name = o.name      ? strdup(o.name)
                                  : o.process ? strdup(o.process)
                                              : default_name(fn)))
    rc = CT_ENOMEM;
  if (rc == 0)
    rc = init_sync(w);
  if (rc != 0) {
    if (set_up && ops->destroy)
      ops->destroy(w);
    free(w->base_name);
    free(w->process);
    free(w);
    return rc;
  }
  w->name = w->base_name;
  ct__worker_attach(w);
  *out = w;
  return 0;
}

int ct_worker_free(ct_worker_t *w) {
  if (!w)
    return 0;
  pthread_mutex_lock(&w->lock);
  int s = atomic_load(&w->state);
  bool busy = s == CT_WORKER_RUNNING || s == CT_WORKER_STOPPING;
  if (!busy)
    w->freed = true; /* a group holding a reference can no longer start it */
  pthread_mutex_unlock(&w->lock);
  if (busy)
    return CT_EBUSY;
  ct__group_forget(w);
  ct__worker_detach(w);
  ct__worker_unref(w);
  return 0;
}
