/* The soak: a mixed workload through the public API only, in cycles of a
 * few seconds, each ending in a stop, a free and an audit.
 *
 * A cycle creates a supervisor with an extra loop and a process pool, then
 * runs at once: submitters of thread, loop, delayed and process tasks (with
 * completion callbacks, most with handles, some canceled by handle at once,
 * some waited for with an infinite timeout); cancelers that find recent
 * ids (a ring the submitters fill) and the next ids of their handle-table
 * slots with ct_supervisor_get_task() and cancel them while tasks are
 * being submitted; queue, event, interval and background workers in a
 * one-for-all group that a manager stops and starts again, with queue items
 * put and triggers fired from several threads; a killer that SIGKILLs pool
 * children from outside (and, once per run, the fork server) and opens
 * short windows in which pthread_create() fails. Midway the main thread
 * replaces the extra loop (a worker on the old one must then refuse to
 * start), and submits a task whose child hangs until the pool's timeout
 * kills it and one whose child dies leaving a helper program running. Then
 * it stops the supervisor in mid-flight, DRAIN and CANCEL alternately,
 * waiting, bounded or not, and frees everything.
 *
 * The audit asserts counts, never durations: every accepted submission got
 * exactly one callback and ended in a terminal status (a canceled one never
 * ran; one whose cancel returned 0 is CANCELED), a refused one got none;
 * every queue item put was run or handed back, once; the statistics add up
 * at rest; no child, zombie, thread or descriptor outlived the cycle. A
 * failure names what was lost or doubled (task id, kind, status); the run
 * goes on with the next cycle and exits 1 at the end.
 *
 * Length: argv[1] or CT_SOAK_SECONDS (default 10) seconds of workload. A
 * watchdog thread turns a hang into a failure with a message: when a phase
 * outlives its generous bound it prints the phase, the counters and the
 * unfinished tasks, then aborts.
 */
#include <ctasker.h>
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sched.h>
#include <unistd.h>

#include "check.h"
#include "proc.h"

#define CYCLE_SECONDS 2.5
#define PHASE_BOUND 60.0 /* seconds any one phase may take before it is a hang */
#define SUBMITTERS 4
#define CANCELERS 2
#define PUTTERS 2
#define TRIGGERERS 2
#define INFLIGHT_MAX 32 /* per submitter, thread, loop and delayed tasks */
#define INFLIGHT_PROC 4 /* per submitter, process tasks */
#define TASK_TIMEOUT 2.0
#define REPORT_MAX 40
#define SPARE_COMM "soak-spare" /* children the killer spares */
#define HELPERS_MAX 64

enum kind { K_THREAD, K_LOOP, K_DELAYED, K_PROCESS, K_HANG, K_HELPER, K_COUNT };
static const char *const kind_names[K_COUNT] = {"soak-thread", "soak-loop", "soak-delayed",
                                                "soak-process", "soak-hang", "soak-helper"};

/* One submission. Kept until the end of the cycle, refused ones too: a
 * callback that arrives for a refused submission must find it. */
typedef struct rec {
  enum kind kind;
  int owner;           /* submitter index, -1 for the main thread */
  int rc;              /* what the submission returned */
  ct_task_t *task;     /* the handle, or NULL (fire-and-forget) */
  uint64_t id;
  atomic_int done;     /* on_done calls */
  atomic_int done_status;
  atomic_int runs;     /* task function calls (thread, loop, delayed) */
  atomic_int cancel_ok; /* cancels by handle that returned 0 */
  atomic_uint_fast64_t cb_id; /* the id the callback saw (fire-and-forget has no handle) */
  atomic_bool published; /* rc, task and id are set (the watchdog reads them) */
} rec_t;

/* One queue item. */
typedef struct item {
  int rc;
  atomic_int ran;
  atomic_int dropped;
} item_t;

/* A growable list of pointers under a lock (the watchdog reads it too). */
typedef struct {
  pthread_mutex_t m;
  void **v;
  size_t n, cap;
} list_t;

static void list_push(list_t *l, void *p) {
  pthread_mutex_lock(&l->m);
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 1024;
    l->v = realloc(l->v, l->cap * sizeof *l->v);
    CHECK(l->v);
  }
  l->v[l->n++] = p;
  pthread_mutex_unlock(&l->m);
}

/* ---- the state of the run and of the current cycle ---- */

static double soak_seconds = 10;
static int cycle;
static ct_supervisor_t *sup;
static _Atomic(ct_loop_t *) xloop;
static ct_worker_t *qw, *ew, *iw, *bw, *lw; /* lw: on the extra loop, outside the group */
static ct_worker_group_t *group;
static atomic_bool quit;
#define ID_RING 64
static atomic_uint_fast64_t id_ring[ID_RING]; /* ids of tracked tasks, newest at id_next - 1 */
static atomic_uint id_next;
static atomic_int inflight[SUBMITTERS];
static atomic_int inflight_proc[SUBMITTERS];
static list_t recs = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};
static list_t items = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};
static list_t canceled = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0}; /* tasks whose cancel by id returned 0 */
static atomic_long triggers_ok, event_runs, interval_runs, background_runs, group_restarts;
static atomic_long failures, cycle_failures;

/* Pids of the helpers that pool children start, written by the children
 * into a page shared with them (mapped before any pool exists), so the
 * soak can end the helpers it provoked. */
static struct shared {
  atomic_int n;
  atomic_int pid[HELPERS_MAX];
} *shared;

/* pthread_create() fails with EAGAIN while thread_faults is set (the test
 * is linked with --wrap=pthread_create); the soak's own threads use the
 * real one. */
static atomic_bool thread_faults;
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);

