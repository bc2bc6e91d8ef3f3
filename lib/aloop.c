/* Loops as users see them: the supervisor's own loop, named extra loops
 * ("aloops"), calls posted to a loop, and tasks executed on a loop.
 *
 * Every loop is a ct__loop_t (loop.c); extra ones are linked in
 * sup->aloops under sup->aloops_lock (a leaf), live until the supervisor is
 * freed, and are asked to quit (through their own inbox) when it stops.
 * An extra loop's libev loop and descriptors go when its thread ends (only
 * the struct, which callers may still hold, waits for the supervisor), so
 * creating and stopping loops does not use up descriptors.
 * A supervisor's stop completes only once every extra loop has ended: the
 * tasks they still hold finish through the supervisor (its registry and
 * counters), so they must not outlive it. A loop's thread says so, as its
 * last use of the supervisor, by counting itself out of `aloops_live` and
 * poking the stop check, both under aloops_lock: a stop check that sees
 * the count at 0 has seen every poke return.
 * A call or a task enters a loop only as an inbox message, so it runs on
 * the loop thread, in posting order.
 */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ctasker/loop.h"
#include "supervisor-internal.h"

typedef struct {
  ct__loop_msg_t msg;
  ct_loop_fn fn;
  void *data;
} ct__call_msg_t;

typedef struct {
  ct__loop_msg_t msg;
  ct_task_t *task;
} ct__exec_msg_t;

int ct__aloops_init(ct_supervisor_t *sup) {
  sup->aloops = sup->default_loop = NULL;
  sup->aloops_live = 0;
  return pthread_mutex_init(&sup->aloops_lock, NULL) == 0 ? 0 : CT_ENOMEM;
}

void ct__aloops_destroy(ct_supervisor_t *sup) {
  ct__loop_t *l = sup->aloops;
  while (l) {
    ct__loop_t *next = l->next;
    ct__loop_join(l);
    ct__loop_destroy(l);
    free(l);
    l = next;
  }
  pthread_mutex_destroy(&sup->aloops_lock);
}

static void quit_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)msg;
  ct__loop_quit(loop);
}

/* Ask a loop to end after what is already in its inbox. The message lives
 * in the loop, so asking cannot fail for want of memory; asking again is a
 * no-op. */
static void post_quit(ct__loop_t *loop) {
  if (atomic_exchange(&loop->quit_posted, true))
    return;
  loop->quit_msg.run = quit_on_loop;
  ct__loop_post_embedded(loop, &loop->quit_msg); /* fails only if already ended */
}

void ct__aloops_stop_all(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->aloops_lock);
  for (ct__loop_t *l = sup->aloops; l; l = l->next)
    post_quit(l);
  pthread_mutex_unlock(&sup->aloops_lock);
}

ct_loop_t *ct_supervisor_loop(ct_supervisor_t *sup) {
  if (!sup)
    sup = ct_supervisor_default();
  return sup ? &sup->loop : NULL;
}

static ct__loop_t *find_named(ct_supervisor_t *sup, const char *name) {
  for (ct__loop_t *l = sup->aloops; l; l = l->next)
    if (strcmp(l->name, name) == 0)
      return l;
  return NULL;
}

/* On the extra loop's thread, once it has run what it held. */
static void aloop_exited(ct__loop_t *loop) {
  ct_supervisor_t *sup = loop->data;
  pthread_mutex_lock(&sup->aloops_lock);
  sup->aloops_live--;
  ct__loop_kick(&sup->loop, &sup->stop_check);
  pthread_mutex_unlock(&sup->aloops_lock);
}

bool ct__aloops_ended(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->aloops_lock);
  bool ended = sup->aloops_live == 0;
  pthread_mutex_unlock(&sup->aloops_lock);
  return ended;
}

/* aloops_lock held: its thread counts itself out only after our count. */
static int start_new_loop(ct_supervisor_t *sup, const char *name, ct__loop_t **out) {
  ct__loop_t *l = malloc(sizeof *l);
  if (!l)
    return CT_ENOMEM;
  int rc = ct__loop_init(l, sup);
  if (rc != 0) {
    free(l);
    return rc;
  }
  l->release_at_exit = true;
  l->on_exit = aloop_exited;
  if (!(l->name = strdup(name)))
    rc = CT_ENOMEM;
  if (rc == 0)
    rc = ct__loop_start(l, "ct-aloop");
  if (rc != 0) {
    ct__loop_destroy(l);
    free(l);
    return rc;
  }
  *out = l;
  return 0;
}

