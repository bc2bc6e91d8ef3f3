/* Worker groups: workers started and stopped together, one status snapshot,
 * and one-for-all (a member's end stops the rest).
 *
 * A group borrows its members, or with owns_members frees them when it is
 * freed (ct_worker_group_shutdown(): stopped one at a time, the last
 * started first, then freed). Membership (each group's array and each
 * worker's `group` pointer) is guarded by one process-wide groups lock,
 * a leaf: no worker lock is held when it is taken and no worker call is
 * made while it is held (worker calls may call back into this file through
 * ct__worker_hand_back_and_report). So every operation first copies the
 * members it needs, each with a worker reference, then works on the copy
 * without the lock.
 *
 * One-for-all enters through member_ended(), the end hook a group sets on
 * its members, called by the thread that made a member's state final,
 * after it released the worker's lock.
 * It stops the other running members one at a time without waiting (no
 * allocation, so it cannot fail half way, and a stop triggered from a
 * member's own run never waits for that run). Stopping a member makes it
 * leave RUNNING, so the loop ends; a member stopped that way reports its
 * own end in turn, and finds no member left running. A member that ends
 * while ct_worker_group_start() is still starting the others is noted, and
 * the start stops the whole group once every member has started. A stop
 * gives up when a group start goes ahead meanwhile (`epoch`): a
 * one-for-all decided before every member had stopped and the group was
 * started again must not undo that start.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/opts.h"
#include "workers/worker-internal.h"

struct ct_worker_group {
  atomic_uint refs; /* the owner's, one per one-for-all stop under way */
  char *name;
  bool one_for_all;
  bool owns_members;
  ct_worker_t **members; /* in the order added; under groups_lock */
  size_t n, cap;
  int starting;          /* group starts under way; under groups_lock */
  uint64_t epoch;        /* group starts that went ahead; under groups_lock */
  bool ended_in_start;   /* one-for-all fired while a start was under way */
};

static pthread_mutex_t groups_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_uint_fast64_t unnamed_seq;

static void member_ended(ct_worker_t *w);

static bool is_active(const ct_worker_t *w) {
  int s = atomic_load(&w->state);
  return s == CT_WORKER_RUNNING || s == CT_WORKER_STOPPING;
}

static bool is_final(const ct_worker_t *w) {
  int s = atomic_load(&w->state);
  return s == CT_WORKER_STOPPED || s == CT_WORKER_FORCE_STOPPED;
}

int ct_worker_group_new(const ct_worker_group_opts_t *opts, ct_worker_group_t **out) {
  ct_worker_group_opts_t o = CT_WORKER_GROUP_OPTS_INIT;
  if (out)
    *out = NULL;
  /* No supervisor, and the struct's size is what is wrong: nowhere to log. */
  ct__opts_check_t c = {"ct_worker_group_opts_t", "ct_worker_group_new", NULL, NULL, 0};
  if (!out || ct__opts_read(&c, &o, sizeof o, opts, offsetof(ct_worker_group_opts_t, one_for_all)) ||
      !ct__opts_text(&c, "name", o.name))
    return CT_EINVAL;
  ct_worker_group_t *g = calloc(1, sizeof *g);
  if (!g)
    return CT_ENOMEM;
  char buf[32];
  snprintf(buf, sizeof buf, "group-%llu",
           (unsigned long long)atomic_fetch_add(&unnamed_seq, 1) + 1);
  g->name = strdup(o.name ? o.name : buf);
  if (!g->name) {
    free(g);
    return CT_ENOMEM;
  }
  g->one_for_all = o.one_for_all;
  g->owns_members = o.owns_members;
  atomic_init(&g->refs, 1);
  *out = g;
  return 0;
}

int ct_worker_group_add(ct_worker_group_t *g, ct_worker_t *w) {
  if (!g || !w)
    return CT_EINVAL;
  pthread_mutex_lock(&groups_lock);
  int rc = w->group ? CT_EBUSY : 0;
  if (rc == 0 && g->n == g->cap) {
    size_t cap = g->cap ? 2 * g->cap : 4;
    ct_worker_t **grown = realloc(g->members, cap * sizeof *grown);
    if (grown) {
      g->members = grown;
      g->cap = cap;
    } else {
      rc = CT_ENOMEM;
    }
  }
  if (rc == 0) {
    g->members[g->n++] = w;
    w->group = g;
    atomic_store(&w->on_end, member_ended); /* kept: it checks w->group */
  }
  pthread_mutex_unlock(&groups_lock);
  return rc;
}

size_t ct_worker_group_size(ct_worker_group_t *g) {
  if (!g)
    return 0;
  pthread_mutex_lock(&groups_lock);
  size_t n = g->n;
  pthread_mutex_unlock(&groups_lock);
  return n;
}