/* Totals over the run, for the closing line. */
static atomic_long total_accepted, total_items, children_killed,
    servers_killed, hangs, helpers, cancels_ok, threads_refused, cancels_by_id;

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg) {
  if (atomic_load(&thread_faults)) {
    atomic_fetch_add(&threads_refused, 1);
    return EAGAIN;
  }
  return __real_pthread_create(t, a, fn, arg);
}

/* Seen pool children (pid and start time), to prove none outlives its pool. */
#define SEEN_MAX 4096
static struct {
  pthread_mutex_t m;
  int pid[SEEN_MAX];
  unsigned long long start[SEEN_MAX];
  int n;
} seen = {PTHREAD_MUTEX_INITIALIZER, {0}, {0}, 0};

static void fail(const char *fmt, ...) {
  atomic_fetch_add(&failures, 1);
  if (atomic_fetch_add(&cycle_failures, 1) >= REPORT_MAX)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "soak: cycle %d: ", cycle);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static const char *err_name(int rc) { return rc == 0 ? "0" : ct_err_name(rc); }

static unsigned rnd(unsigned *seed) {
  *seed = *seed * 1103515245u + 12345u;
  return (*seed >> 16) & 0x7fff;
}

/* ---- /proc ---- */

static int count_threads(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static void print_threads(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char path[300], comm[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (f) {
      if (!fgets(comm, sizeof comm, f))
        comm[0] = 0;
      fclose(f);
    }
    comm[strcspn(comm, "\n")] = 0;
    fprintf(stderr, "soak:   thread %s %s\n", e->d_name, comm);
  }
  closedir(d);
}

/* Field 22 of /proc/PID/stat (start time), 0 if there is no such process;
 * *state gets its state letter. A zombie still has an entry. */
static unsigned long long proc_start(int pid, char *state) {
  char buf[1024];
  const char *p = proc_stat_fields(pid, buf, sizeof buf);
  if (!p)
    return 0;
  *state = p[0];
  for (int field = 3; field < 22 && p; field++) { /* p is at field 3 */
    p = strchr(p, ' ');
    if (p)
      p++;
  }
  return p ? strtoull(p, NULL, 10) : 0;
}

static bool is_spared_child(int pid) {
  char path[64], comm[32] = "";
  snprintf(path, sizeof path, "/proc/%d/comm", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return false;
  if (!fgets(comm, sizeof comm, f))
    comm[0] = 0;
  fclose(f);
  return strncmp(comm, SPARE_COMM, strlen(SPARE_COMM)) == 0;
}

static int fork_server_pid(void) {
  int pids[8];
  return children_of(getpid(), pids, 8) >= 1 ? pids[0] : 0;
}

/* Note the fork server's children; returns how many, their pids in pids. */
static int sample_children(int *pids, int max) {
  int fs = fork_server_pid();
  int n = fs ? children_of(fs, pids, max) : 0;
  pthread_mutex_lock(&seen.m);
  for (int i = 0; i < n; i++) {
    char st;
    unsigned long long start = proc_start(pids[i], &st);
    bool known = false;
    for (int j = 0; j < seen.n && !known; j++)
      known = seen.pid[j] == pids[i] && seen.start[j] == start;
    if (!known && start && seen.n < SEEN_MAX) {
      seen.pid[seen.n] = pids[i];
      seen.start[seen.n++] = start;
    }
  }
  pthread_mutex_unlock(&seen.m);
  return n;
}

static void kill_helpers(void) {
  int n = atomic_exchange(&shared->n, 0);
  for (int i = 0; i < n && i < HELPERS_MAX; i++)
    if (atomic_load(&shared->pid[i]) > 0)
      kill(atomic_load(&shared->pid[i]), SIGKILL);
}

/* A failed soak leaves no process behind. */
static void kill_children(void) {
  int fs = fork_server_pid();
  if (fs > 0)
    kill(fs, SIGKILL);
  pthread_mutex_lock(&seen.m);
  for (int i = 0; i < seen.n; i++) {
    char st;
    if (proc_start(seen.pid[i], &st) == seen.start[i])
      kill(seen.pid[i], SIGKILL);
  }
  pthread_mutex_unlock(&seen.m);
  kill_helpers();
}

/* ---- the watchdog ---- */

static struct {
  pthread_mutex_t m;
  const char *phase;
  double bound, deadline;
} dog = {PTHREAD_MUTEX_INITIALIZER, "start", 0, 0};

static void phase(const char *name, double bound) {
  pthread_mutex_lock(&dog.m);
  dog.phase = name;
  dog.bound = bound;
  dog.deadline = ct_now() + bound;
  pthread_mutex_unlock(&dog.m);
}

static void dump_counters(void) {
  long by_kind[K_COUNT][3] = {{0}}; /* accepted, refused, without callback */
  pthread_mutex_lock(&recs.m);
  int shown = 0;
  for (size_t i = 0; i < recs.n; i++) {
    rec_t *r = recs.v[i];
    if (!atomic_load(&r->published))
      continue;
    by_kind[r->kind][r->rc == 0 ? 0 : 1]++;
    if (r->rc == 0 && atomic_load(&r->done) == 0) {
      by_kind[r->kind][2]++;
      if (shown++ < REPORT_MAX)
        fprintf(stderr, "soak:   no callback yet: task %" PRIu64 " %s status %d\n", r->id,
                kind_names[r->kind], r->task ? (int)ct_task_status(r->task) : 999);
    }
  }
  pthread_mutex_unlock(&recs.m);
  pthread_mutex_lock(&items.m);
  size_t n_items = items.n;
  pthread_mutex_unlock(&items.m);
  for (int k = 0; k < K_COUNT; k++)
    fprintf(stderr, "soak:   %s: accepted %ld refused %ld without callback %ld\n",
            kind_names[k], by_kind[k][0], by_kind[k][1], by_kind[k][2]);
  fprintf(stderr, "soak:   queue items %zu, triggers %ld, event runs %ld, interval runs %ld, "
          "background runs %ld, group restarts %ld\n", n_items, atomic_load(&triggers_ok),
          atomic_load(&event_runs), atomic_load(&interval_runs), atomic_load(&background_runs),
          atomic_load(&group_restarts));
}

static void *watchdog_main(void *arg) {
  (void)arg;
  for (;;) {
    check_sleep(0.1);
    pthread_mutex_lock(&dog.m);
    const char *name = dog.phase;
    double bound = dog.bound;
    bool late = dog.deadline > 0 && ct_now() > dog.deadline;
    pthread_mutex_unlock(&dog.m);
    if (!late)
      continue;
    fprintf(stderr, "soak: cycle %d: HANG: '%s' did not finish within %.0f s\n", cycle, name,
            bound);
    dump_counters();
    alarm(10); /* the library may hold the lock stats need */
    ct_stats_t s = CT_STATS_INIT;
    if (sup && ct_supervisor_stats(sup, &s) == 0)
      fprintf(stderr, "soak:   stats: submitted %" PRIu64 " queued %" PRIu64 " delayed %" PRIu64
              " running %" PRIu64 " completed %" PRIu64 " failed %" PRIu64 " canceled %" PRIu64
              " threads %" PRIu64 " idle %" PRIu64 "\n", s.submitted, s.queued, s.delayed,
              s.running, s.completed, s.failed, s.canceled, s.threads, s.threads_idle);
    kill_children();
    abort();
  }
  return NULL;
}

/* ---- what tasks, workers and children run ---- */

static json_t *task_fn(ct_task_t *self, void *arg) {
  rec_t *r = arg;
  int n = atomic_fetch_add(&r->runs, 1);
  if (n > 0)
    fail("task %" PRIu64 " %s ran %d times", ct_task_id(self), kind_names[r->kind], n + 1);
  if (r->kind != K_LOOP && (ct_task_id(self) & 15) == 0)
    check_sleep(0.001);
  if ((ct_task_id(self) & 7) == 3)
    return ct_error_new("ValueError", "soak");
  return json_integer((json_int_t)ct_task_id(self));
}

static void on_done(ct_task_t *task, void *data) {
  rec_t *r = data;
  int st = (int)ct_task_status(task);
  atomic_store(&r->cb_id, ct_task_id(task));
  int n = atomic_fetch_add(&r->done, 1);
  if (n > 0)
    fail("task %" PRIu64 " %s: callback %d (status %d, first %d)", ct_task_id(task),
         kind_names[r->kind], n + 1, st, atomic_load(&r->done_status));
  else
    atomic_store(&r->done_status, st);
  if (st != CT_TASK_COMPLETED && st != CT_TASK_CANCELED)
    fail("task %" PRIu64 " %s: callback with status %d", ct_task_id(task), kind_names[r->kind],
         st);
  if (r->owner >= 0) {
    if (r->kind == K_PROCESS)
      atomic_fetch_sub(&inflight_proc[r->owner], 1);
    else
      atomic_fetch_sub(&inflight[r->owner], 1);
  }
}

static json_t *child_echo(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  double s = json_real_value(args);
  if (s > 0)
    check_sleep(s);
  return json_incref(args);
}

/* Runs past the pool's timeout, which must kill it. Named, so the killer
 * spares it and the timeout does the work; bounded all the same (longer
 * than any wait of the soak), so a failed soak leaves no orphan for long. */
static json_t *child_hang(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  prctl(PR_SET_NAME, SPARE_COMM);
  check_sleep(PHASE_BOUND * 2);
  return NULL;
}

/* Starts a helper program that outlives it (it keeps whatever descriptors
 * it inherits across exec), then dies: the pool must see the death itself. */
static json_t *child_helper(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  prctl(PR_SET_NAME, SPARE_COMM);
  char seconds[32];
  snprintf(seconds, sizeof seconds, "%d", (int)(PHASE_BOUND * 2));
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sleep", "sleep", seconds, (char *)NULL);
    _exit(127);
  }
  int i = atomic_fetch_add(&shared->n, 1);
  if (pid > 0 && i < HELPERS_MAX)
    atomic_store(&shared->pid[i], pid);
  raise(SIGKILL);
  return NULL;
}

static int queue_run(ct_worker_run_t *run) {
  item_t *it = run->item;
  int n = atomic_fetch_add(&it->ran, 1);
  if (n > 0 || atomic_load(&it->dropped) > 0)
    fail("queue item %p ran %d times, dropped %d", (void *)it, n + 1, atomic_load(&it->dropped));
  /* Now and then the worker ends itself, which stops the whole group. */
  return (run->task_id % 997) == 0 ? CT_WORKER_STOP : CT_WORKER_CONTINUE;
}

static void queue_drop(ct_worker_t *w, void *item, void *data) {
  (void)data;
  item_t *it = item;
  int n = atomic_fetch_add(&it->dropped, 1);
  if (n > 0 || atomic_load(&it->ran) > 0)
    fail("queue item %p handed back %d times, ran %d", item, n + 1, atomic_load(&it->ran));
  /* Calls into its own worker, as a user's on_drop may. */
  ct_worker_stats_t s = CT_WORKER_STATS_INIT;
  CHECK_OK(ct_worker_stats(w, &s));
}

static int event_run(ct_worker_run_t *run) {
  (void)run;
  atomic_fetch_add(&event_runs, 1);
  return CT_WORKER_CONTINUE;
}

static int interval_run(ct_worker_run_t *run) {
  (void)run;
  atomic_fetch_add(&interval_runs, 1);
  return CT_WORKER_CONTINUE;
}

static int background_run(ct_worker_run_t *run) {
  (void)run;
  atomic_fetch_add(&background_runs, 1);
  check_sleep(0.002); /* a background run must not spin a core */
  return CT_WORKER_CONTINUE;
}

/* ---- submitting ---- */

static rec_t *new_rec(enum kind kind, int owner) {
  rec_t *r = calloc(1, sizeof *r);
  CHECK(r);
  r->kind = kind;
  r->owner = owner;
  list_push(&recs, r);
  return r;
}

/* Submit one task of `kind`; returns the submission's code. */
static int submit_one(rec_t *r, unsigned *seed, bool with_handle) {
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.name = kind_names[r->kind];
  o.priority = (int)(rnd(seed) % 4) * 50 + (rnd(seed) % 2);
  o.on_done = on_done;
  o.done_data = r;
  ct_task_t **out = with_handle ? &r->task : NULL;
  if (r->kind == K_DELAYED)
    o.delay = 0.001 * (rnd(seed) % 100);
  if (r->kind == K_LOOP)
    o.loop = rnd(seed) % 2 ? atomic_load(&xloop) : ct_supervisor_loop(sup);
  if (r->kind >= K_PROCESS) {
    const char *fn = r->kind == K_HANG ? "soak_hang" : r->kind == K_HELPER ? "soak_helper"
                                                                           : "soak_echo";
    json_t *args = json_real(r->kind == K_PROCESS ? 0.001 * (rnd(seed) % 50) : 0);
    r->rc = ct_process_task(sup, fn, args, &o, out);
    json_decref(args);
  } else {
    r->rc = ct_background_task(sup, task_fn, r, &o, out);
  }
  if (r->rc == 0 && r->task) {
    r->id = ct_task_id(r->task);
    atomic_store(&id_ring[atomic_fetch_add(&id_next, 1) % ID_RING], r->id);
  }
  atomic_store(&r->published, true);
  return r->rc;
}

/* Cancel by handle: a cancel that returns 0 has run the callback here. */
static void cancel_by_handle(rec_t *r) {
  int rc = ct_task_cancel(r->task);
  if (rc != 0)
    return;
  atomic_fetch_add(&r->cancel_ok, 1);
  atomic_fetch_add(&cancels_ok, 1);
  if (ct_task_status(r->task) != CT_TASK_CANCELED || atomic_load(&r->done) != 1)
    fail("task %" PRIu64 " %s: cancel returned 0 but status %d, %d callbacks", r->id,
         kind_names[r->kind], (int)ct_task_status(r->task), atomic_load(&r->done));
}

/* A huge timeout means no bound: the wait ends when the task does. The
 * first early return of a cycle is told, the others only counted. */
static atomic_long waits_early;

static void wait_without_bound(rec_t *r, double timeout) {
  int rc = ct_task_wait(r->task, timeout);
  if ((rc != 0 || !ct_task_is_terminal(r->task)) && atomic_fetch_add(&waits_early, 1) == 0)
    fail("task %" PRIu64 " %s: ct_task_wait(%g) returned %s, status %d", r->id,
         kind_names[r->kind], timeout, err_name(rc), (int)ct_task_status(r->task));
}

static void *submitter_main(void *arg) {
  int me = (int)(intptr_t)arg;
  unsigned seed = (unsigned)(cycle * 131 + me * 7919 + 1);
  while (!atomic_load(&quit)) {
    enum kind kind = (enum kind)(rnd(&seed) % 4);
    atomic_int *budget = kind == K_PROCESS ? &inflight_proc[me] : &inflight[me];
    if (atomic_load(budget) >= (kind == K_PROCESS ? INFLIGHT_PROC : INFLIGHT_MAX)) {
      check_sleep(0.0005);
      continue;
    }
    rec_t *r = new_rec(kind, me);
    atomic_fetch_add(budget, 1);
    bool with_handle = rnd(&seed) % 4 != 0;
    if (submit_one(r, &seed, with_handle) != 0) {
      atomic_fetch_sub(budget, 1);
      check_sleep(0.001); /* refused (a stop): keep the list of refusals short */
      continue;
    }
    if (r->task && rnd(&seed) % 8 == 0)
      cancel_by_handle(r);
    else if (r->task && rnd(&seed) % 64 == 0)
      wait_without_bound(r, rnd(&seed) % 2 ? INFINITY : DBL_MAX);
  }
  return NULL;
}

/* Only the submitters' tasks: worker runs are the workers' business, and
 * the hung child and the one that leaves a helper must meet their end. */
static bool cancelable(const char *name) {
  for (int k = 0; k < K_HANG; k++)
    if (strcmp(name, kind_names[k]) == 0)
      return true;
  return false;
}

/* Cancel by id: tasks just submitted, and those about to be in the slots
 * of the handle table they name (the same slot's next generation: ids are
 * not sequential), found by id. */
static void *canceler_main(void *arg) {
  int me = (int)(intptr_t)arg;
  unsigned seed = (unsigned)(cycle * 31 + me + 5);
  while (!atomic_load(&quit)) {
    unsigned next = atomic_load(&id_next);
    for (unsigned k = 0; k < 16 && k < 2 * next; k++) {
      uint64_t id = atomic_load(&id_ring[(next - 1 - k / 2) % ID_RING]);
      if (k % 2)
        id += UINT64_C(1) << 32; /* the slot's next generation */
      ct_task_t *t;
      if (ct_supervisor_get_task(sup, id, &t) != 0)
        continue;
      if (!cancelable(ct_task_name(t)) || rnd(&seed) % 2) {
        ct_task_unref(t);
        continue;
      }
      if (ct_task_cancel(t) == 0) {
        atomic_fetch_add(&cancels_ok, 1);
        atomic_fetch_add(&cancels_by_id, 1);
        if (ct_task_status(t) != CT_TASK_CANCELED)
          fail("task %" PRIu64 " %s: cancel by id returned 0 but status %d", id,
               ct_task_name(t), (int)ct_task_status(t));
        list_push(&canceled, t);
      } else {
        ct_task_unref(t);
      }
    }
    if (me > 0)
      check_sleep(0.0002);
    else
      sched_yield();
  }
  return NULL;
}

static void *putter_main(void *arg) {
  unsigned seed = (unsigned)(cycle * 17 + (int)(intptr_t)arg + 3);
  while (!atomic_load(&quit)) {
    item_t *it = calloc(1, sizeof *it);
    CHECK(it);
    list_push(&items, it);
    it->rc = ct_queue_worker_put(qw, it, (int)(rnd(&seed) % 256));
    if (it->rc != 0)
      check_sleep(0.001);
    else if (rnd(&seed) % 16 == 0)
      check_sleep(0.0005);
  }
  return NULL;
}

static void *triggerer_main(void *arg) {
  unsigned seed = (unsigned)(cycle * 19 + (int)(intptr_t)arg + 11);
  while (!atomic_load(&quit)) {
    unsigned pick = rnd(&seed) % 8;
    ct_worker_t *w = pick == 0 ? iw : pick == 1 ? lw : ew;
    if (ct_event_worker_trigger(w, rnd(&seed) % 2) == 0 && w == ew)
      atomic_fetch_add(&triggers_ok, 1);
    check_sleep(0.0005);
  }
  return NULL;
}

/* Stops the group now and then, and starts it again once every member has
 * stopped (a one-for-all stop may have come from a member, too). */
static void *manager_main(void *arg) {
  (void)arg;
  unsigned seed = (unsigned)(cycle * 23 + 1);
  while (!atomic_load(&quit)) {
    check_sleep(0.05);
    if (rnd(&seed) % 8 == 0) {
      const double bounds[] = {0, 1.0, 1e300};
      double bound = bounds[rnd(&seed) % 3];
      int rc = ct_worker_group_stop(group, (int)(rnd(&seed) % 2), bound);
      if (rc != 0 && !(rc == CT_ETIMEDOUT && bound == 1.0))
        fail("ct_worker_group_stop(%g): %s", bound, ct_strerror(rc));
    }
    int rc = ct_worker_group_start(group, NULL);
    if (rc == 0)
      atomic_fetch_add(&group_restarts, 1);
    else if (rc != CT_EBUSY && rc != CT_ESHUTDOWN && rc != CT_EAGAIN)
      fail("ct_worker_group_start: %s", ct_strerror(rc));
  }
  return NULL;
}

/* SIGKILLs a pool child now and then, the fork server itself once per run,
 * and opens short windows in which no thread can be created. */
static atomic_bool kill_server;

static void *killer_main(void *arg) {
  (void)arg;
  unsigned seed = (unsigned)(cycle * 29 + 7);
  while (!atomic_load(&quit)) {
    check_sleep(0.02 + 0.001 * (rnd(&seed) % 100));
    atomic_store(&thread_faults, rnd(&seed) % 4 == 0);
    int pids[64];
    int n = sample_children(pids, 64);
    if (atomic_exchange(&kill_server, false)) {
      int fs = fork_server_pid();
      if (fs > 0 && kill(fs, SIGKILL) == 0)
        atomic_fetch_add(&servers_killed, 1);
    } else if (n > 0) {
      int pid = pids[rnd(&seed) % (unsigned)n];
      if (!is_spared_child(pid) && kill(pid, SIGKILL) == 0)
        atomic_fetch_add(&children_killed, 1);
    }
  }
  atomic_store(&thread_faults, false);
  return NULL;
}

/* ---- one cycle ---- */

/* Error lines, and a long stop's reports of what it waits for, the first
 * 200; of the lines the injected thread faults cause (many, all the time),
 * the first 20 only, so that they cannot crowd out what a hang report
 * needs (a fork server replaced, say). A stop's missed wake-up (which its
 * report makes up for) fails the run. */
static void log_fn(int level, const char *msg, void *data) {
  (void)data;
  static atomic_int printed, printed_faults;
  if (strstr(msg, "missed wake-up"))
    fail("%s", msg);
  if (level < CT_LOG_ERROR && !strstr(msg, "the stop has waited"))
    return;
  bool fault = strstr(msg, "could not start a") || strstr(msg, "could not queue a run");
  if (atomic_fetch_add(fault ? &printed_faults : &printed, 1) < (fault ? 20 : 200))
    fprintf(stderr, "soak: log %d: %s\n", level, msg);
}

static ct_worker_t *make_worker(ct_worker_kind_t kind, ct_worker_fn fn, const char *name) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = name;
  if (kind == CT_WORKER_QUEUE) {
    o.priority_queue = true;
    o.max_queue = 256;
    o.on_drop = queue_drop;
  }
  if (kind == CT_WORKER_INTERVAL)
    o.interval = 0.02;
  if (kind == CT_WORKER_EVENT)
    o.loop = ct_supervisor_loop(sup);
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, kind, fn, &o, &w));
  CHECK_OK(ct_worker_group_add(group, w));
  return w;
}

