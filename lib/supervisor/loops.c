/* Loops as users see them: the supervisor's own loop, named extra loops
 * (atasker's "aloops"; their threads are named "ct-aloop"), and calls
 * posted to a loop.
 *
 * Every loop is a ct__loop_t (exec/loop.c); extra ones are linked in
 * sup->extra_loops under sup->loops_lock (before a loop's own locks), live
 * until the supervisor is freed, and are asked to quit (through their own
 * inbox) when it stops.
 * An extra loop's libev loop and descriptors go when its thread ends (only
 * the struct, which callers may still hold, waits for the supervisor), so
 * creating and stopping loops does not use up descriptors.
 * A supervisor's stop completes only once every extra loop has ended: the
 * tasks they still hold finish through the supervisor (its registry and
 * counters), so they must not outlive it. A loop's thread says so, as its
 * last use of the supervisor, by counting itself out of `loops_live` and
 * poking the stop check, both under loops_lock: a stop check that sees
 * the count at 0 has seen every poke return.
 * The stop asks the loops to end before the state leaves RUNNING, so the
 * same walk under loops_lock closes the list (`loops_closed`): a loop made
 * after it, the state still RUNNING, would never be asked, and the stop
 * would wait for it for ever.
 * A call enters a loop only as an inbox message, so it runs on the loop
 * thread, in posting order (tasks too: exec/loop-task.c).
 */
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "ctasker/loop.h"
#include "supervisor/supervisor-internal.h"

typedef struct {
  ct__loop_msg_t msg;
  ct_loop_fn fn;
  void *data;
} ct__call_msg_t;

/* The extra loop linked by `node`. */
static ct__loop_t *loop_of(ct__list_t *node) { return ct__list_entry(node, ct__loop_t, in_owner); }

int ct__loops_init(ct_supervisor_t *sup) {
  ct__list_init(&sup->extra_loops);
  sup->default_loop = NULL;
  sup->loops_live = 0;
  sup->loops_closed = false;
  return pthread_mutex_init(&sup->loops_lock, NULL) == 0 ? 0 : CT_ENOMEM;
}

void ct__loops_destroy(ct_supervisor_t *sup) {
  while (!ct__list_empty(&sup->extra_loops)) {
    ct__loop_t *l = loop_of(sup->extra_loops.next);
    ct__list_remove(&l->in_owner);
    ct__loop_join(l);
    ct__loop_destroy(l);
    free(l);
  }
  pthread_mutex_destroy(&sup->loops_lock);
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

void ct__loops_stop_all(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->loops_lock);
  sup->loops_closed = true;
  ct__list_t *node;
  ct__list_foreach(node, &sup->extra_loops) {
    post_quit(loop_of(node));
  }
  pthread_mutex_unlock(&sup->loops_lock);
}

ct_loop_t *ct_supervisor_loop(ct_supervisor_t *sup) {
  if (!sup)
    sup = ct_supervisor_default();
  return sup ? &sup->loop : NULL;
}

static ct__loop_t *find_named(ct_supervisor_t *sup, const char *name) {
  ct__list_t *node;
  ct__list_foreach(node, &sup->extra_loops) {
    if (strcmp(loop_of(node)->name, name) == 0)
      return loop_of(node);
  }
  return NULL;
}

/* On the extra loop's thread, once it has run what it held. */
static void extra_loop_exited(ct__loop_t *loop) {
  ct_supervisor_t *sup = loop->data;
  pthread_mutex_lock(&sup->loops_lock);
  sup->loops_live--;
  ct__loop_kick(&sup->loop, &sup->stop_check);
  pthread_mutex_unlock(&sup->loops_lock);
}

bool ct__loops_ended(ct_supervisor_t *sup) {
  pthread_mutex_lock(&sup->loops_lock);
  bool ended = sup->loops_live == 0;
  pthread_mutex_unlock(&sup->loops_lock);
  return ended;
}

/* loops_lock held: its thread counts itself out only after our count. */
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
  l->on_exit = extra_loop_exited;
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
  pthread_mutex_lock(&sup->loops_lock);
  bool accepting = !sup->loops_closed && atomic_load(&sup->state) == CT__SUP_RUNNING;
  int rc = !accepting ? CT_ESHUTDOWN : find_named(sup, name) ? CT_EBUSY : 0;
  ct__loop_t *l = NULL;
  if (rc == 0)
    rc = start_new_loop(sup, name, &l);
  if (rc == 0) {
    sup->loops_live++;
    ct__list_push_front(&sup->extra_loops, &l->in_owner);
    *out = l;
  }
  pthread_mutex_unlock(&sup->loops_lock);
  return rc == CT_ESHUTDOWN ? ct__sup_refuse_not_running(sup, "ct_loop_create") : rc;
}

int ct_loop_get(ct_supervisor_t *sup, const char *name, ct_loop_t **out) {
  if (out)
    *out = NULL;
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup || !out)
    return CT_EINVAL;
  pthread_mutex_lock(&sup->loops_lock);
  ct__loop_t *l = name ? find_named(sup, name) : sup->default_loop ? sup->default_loop : &sup->loop;
  pthread_mutex_unlock(&sup->loops_lock);
  *out = l;
  return l ? 0 : CT_ENOENT;
}

int ct_loop_set_default(ct_supervisor_t *sup, ct_loop_t *loop) {
  if (!sup)
    sup = ct_supervisor_default();
  if (!sup)
    return CT_EINVAL;
  pthread_mutex_lock(&sup->loops_lock);
  bool known = !loop || loop == &sup->loop;
  ct__list_t *node;
  ct__list_foreach(node, &sup->extra_loops) {
    known = known || loop_of(node) == loop;
  }
  if (known)
    sup->default_loop = loop == &sup->loop ? NULL : loop;
  pthread_mutex_unlock(&sup->loops_lock);
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
  ct__loop_join(loop); /* not under loops_lock: calls on the loop may take it */
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