int ct_loop_create(ct_supervisor_t *sup, const char *name, ct_loop_t **out) {
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !name || !*name || !out)
    return CT_EINVAL;
  pthread_mutex_lock(&sup->aloops_lock);
  int rc = atomic_load(&sup->state) != CT__SUP_RUNNING ? CT_ESHUTDOWN
           : find_named(sup, name)                     ? CT_EBUSY
                                                       : 0;
  ct__loop_t *l = NULL;
  if (rc == 0)
    rc = start_new_loop(sup, name, &l);
  if (rc == 0) {
    sup->aloops_live++;
    l->next = sup->aloops;
    sup->aloops = l;
    *out = l;
  }
  pthread_mutex_unlock(&sup->aloops_lock);
  return rc;
}

int ct_loop_get(ct_supervisor_t *sup, const char *name, ct_loop_t **out) {
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !out)
    return CT_EINVAL;
  pthread_mutex_lock(&sup->aloops_lock);
  ct__loop_t *l = name ? find_named(sup, name) : sup->default_loop ? sup->default_loop : &sup->loop;
  pthread_mutex_unlock(&sup->aloops_lock);
  *out = l;
  return l ? 0 : CT_ENOENT;
}

int ct_loop_set_default(ct_supervisor_t *sup, ct_loop_t *loop) {
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup)
    return CT_EINVAL;
  pthread_mutex_lock(&sup->aloops_lock);
  bool known = !loop || loop == &sup->loop;
  for (ct__loop_t *l = sup->aloops; l && !known; l = l->next)
    known = l == loop;
  if (known)
    sup->default_loop = loop == &sup->loop ? NULL : loop;
  pthread_mutex_unlock(&sup->aloops_lock);
  return known ? 0 : CT_EINVAL;
}

const char *ct_loop_name(const ct_loop_t *loop) { return loop && loop->name ? loop->name : ""; }

int ct_loop_stop(ct_loop_t *loop, double timeout) {
  if (!loop || !loop->name || !ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  post_quit(loop);
  if (timeout == 0)
    return 0;
  if (ct__loop_is_own_thread(loop))
    return CT_EDEADLK;
  ct__loop_join(loop); /* not under aloops_lock: calls on the loop may take it */
  return 0;
}

static void run_call(ct__loop_t *loop, ct__loop_msg_t *msg) {
  ct__call_msg_t *m = (ct__call_msg_t *)msg;
  m->fn(loop, loop->ev, m->data);
  free(m);
}

int ct_loop_call(ct_loop_t *loop, ct_loop_fn fn, void *data) {
  if (!loop || !fn)
    return CT_EINVAL;
  ct__call_msg_t *m = malloc(sizeof *m);
  if (!m)
    return CT_ENOMEM;
  m->msg.run = run_call;
  m->fn = fn;
  m->data = data;
  int rc = ct__loop_post(loop, &m->msg);
  if (rc != 0)
    free(m);
  return rc;
}

/* Counted here, as the pool counts its own: no pool sees a loop's tasks
 * (a cancel counts itself in ct_task_cancel()). */
static void run_task_on_loop(ct__loop_t *loop, ct__loop_msg_t *msg) {
  (void)loop;
  ct__exec_msg_t *m = (ct__exec_msg_t *)msg;
  ct_task_t *t = m->task;
  ct_supervisor_t *sup = t->sup;
  free(m);
  if (!ct__task_try_status(t, CT_TASK_QUEUED, CT_TASK_STARTED)) {
    ct_task_unref(t); /* canceled while it waited in the inbox */
    return;
  }
  ct__task_stamp_started(t);
  bool failed = ct__task_run_and_release(t);
  atomic_fetch_add(failed ? &sup->loop_failed : &sup->loop_completed, 1);
}

int ct__loop_exec(ct__loop_t *loop, ct_task_t *t) {
  ct__exec_msg_t *m = malloc(sizeof *m);
  if (!m)
    return CT_ENOMEM;
  m->msg.run = run_task_on_loop;
  m->task = t;
  atomic_fetch_or(&t->flags, CT__F_ON_LOOP);
  int rc = ct__loop_post(loop, &m->msg);
  if (rc != 0)
    free(m);
  return rc;
}