/* An event worker on the extra loop that the middle of the cycle ends. */
static ct_worker_t *make_loop_worker(void) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = "soak-on-loop";
  o.loop = atomic_load(&xloop);
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, interval_run, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  return w;
}

static void setup(void) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 3;
  o.reserve_normal = 1;
  o.reserve_high = 1;
  o.keepalive = 0.2;
  o.log = log_fn;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  /* The pool first, while no other thread of this process runs: a fork
   * server forked while another thread holds a sanitizer allocator's lock
   * deadlocks in it (ASan's allocator, unlike glibc's, is not reset in the
   * child). */
  ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
  po.pool_size = 3;
  po.task_timeout = TASK_TIMEOUT;
  CHECK_OK(ct_process_pool_create(sup, &po));
  CHECK_OK(ct_supervisor_start(sup));
  ct_loop_t *l;
  CHECK_OK(ct_loop_create(sup, "soak-a", &l));
  atomic_store(&xloop, l);
  ct_worker_group_opts_t go = CT_WORKER_GROUP_OPTS_INIT;
  go.name = "soak";
  go.one_for_all = true;
  CHECK_OK(ct_worker_group_new(&go, &group));
  qw = make_worker(CT_WORKER_QUEUE, queue_run, "soak-queue");
  ew = make_worker(CT_WORKER_EVENT, event_run, "soak-event");
  iw = make_worker(CT_WORKER_INTERVAL, interval_run, "soak-interval");
  bw = make_worker(CT_WORKER_BACKGROUND, background_run, "soak-background");
  CHECK_OK(ct_worker_group_start(group, NULL));
  lw = make_loop_worker();
}