/* The members, each referenced (*n of them); NULL with *n > 0: out of memory. */
static ct_worker_t **members_of(ct_worker_group_t *g, size_t *n) {
  pthread_mutex_lock(&groups_lock);
  *n = g->n;
  ct_worker_t **copy = g->n ? malloc(g->n * sizeof *copy) : NULL;
  for (size_t i = 0; copy && i < g->n; i++) {
    ct__worker_ref(g->members[i]);
    copy[i] = g->members[i];
  }
  pthread_mutex_unlock(&groups_lock);
  return copy;
}

static void release(ct_worker_t **ws, size_t n) {
  for (size_t i = 0; i < n; i++)
    ct__worker_unref(ws[i]);
  free(ws);
}

/* A RUNNING member of g other than `except`, referenced, or NULL; NULL
 * too once a group start after `epoch` went ahead (a stop decided before
 * it must not undo it). */
static ct_worker_t *next_running(ct_worker_group_t *g, const ct_worker_t *except,
                                 uint64_t epoch) {
  ct_worker_t *found = NULL;
  pthread_mutex_lock(&groups_lock);
  for (size_t i = 0; !found && g->epoch == epoch && i < g->n; i++) {
    ct_worker_t *m = g->members[i];
    if (m != except && atomic_load(&m->state) == CT_WORKER_RUNNING) {
      ct__worker_ref(m);
      found = m;
    }
  }
  pthread_mutex_unlock(&groups_lock);
  return found;
}

static uint64_t epoch_of(ct_worker_group_t *g) {
  pthread_mutex_lock(&groups_lock);
  uint64_t epoch = g->epoch;
  pthread_mutex_unlock(&groups_lock);
  return epoch;
}

/* Stop, without waiting, every running member but `except`, until a group
 * start after `epoch` goes ahead. */
static void stop_running(ct_worker_group_t *g, const ct_worker_t *except, int flags,
                         uint64_t epoch) {
  ct_worker_t *m;
  while ((m = next_running(g, except, epoch)) != NULL) {
    ct_worker_stop(m, flags, 0);
    ct__worker_unref(m);
  }
}

static void group_unref(ct_worker_group_t *g) {
  if (atomic_fetch_sub(&g->refs, 1) != 1)
    return;
  free(g->members);
  free(g->name);
  free(g);
}

/* A member's end hook (worker.c calls it once its state became final, no
 * lock held): with one-for-all, stop the rest of its group. */
static void member_ended(ct_worker_t *w) {
  pthread_mutex_lock(&groups_lock);
  ct_worker_group_t *g = w->group;
  bool stop_all = g && g->one_for_all && is_final(w); /* not restarted meanwhile */
  uint64_t epoch = g ? g->epoch : 0;
  if (stop_all) {
    atomic_fetch_add(&g->refs, 1); /* the owner may free it once all are stopped */
    if (g->starting > 0)
      g->ended_in_start = true; /* members started later stop too */
  }
  pthread_mutex_unlock(&groups_lock);
  if (!stop_all)
    return;
  stop_running(g, w, CT_WORKER_DROP, epoch);
  group_unref(g);
}

void ct__group_forget(ct_worker_t *w) {
  pthread_mutex_lock(&groups_lock);
  ct_worker_group_t *g = w->group;
  for (size_t i = 0; g && i < g->n; i++) {
    if (g->members[i] == w) {
      memmove(&g->members[i], &g->members[i + 1], (g->n - i - 1) * sizeof *g->members);
      g->n--;
      break;
    }
  }
  w->group = NULL;
  pthread_mutex_unlock(&groups_lock);
}

/* Whether the worker's owner has freed it (a group may still hold it). */
static bool was_freed(ct_worker_t *w) {
  pthread_mutex_lock(&w->lock);
  bool freed = w->freed;
  pthread_mutex_unlock(&w->lock);
  return freed;
}

int ct_worker_group_start(ct_worker_group_t *g, const ct_worker_start_opts_t *opts) {
  size_t n;
  if (!g)
    return CT_EINVAL;
  ct_worker_t **ws = members_of(g, &n);
  if (!ws)
    return n ? CT_ENOMEM : CT_EINVAL;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (is_active(ws[i]))
      rc = CT_EBUSY;
  pthread_mutex_lock(&groups_lock);
  if (g->starting++ == 0)
    g->ended_in_start = false;
  if (rc == 0)
    g->epoch++; /* a one-for-all stop still under way leaves this start be */
  uint64_t epoch = g->epoch;
  pthread_mutex_unlock(&groups_lock);
  size_t started = 0;
  for (; rc == 0 && started < n; started++) {
    rc = ct_worker_start(ws[started], opts);
    if (rc == CT_ENOENT && was_freed(ws[started]))
      rc = 0; /* freed by its owner since the copy: no longer a member */
  }
  if (rc != 0)
    for (size_t i = 0; i + 1 < started; i++)
      ct_worker_stop(ws[i], CT_WORKER_DROP, 0);
  release(ws, n);
  pthread_mutex_lock(&groups_lock);
  bool stop_all = --g->starting == 0 && g->ended_in_start;
  pthread_mutex_unlock(&groups_lock);
  if (stop_all) /* a member ended before the last one had started */
    stop_running(g, NULL, CT_WORKER_DROP, epoch);
  return rc;
}

