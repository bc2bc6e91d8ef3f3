/* Triggers from signal handlers: ct_event_worker_signal() may only use
 * what is async-signal-safe, so it takes no lock and allocates nothing. It
 * marks the worker (an atomic or) and kicks the supervisor's loop (an
 * atomic exchange and a write(2) to its eventfd). On the loop thread the
 * supervisor collects the marked parts (parts.c) and the worker's hook
 * passes the mark on as one ct_event_worker_trigger(): marks that come
 * before it runs merge, as triggers do.
 */
#include <errno.h>

#include "workers/worker-internal.h"

int ct_event_worker_signal(ct_worker_t *w, bool force) {
  if (!w || (w->kind != CT_WORKER_EVENT && w->kind != CT_WORKER_INTERVAL))
    return CT_EINVAL;
  if (atomic_load(&w->state) != CT_WORKER_RUNNING)
    return CT_ESHUTDOWN;
  int saved = errno; /* the interrupted code's */
  atomic_fetch_or(&w->signal_bits, CT__SIGNAL_WANTED | (force ? CT__SIGNAL_FORCE : 0));
  ct__sup_signal(w->sup);
  errno = saved;
  return 0;
}

bool ct__worker_has_signal(ct_worker_t *w) { return atomic_load(&w->signal_bits) != 0; }

static void say_dropped(ct_worker_t *w) {
  ct__sup_log(w->sup, CT_LOG_WARNING,
              "ctasker: worker %s: a trigger from a signal handler came after its stop; dropped",
              ct_worker_name(w));
}

/* Supervisor's loop thread, no lock held; the worker is held. */
void ct__worker_on_signal(ct_worker_t *w) {
  unsigned bits = atomic_exchange(&w->signal_bits, 0);
  if (bits && ct_event_worker_trigger(w, (bits & CT__SIGNAL_FORCE) != 0) == CT_ESHUTDOWN)
    say_dropped(w);
}

void ct__worker_drop_signal(ct_worker_t *w) {
  if (atomic_exchange(&w->signal_bits, 0))
    say_dropped(w);
}