static void restart_loop_worker(void) {
  int rc = ct_worker_stop(lw, CT_WORKER_DROP, -1);
  if (rc != 0)
    fail("ct_worker_stop of a worker whose loop ended: %s", err_name(rc));
  rc = ct_worker_start(lw, NULL);
  if (rc != CT_ESHUTDOWN)
    fail("ct_worker_start of a worker whose loop ended returned %s, not CT_ESHUTDOWN (state %d)",
         err_name(rc), (int)ct_worker_state(lw));
}

/* The middle of a cycle: the extra loop replaced, a child that hangs, one
 * that dies leaving a helper behind, and (once per run) the fork server
 * killed. */
static void midway(bool server) {
  ct_loop_t *old = atomic_load(&xloop), *l;
  char name[32];
  snprintf(name, sizeof name, "soak-b%d", cycle);
  int rc;
  while ((rc = ct_loop_create(sup, name, &l)) == CT_EAGAIN) /* a thread fault window */
    check_sleep(0.01);
  CHECK_OK(rc);
  atomic_store(&xloop, l);
  CHECK_OK(ct_loop_stop(old, cycle % 2 ? -1 : 0));
  if (cycle % 2) /* the loop has ended: its worker can never run again */
    restart_loop_worker();
  unsigned seed = (unsigned)cycle;
  rec_t *r = new_rec(K_HANG, -1);
  if (submit_one(r, &seed, true) == 0)
    atomic_fetch_add(&hangs, 1);
  r = new_rec(K_HELPER, -1);
  if (submit_one(r, &seed, true) == 0)
    atomic_fetch_add(&helpers, 1);
  if (server)
    atomic_store(&kill_server, true);
}