/* Whether the calling thread executes the run of a member of g. */
static bool inside_member_run(ct_worker_group_t *g) {
  ct_worker_t *cur = ct__worker_current;
  pthread_mutex_lock(&groups_lock);
  bool inside = cur && cur->group == g;
  pthread_mutex_unlock(&groups_lock);
  return inside;
}

/* Stop each of ws in order and wait for it, all within `timeout` (< 0: no
 * bound). */
static int stop_each(ct_worker_t **ws, size_t n, int flags, double timeout) {
  double deadline = ct__now() + timeout;
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    bool forever = ct__seconds_forever(timeout);
    double left = forever ? -1.0 : deadline - ct__now();
    int one = ct_worker_stop(ws[i], flags, forever || left > 1e-6 ? left : 1e-6);
    if (rc == 0)
      rc = one;
  }
  return rc;
}

/* Wait for every member to stop, all within `timeout` (< 0: no bound). */
static int wait_members(ct_worker_group_t *g, int flags, double timeout) {
  size_t n;
  ct_worker_t **ws = members_of(g, &n);
  if (!ws)
    return n ? CT_ENOMEM : 0;
  int rc = stop_each(ws, n, flags, timeout);
  release(ws, n);
  return rc;
}

int ct_worker_group_stop(ct_worker_group_t *g, int flags, double timeout) {
  if (!g || (flags != CT_WORKER_DRAIN && flags != CT_WORKER_DROP) ||
      !ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  stop_running(g, NULL, flags, epoch_of(g));
  if (timeout == 0)
    return 0;
  if (inside_member_run(g))
    return CT_EDEADLK;
  return wait_members(g, flags, timeout);
}

json_t *ct_worker_group_status_json(ct_worker_group_t *g) {
  size_t n;
  if (!g)
    return NULL;
  ct_worker_t **ws = members_of(g, &n);
  if (!ws && n)
    return NULL;
  json_t *list = json_array();
  json_int_t running = 0;
  for (size_t i = 0; list && i < n; i++) {
    running += atomic_load(&ws[i]->state) == CT_WORKER_RUNNING;
    if (json_array_append_new(list, ct_worker_stats_json(ws[i])) != 0) {
      json_decref(list); /* out of memory: no partial answer */
      list = NULL;
    }
  }
  release(ws, n);
  if (!list)
    return NULL;
  return json_pack("{s:s, s:b, s:I, s:o}", "name", g->name, "one_for_all", g->one_for_all,
                   "running", running, "workers", list);
}

int ct_worker_group_free(ct_worker_group_t *g) {
  if (!g)
    return 0;
  pthread_mutex_lock(&groups_lock);
  bool busy = false;
  for (size_t i = 0; !busy && i < g->n; i++)
    busy = is_active(g->members[i]);
  for (size_t i = 0; !busy && i < g->n; i++)
    g->members[i]->group = NULL;
  size_t owned = !busy && g->owns_members ? g->n : 0;
  if (!busy)
    g->n = 0; /* a one-for-all stop still under way finds no one */
  pthread_mutex_unlock(&groups_lock);
  if (busy)
    return CT_EBUSY;
  for (size_t i = 0; i < owned; i++)
    ct_worker_free(g->members[i]); /* out of the group: no one else frees it */
  group_unref(g);
  return 0;
}

/* Later starts first; members never started (0) last. */
static int by_start_desc(const void *a, const void *b) {
  uint64_t sa = atomic_load(&(*(ct_worker_t *const *)a)->start_seq);
  uint64_t sb = atomic_load(&(*(ct_worker_t *const *)b)->start_seq);
  return (sa < sb) - (sa > sb);
}

int ct_worker_group_shutdown(ct_worker_group_t *g, int flags, double timeout) {
  if (!g)
    return 0;
  if ((flags != CT_WORKER_DRAIN && flags != CT_WORKER_DROP) ||
      !ct__seconds_valid(timeout, CT__SEC_SIGNED))
    return CT_EINVAL;
  if (inside_member_run(g))
    return CT_EDEADLK;
  size_t n;
  ct_worker_t **ws = members_of(g, &n);
  if (!ws && n)
    return CT_ENOMEM;
  if (n)
    qsort(ws, n, sizeof *ws, by_start_desc);
  int rc = stop_each(ws, n, flags, timeout);
  release(ws, n);
  int freed = ct_worker_group_free(g);
  return freed != 0 ? freed : rc;
}