static const char *const wait_names[3] = {"waiting", "bounded", "not waiting"};

/* Stop in mid-flight, let the threads see it, then finish the stop. */
static void stop_and_join(pthread_t *threads, int n) {
  int mode = cycle % 2 ? CT_STOP_CANCEL : CT_STOP_DRAIN;
  int how = cycle % 3;
  phase("ct_supervisor_stop (first call)", PHASE_BOUND);
  double forever = cycle % 6 == 0 ? -1 : INFINITY; /* the same */
  int rc = ct_supervisor_stop(sup, mode, how == 0 ? forever : how == 1 ? 0.05 : 0);
  if (rc != 0 && !(how == 1 && rc == CT_ETIMEDOUT))
    fail("ct_supervisor_stop(%s, %s): %s", mode ? "CANCEL" : "DRAIN", wait_names[how],
         ct_strerror(rc));
  atomic_store(&quit, true);
  phase("joining the soak's threads", PHASE_BOUND);
  for (int i = 0; i < n; i++)
    pthread_join(threads[i], NULL);
  atomic_store(&thread_faults, false);
  phase("ct_supervisor_stop (until stopped)", PHASE_BOUND);
  while ((rc = ct_supervisor_stop(sup, mode, 1.0)) == CT_ETIMEDOUT)
    ;
  if (rc != 0)
    fail("ct_supervisor_stop again: %s", ct_strerror(rc));
}

/* Free workers, group and supervisor, each retried while still busy. */
static void free_all(void) {
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  if (s.submitted != s.completed + s.failed + s.canceled || s.queued || s.running || s.delayed)
    fail("stats at rest do not add up: submitted %" PRIu64 " != completed %" PRIu64
         " + failed %" PRIu64 " + canceled %" PRIu64 " (queued %" PRIu64 ", running %" PRIu64
         ", delayed %" PRIu64 ")", s.submitted, s.completed, s.failed, s.canceled, s.queued,
         s.running, s.delayed);
  phase("freeing the workers", PHASE_BOUND);
  while (ct_worker_group_free(group) == CT_EBUSY)
    check_sleep(0.001);
  ct_worker_t *ws[] = {qw, ew, iw, bw, lw};
  for (int i = 0; i < 5; i++)
    while (ct_worker_free(ws[i]) == CT_EBUSY)
      check_sleep(0.001);
  phase("ct_supervisor_free (CT_EBUSY)", PHASE_BOUND);
  while (ct_supervisor_free(sup) == CT_EBUSY)
    check_sleep(0.001);
  sup = NULL;
}

static uint64_t rec_id(rec_t *r) { return r->id ? r->id : atomic_load(&r->cb_id); }

/* The child that left a helper behind died at once: ProcessCrashed (or
 * CancelledError, canceled while queued), never the timeout's error, which
 * would mean its death was not seen. */
static void check_helper_result(rec_t *r) {
  const char *cls = ct_result_error_class(ct_task_result(r->task));
  if (!cls || (strcmp(cls, "ProcessCrashed") != 0 && strcmp(cls, "CancelledError") != 0))
    fail("task %" PRIu64 " %s: its child died, but the result is %s", rec_id(r),
         kind_names[r->kind], cls ? cls : "not an error");
}

static void audit_tasks(long *accepted) {
  phase("waiting for every accepted task's callback", PHASE_BOUND);
  for (bool all = false; !all;) {
    all = true;
    for (size_t i = 0; i < recs.n && all; i++) {
      rec_t *r = recs.v[i];
      all = r->rc != 0 || atomic_load(&r->done) > 0;
    }
    if (!all)
      check_sleep(0.01);
  }
  pthread_mutex_lock(&recs.m);
  for (size_t i = 0; i < recs.n; i++) {
    rec_t *r = recs.v[i];
    int done = atomic_load(&r->done), runs = atomic_load(&r->runs);
    int st = r->task ? (int)ct_task_status(r->task) : atomic_load(&r->done_status);
    *accepted += r->rc == 0;
    if (r->rc != 0 && done != 0)
      fail("refused submission (%s) of a %s task got %d callbacks", err_name(r->rc),
           kind_names[r->kind], done);
    if (r->rc == 0 && done != 1)
      fail("task %" PRIu64 " %s: %d callbacks, status %d", rec_id(r), kind_names[r->kind], done, st);
    if (r->rc == 0 && r->task && st != atomic_load(&r->done_status))
      fail("task %" PRIu64 " %s: status %d, but %d in its callback", rec_id(r), kind_names[r->kind],
           st, atomic_load(&r->done_status));
    if (r->rc == 0 && st == CT_TASK_CANCELED && runs != 0)
      fail("task %" PRIu64 " %s: CANCELED but its function ran %d times", r->id,
           kind_names[r->kind], runs);
    if (r->rc == 0 && st == CT_TASK_COMPLETED && r->kind <= K_DELAYED && runs != 1)
      fail("task %" PRIu64 " %s: COMPLETED but its function ran %d times", r->id,
           kind_names[r->kind], runs);
    if (r->kind == K_HELPER && r->rc == 0)
      check_helper_result(r);
    if (atomic_load(&r->cancel_ok) && st != CT_TASK_CANCELED)
      fail("task %" PRIu64 " %s: canceled by handle (returned 0), now status %d", r->id,
           kind_names[r->kind], st);
    ct_task_unref(r->task);
    free(r);
  }
  recs.n = 0;
  pthread_mutex_unlock(&recs.m);
  for (size_t i = 0; i < canceled.n; i++) {
    ct_task_t *t = canceled.v[i];
    if (ct_task_status(t) != CT_TASK_CANCELED || !ct_task_failed(t))
      fail("task %" PRIu64 " %s: canceled by id (returned 0), now status %d", ct_task_id(t),
           ct_task_name(t), (int)ct_task_status(t));
    ct_task_unref(t);
  }
  canceled.n = 0;
}

static void audit_items(long *put) {
  long ran = 0, dropped = 0;
  for (size_t i = 0; i < items.n; i++) {
    item_t *it = items.v[i];
    int r = atomic_load(&it->ran), d = atomic_load(&it->dropped);
    *put += it->rc == 0;
    ran += r;
    dropped += d;
    if (it->rc == 0 && r + d != 1)
      fail("queue item %zu: put, then run %d times and handed back %d times", i, r, d);
    if (it->rc != 0 && r + d != 0)
      fail("queue item %zu: refused (%s), yet run %d and handed back %d", i,
           err_name(it->rc), r, d);
    free(it);
  }
  items.n = 0;
  if (ran + dropped != *put)
    fail("queue items put %ld != run %ld + handed back %ld", *put, ran, dropped);
}

/* Nothing of the cycle may remain: children, zombies, threads, descriptors.
 * Exits take a moment after a free: wait for them, generously. */
static void audit_resources(int threads0, int fds0) {
  phase("waiting for children, threads and descriptors to go", PHASE_BOUND);
  double until = ct_now() + PHASE_BOUND / 3;
  int kids, threads, fds, alive;
  for (;;) {
    int pids[8];
    kids = children_of(getpid(), pids, 8);
    threads = count_threads();
    fds = count_fds();
    alive = 0; /* a zombie of another parent (a container's init) is not ours to reap */
    for (int i = 0; i < seen.n; i++) {
      char st = '?';
      alive += proc_start(seen.pid[i], &st) == seen.start[i] && st != 'Z';
    }
    if ((kids == 0 && threads <= threads0 && fds <= fds0 && alive == 0) || ct_now() > until)
      break;
    check_sleep(0.01);
  }
  if (kids != 0)
    fail("%d child processes (or zombies) left after ct_supervisor_free", kids);
  for (int i = 0; i < seen.n; i++) {
    char st = '?';
    if (proc_start(seen.pid[i], &st) == seen.start[i] && st != 'Z') {
      fail("pool child %d%s still exists (state %c)", seen.pid[i],
           is_spared_child(seen.pid[i]) ? " (spared by the killer)" : "", st);
      kill(seen.pid[i], SIGKILL);
    }
  }
  seen.n = 0;
  if (threads > threads0) {
    fail("%d threads left (%d at the start of the cycle)", threads, threads0);
    print_threads();
  }
  if (fds > fds0)
    fail("%d descriptors open (%d at the start of the cycle)", fds, fds0);
}

static void run_cycle(double seconds, bool kill_the_server) {
  int threads0 = count_threads(), fds0 = count_fds();
  atomic_store(&cycle_failures, 0);
  atomic_store(&quit, false);
  atomic_store(&id_next, 0);
  for (int i = 0; i < SUBMITTERS; i++) {
    atomic_store(&inflight[i], 0);
    atomic_store(&inflight_proc[i], 0);
  }
  atomic_store(&triggers_ok, 0);
  atomic_store(&event_runs, 0);
  atomic_store(&waits_early, 0);
  phase("setting up", PHASE_BOUND);
  setup();
  pthread_t th[SUBMITTERS + CANCELERS + PUTTERS + TRIGGERERS + 2];
  int n = 0;
  for (int i = 0; i < SUBMITTERS; i++)
    CHECK_OK(__real_pthread_create(&th[n++], NULL, submitter_main, (void *)(intptr_t)i));
  for (int i = 0; i < CANCELERS; i++)
    CHECK_OK(__real_pthread_create(&th[n++], NULL, canceler_main, (void *)(intptr_t)i));
  for (int i = 0; i < PUTTERS; i++)
    CHECK_OK(__real_pthread_create(&th[n++], NULL, putter_main, (void *)(intptr_t)i));
  for (int i = 0; i < TRIGGERERS; i++)
    CHECK_OK(__real_pthread_create(&th[n++], NULL, triggerer_main, (void *)(intptr_t)i));
  CHECK_OK(__real_pthread_create(&th[n++], NULL, manager_main, NULL));
  CHECK_OK(__real_pthread_create(&th[n++], NULL, killer_main, NULL));
  phase("running", seconds + PHASE_BOUND);
  check_sleep(seconds / 2);
  midway(kill_the_server);
  check_sleep(seconds / 2);
  stop_and_join(th, n);
  free_all();
  long accepted = 0, put = 0;
  audit_tasks(&accepted);
  kill_helpers(); /* the provoked helpers are not the pool's to end */
  audit_items(&put);
  audit_resources(threads0, fds0);
  atomic_fetch_add(&total_accepted, accepted);
  atomic_fetch_add(&total_items, put);
  fprintf(stderr, "soak: cycle %d (%s, %s): %ld tasks, %ld queue items, %ld triggers, "
          "%ld event runs\n", cycle, cycle % 2 ? "CANCEL" : "DRAIN", wait_names[cycle % 3],
          accepted, put, atomic_load(&triggers_ok), atomic_load(&event_runs));
  if (atomic_load(&waits_early) > 1)
    fail("%ld waits in all returned before their task ended", atomic_load(&waits_early));
  if (atomic_load(&event_runs) > atomic_load(&triggers_ok))
    fail("event worker ran %ld times for %ld triggers", atomic_load(&event_runs),
         atomic_load(&triggers_ok));
  if (atomic_load(&cycle_failures) > 0)
    fprintf(stderr, "soak: cycle %d failed (%ld failures)\n", cycle,
            atomic_load(&cycle_failures));
}

int main(int argc, char **argv) {
  const char *env = getenv("CT_SOAK_SECONDS");
  if (argc > 1)
    soak_seconds = strtod(argv[1], NULL);
  else if (env && *env)
    soak_seconds = strtod(env, NULL);
  CHECK(soak_seconds > 0);
  /* Children are copies of this process: nothing buffered may be written twice. */
  setvbuf(stdout, NULL, _IONBF, 0);
  CHECK_OK(ct_process_register("soak_echo", child_echo, NULL));
  CHECK_OK(ct_process_register("soak_hang", child_hang, NULL));
  CHECK_OK(ct_process_register("soak_helper", child_helper, NULL));
  shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(shared != MAP_FAILED);
  pthread_t dogt;
  CHECK_OK(__real_pthread_create(&dogt, NULL, watchdog_main, NULL));
  CHECK_OK(pthread_detach(dogt));
  double start = ct_now(), end = start + soak_seconds;
  int cycles = (int)(soak_seconds / CYCLE_SECONDS + 0.5);
  if (cycles < 1)
    cycles = 1;
  for (cycle = 0; cycle < cycles; cycle++) {
    double left = (end - ct_now()) / (cycles - cycle);
    run_cycle(left > 0.5 ? left : 0.5, cycle == (cycles > 1 ? 1 : 0));
  }
  phase("done", 1e9);
  fprintf(stderr, "soak: %d cycles, %ld tasks, %ld queue items, faults injected: %ld children "
          "killed, %ld fork server killed, %ld hung children, %ld children dead with a helper, "
          "%ld threads refused, %ld cancels (%ld by id); %.1f s\n", cycles,
          atomic_load(&total_accepted), atomic_load(&total_items), atomic_load(&children_killed),
          atomic_load(&servers_killed), atomic_load(&hangs), atomic_load(&helpers),
          atomic_load(&threads_refused), atomic_load(&cancels_ok), atomic_load(&cancels_by_id),
          ct_now() - start);
  if (atomic_load(&failures) > 0) {
    fprintf(stderr, "soak: FAILED: %ld failures\n", atomic_load(&failures));
    return 1;
  }
  printf("soak: passed\n");
  return 0;
}
