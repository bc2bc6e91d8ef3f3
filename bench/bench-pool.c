/* Thread-pool benchmark: ctasker against GLib's GThreadPool and libuv's
 * uv_queue_work, side by side in one process, each with the same number of
 * worker threads (2, but for the scaling grid).
 *
 *   ctasker      a supervisor with pool_size T, min_threads T (no reserves);
 *   GThreadPool  max_threads T, exclusive (its threads start at once and
 *                serve only this pool, like ctasker's);
 *   libuv        UV_THREADPOOL_SIZE=T, set before the first libuv call.
 *
 * What is measured:
 *   throughput, fire-and-forget  producers submit N empty tasks that each
 *     count a latch; the time runs from the first producer's start (its
 *     thread already running) until the last task has
 *     counted (and, for libuv, until every producer's loop has reaped its
 *     requests);
 *   throughput, tracked  each producer submits batches of BATCH tasks, each
 *     with a handle, waits for the whole batch and drops the handles; equal
 *     work for all: ctasker through ct_task_t handles and ct_wait_completed();
 *     the peers through a handle of their own, as a program would write one
 *     (malloc'd, an id, a status, a result slot, the three timestamps a
 *     ct_task_t keeps: queued, started, completed, one clock read each, an
 *     atomic reference count shared by the producer and the pool, freed by
 *     the last owner), waited for with a latch (GLib) or the after-work
 *     callback on the producer's own loop (libuv, whose native completion
 *     path that is);
 *   with each throughput run: the process's CPU time (getrusage: user and
 *     system, every thread) per task and its context switches per 1000
 *     tasks; the pools not under test sleep meanwhile;
 *   submit->start latency  one task at a time; "idle" pauses a few ms
 *     between tasks so the workers go to sleep, "warm" submits the next task
 *     as soon as the previous one's function has returned;
 *   a realistic mix  one producer keeps WINDOW tasks in flight, each doing
 *     1, 10 or 100 us of calibrated busy work; one task in ten is HIGH, six
 *     NORMAL, three LOW. Reported: throughput and the p99 queueing delay
 *     (submit to start) of the HIGH tasks. ctasker runs them by priority;
 *     GThreadPool is given a sort function on (priority, submission order),
 *     GLib's own way to prioritise; libuv has no priorities, so it is FIFO;
 *   per-task cost  fire-and-forget, one producer, from 10^4 up to
 *     CT_BENCH_MAX_TASKS tasks (peers stop where a size would take longer
 *     than CT_BENCH_PEER_SECONDS), wall time and CPU time per task, each
 *     pool's runs of a size after one run of it that is not counted, made
 *     right before them, for every pool alike;
 *   memory  in a fresh process per pool (so that no allocator cache of an
 *     earlier run hides anything): both workers are held in gate tasks,
 *     MEM_TASKS tasks are queued, the growth of the resident set per
 *     queued task is reported (not the heap's: mallinfo2 does not see
 *     ctasker's task records, which live in mmap'd slab pages), then the
 *     tasks run and the resident set is read right after the drain and
 *     after a second of idleness;
 *   scaling grid  fire-and-forget throughput for pool threads 1/2/4/8 x
 *     producers 1/2/4/8, one fresh process per thread count (libuv reads
 *     its pool size once per process).
 *
 * libuv's uv_queue_work is called only from the thread that owns the loop,
 * so each libuv producer has its own loop (the pool is shared), and every
 * request is a malloc'd uv_work_t freed in its after-work callback, as a
 * libuv program would do it. Every repetition runs the three pools in turn
 * (ctasker, GThreadPool, libuv, ctasker, ...), so that a change in the
 * machine's load hits all of them alike; each run is printed with the load
 * average. The figure of a pool is the median of its runs, and a ratio is
 * the median of the per-run ratios (each taken within one repetition).
 *
 * Usage: bench-pool [--quick] [--json]. --quick: short settings, to check
 * the tool; --json: one JSON object on stdout instead of the text report.
 * Settings (environment): CT_BENCH_REPS (7), CT_BENCH_TASKS (200000, per
 * throughput run), CT_BENCH_PRODUCERS (4), CT_BENCH_SAMPLES (1000 latency
 * samples per run), CT_BENCH_MAX_TASKS (10000000), CT_BENCH_PEER_SECONDS
 * (10), CT_BENCH_MEM_TASKS (1000000), CT_BENCH_SPIN_US (unset: ctasker's
 * default idle_spin; else that option in microseconds, 0 for none; the
 * peers do not spin), CT_BENCH_ONLY
 * (every section: or a comma-separated list of memory, throughput,
 * tracked, latency, mix, size, scaling; "throughput" is the
 * fire-and-forget half, "tracked" the other).
 * `bench-pool profile [TASKS [PRODUCERS [tracked]]]` runs only ctasker's
 * fire-and-forget (or tracked) path, for a profiler.
 */
#include <ctasker.h>
#include <glib.h>
#include <semaphore.h>
#include <stdio.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <uv.h>

#include "bench.h"

#define POOL_THREADS 2
#define BATCH 1024
#define IDLE_PAUSE_NS 3000000u /* long enough for every pool's workers to sleep */
#define WINDOW 64              /* tasks in flight in the realistic mix */
#define MAX_REPS 64

/* ---- the work items that are not plain counters ---------------------------- */

/* A handle for the peers' tracked path: what ct_task_t gives a ctasker
 * user (an id, a status, a result, its times, a shared reference count),
 * built as a peer's user would build it. The times are what a ctasker
 * handle always carries (ct_task_time_queued() and the others), so the
 * peers read the clock as often: once when the task is queued, once when
 * it starts and once when it ends. */
typedef struct peer_handle {
  uv_work_t req; /* libuv only */
  atomic_int refs;
  atomic_int status; /* 0 queued, 1 done */
  uint64_t id;
  uint64_t t_queued, t_started, t_completed; /* bench_now_ns() */
  void *result;
  sync_latch_t *batch; /* GLib: counted once done */
} peer_handle_t;

static atomic_uint_fast64_t peer_next_id;

static peer_handle_t *peer_handle_new(sync_latch_t *batch) {
  peer_handle_t *h = malloc(sizeof *h);
  if (!h)
    abort();
  atomic_init(&h->refs, 2); /* the producer's and the pool's */
  atomic_init(&h->status, 0);
  h->id = atomic_fetch_add_explicit(&peer_next_id, 1, memory_order_relaxed);
  h->result = NULL;
  h->batch = batch;
  h->t_started = h->t_completed = 0;
  h->t_queued = bench_now_ns(); /* just before it is queued */
  return h;
}

static void peer_handle_unref(peer_handle_t *h) {
  if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
    free(h);
}

/* The task itself, on a pool thread: its start, its (empty) result, its end. */
static void peer_handle_run(peer_handle_t *h) {
  h->t_started = bench_now_ns();
  h->result = NULL;
  h->t_completed = bench_now_ns();
}

/* Its completion: publish the result, then drop the pool's reference. */
static void peer_handle_complete(peer_handle_t *h) {
  atomic_store_explicit(&h->status, 1, memory_order_release);
  sync_latch_t *batch = h->batch;
  peer_handle_unref(h);
  if (batch)
    sync_latch_count(batch);
}

/* A task of the realistic mix. */
typedef struct job {
  uv_work_t req; /* libuv only */
  int priority;
  long seq;
  long iters;
  uint64_t submit_ns, start_ns;
  sem_t *window; /* posted when the task ends */
} job_t;

static void job_run(job_t *j) {
  j->start_ns = bench_now_ns();
  bench_work(j->iters);
  sem_post(j->window);
}

/* ---- the three pools, behind one table of operations ------------------ */

typedef struct backend {
  const char *name;
  int (*open)(int threads);
  void (*close)(void);
  /* Submit n fire-and-forget tasks that count `done`, and return once
   * they are submitted (libuv: once its loop has reaped them). Any thread. */
  void (*produce_ff)(long n, sync_latch_t *done);
  /* Submit n tasks with handles in batches, waiting for each batch. Any thread. */
  void (*produce_tracked)(long n);
  /* The following four are called from the main thread only. */
  void (*submit_probe)(bench_probe_t *p);
  void (*submit_gate)(sync_gate_t *g);
  void (*submit_count)(sync_latch_t *l);
  void (*submit_job)(job_t *j);
  /* Reap finished work the pool hands back to the main thread. */
  void (*drain)(void);
  /* Order the pool's queue by priority (true) or submission (false). */
  void (*set_priorities)(bool on);
} backend_t;

/* -- ctasker -- */

static ct_supervisor_t *ct_sup;

static json_t *ct_count_fn(ct_task_t *self, void *arg) {
  (void)self;
  sync_latch_count(arg);
  return NULL;
}

static json_t *ct_empty_fn(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

static json_t *ct_probe_fn(ct_task_t *self, void *arg) {
  (void)self;
  bench_probe_hit(arg);
  return NULL;
}

static json_t *ct_gate_fn(ct_task_t *self, void *arg) {
  (void)self;
  sync_gate_pass(arg, -1);
  return NULL;
}

static json_t *ct_job_fn(ct_task_t *self, void *arg) {
  (void)self;
  job_run(arg);
  return NULL;
}

static void ct_submit_or_die(ct_task_fn fn, void *arg, const ct_task_opts_t *opts,
                             ct_task_t **out) {
  int rc = ct_background_task(ct_sup, fn, arg, opts, out);
  if (rc != 0) {
    fprintf(stderr, "ct_background_task: %s\n", ct_strerror(rc));
    exit(1);
  }
}

static int ct_open(int threads) {
  ct_supervisor_opts_t opts = CT_SUPERVISOR_OPTS_INIT;
  opts.pool_size = threads;
  opts.min_threads = threads;
  const char *spin_us = getenv("CT_BENCH_SPIN_US"); /* unset: the library's default */
  if (spin_us && *spin_us)
    opts.idle_spin = atof(spin_us) * 1e-6;
  int rc = ct_supervisor_new(&opts, &ct_sup);
  return rc != 0 ? rc : ct_supervisor_start(ct_sup);
}

static void ct_close(void) {
  ct_supervisor_stop(ct_sup, CT_STOP_DRAIN, -1);
  ct_supervisor_free(ct_sup);
}

static void ct_produce_ff(long n, sync_latch_t *done) {
  for (long i = 0; i < n; i++)
    ct_submit_or_die(ct_count_fn, done, NULL, NULL);
}

static void ct_produce_tracked(long n) {
  ct_task_t *batch[BATCH];
  for (long left = n; left > 0;) {
    size_t k = left < BATCH ? (size_t)left : BATCH;
    for (size_t i = 0; i < k; i++)
      ct_submit_or_die(ct_empty_fn, NULL, NULL, &batch[i]);
    ct_wait_completed(batch, k, -1);
    for (size_t i = 0; i < k; i++)
      ct_task_unref(batch[i]);
    left -= (long)k;
  }
}

static void ct_submit_probe(bench_probe_t *p) { ct_submit_or_die(ct_probe_fn, p, NULL, NULL); }
static void ct_submit_gate(sync_gate_t *g) { ct_submit_or_die(ct_gate_fn, g, NULL, NULL); }
static void ct_submit_count(sync_latch_t *l) { ct_submit_or_die(ct_count_fn, l, NULL, NULL); }

static void ct_submit_job(job_t *j) {
  ct_task_opts_t opts = CT_TASK_OPTS_INIT;
  opts.priority = j->priority;
  ct_submit_or_die(ct_job_fn, j, &opts, NULL);
}

static void no_drain(void) {}
static void ct_set_priorities(bool on) { (void)on; /* always by priority */ }

static const backend_t ctasker_backend = {
    "ctasker",       ct_open,         ct_close,      ct_produce_ff, ct_produce_tracked,
    ct_submit_probe, ct_submit_gate,  ct_submit_count, ct_submit_job, no_drain,
    ct_set_priorities};

/* -- GLib GThreadPool -- */

/* One pool serves every kind of job, so that gate tasks really hold its
 * threads. A job is a pointer to a latch, handle, probe, gate or job with
 * its kind in the three low bits (all are at least 8-byte aligned): no
 * allocation but the handles'. */
typedef enum { G_COUNT, G_TRACKED, G_PROBE, G_GATE, G_JOB } glib_kind_t;

#define G_PTR(data) ((void *)((uintptr_t)(data) & ~(uintptr_t)7))
#define G_KIND(data) ((glib_kind_t)((uintptr_t)(data) & 7))

static GThreadPool *glib_pool;

static void glib_run(gpointer data, gpointer user) {
  (void)user;
  void *obj = G_PTR(data);
  switch (G_KIND(data)) {
  case G_COUNT:
    sync_latch_count(obj);
    break;
  case G_TRACKED:
    peer_handle_run(obj);
    peer_handle_complete(obj);
    break;
  case G_PROBE:
    bench_probe_hit(obj);
    break;
  case G_GATE:
    sync_gate_pass(obj, -1);
    break;
  case G_JOB:
    job_run(obj);
    break;
  }
}

static void glib_push_or_die(glib_kind_t kind, void *obj) {
  GError *err = NULL;
  if (!g_thread_pool_push(glib_pool, (gpointer)((uintptr_t)obj | kind), &err)) {
    fprintf(stderr, "g_thread_pool_push: %s\n", err ? err->message : "failed");
    exit(1);
  }
}

static int glib_open(int threads) {
  GError *err = NULL;
  glib_pool = g_thread_pool_new(glib_run, NULL, threads, TRUE, &err);
  if (!glib_pool)
    fprintf(stderr, "g_thread_pool_new: %s\n", err ? err->message : "failed");
  return glib_pool ? 0 : -1;
}

static void glib_close(void) { g_thread_pool_free(glib_pool, FALSE, TRUE); }

static void glib_produce_ff(long n, sync_latch_t *done) {
  for (long i = 0; i < n; i++)
    glib_push_or_die(G_COUNT, done);
}

static void glib_produce_tracked(long n) {
  peer_handle_t *batch[BATCH];
  for (long left = n; left > 0;) {
    size_t k = left < BATCH ? (size_t)left : BATCH;
    sync_latch_t latch;
    sync_latch_init(&latch, (long)k);
    for (size_t i = 0; i < k; i++) {
      batch[i] = peer_handle_new(&latch);
      glib_push_or_die(G_TRACKED, batch[i]);
    }
    sync_latch_wait(&latch, -1);
    for (size_t i = 0; i < k; i++)
      peer_handle_unref(batch[i]);
    sync_latch_destroy(&latch);
    left -= (long)k;
  }
}

static void glib_submit_probe(bench_probe_t *p) { glib_push_or_die(G_PROBE, p); }
static void glib_submit_gate(sync_gate_t *g) { glib_push_or_die(G_GATE, g); }
static void glib_submit_count(sync_latch_t *l) { glib_push_or_die(G_COUNT, l); }
static void glib_submit_job(job_t *j) { glib_push_or_die(G_JOB, j); }

/* Only jobs are queued while the sort function is set. */
static gint glib_job_order(gconstpointer a, gconstpointer b, gpointer user) {
  (void)user;
  const job_t *x = G_PTR(a), *y = G_PTR(b);
  if (x->priority != y->priority)
    return x->priority < y->priority ? -1 : 1;
  return (x->seq > y->seq) - (x->seq < y->seq);
}

static void glib_set_priorities(bool on) {
  g_thread_pool_set_sort_function(glib_pool, on ? glib_job_order : NULL, NULL);
}

static const backend_t glib_backend = {
    "GThreadPool",     glib_open,        glib_close,        glib_produce_ff, glib_produce_tracked,
    glib_submit_probe, glib_submit_gate, glib_submit_count, glib_submit_job, no_drain,
    glib_set_priorities};

/* -- libuv uv_queue_work -- */

static uv_loop_t luv_main_loop; /* the main thread's loop: probes, gates, jobs */

static void luv_count_work(uv_work_t *req) { sync_latch_count(req->data); }
static void luv_probe_work(uv_work_t *req) { bench_probe_hit(req->data); }
static void luv_gate_work(uv_work_t *req) { sync_gate_pass(req->data, -1); }
static void luv_job_work(uv_work_t *req) { job_run((job_t *)req); }
static void luv_job_after(uv_work_t *req, int status) { (void)req, (void)status; }

static void luv_free_after(uv_work_t *req, int status) {
  (void)status;
  free(req);
}

/* The handle's "started and finished" is the work function; its
 * completion is the after-work callback on the producer's loop. */
static void luv_tracked_work(uv_work_t *req) { peer_handle_run((peer_handle_t *)req); }

static void luv_tracked_after(uv_work_t *req, int status) {
  (void)status;
  peer_handle_t *h = (peer_handle_t *)req;
  long *completed = req->loop->data;
  (*completed)++;
  peer_handle_complete(h);
}

static void luv_check(int rc) {
  if (rc != 0) {
    fprintf(stderr, "uv_queue_work: %s\n", uv_strerror(rc));
    exit(1);
  }
}

static void luv_queue_or_die(uv_loop_t *loop, uv_work_cb work, uv_after_work_cb after,
                             void *data) {
  uv_work_t *req = malloc(sizeof *req);
  if (!req)
    luv_check(UV_ENOMEM);
  req->data = data;
  luv_check(uv_queue_work(loop, req, work, after));
}

static int luv_open(int threads) {
  (void)threads; /* UV_THREADPOOL_SIZE, set in main() */
  return uv_loop_init(&luv_main_loop);
}

static void luv_close(void) { uv_loop_close(&luv_main_loop); }

static void luv_produce_ff(long n, sync_latch_t *done) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  for (long i = 0; i < n; i++)
    luv_queue_or_die(&loop, luv_count_work, luv_free_after, done);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

static void luv_produce_tracked(long n) {
  uv_loop_t loop;
  long completed = 0;
  peer_handle_t *batch[BATCH];
  uv_loop_init(&loop);
  loop.data = &completed;
  for (long left = n; left > 0;) {
    long k = left < BATCH ? left : BATCH;
    for (long i = 0; i < k; i++) {
      batch[i] = peer_handle_new(NULL);
      luv_check(uv_queue_work(&loop, &batch[i]->req, luv_tracked_work, luv_tracked_after));
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once every after-work has run */
    for (long i = 0; i < k; i++)
      peer_handle_unref(batch[i]);
    left -= k;
  }
  uv_loop_close(&loop);
  if (completed != n) {
    fprintf(stderr, "libuv: %ld of %ld tracked tasks completed\n", completed, n);
    exit(1);
  }
}

static void luv_submit_probe(bench_probe_t *p) {
  luv_queue_or_die(&luv_main_loop, luv_probe_work, luv_free_after, p);
}
static void luv_submit_gate(sync_gate_t *g) {
  luv_queue_or_die(&luv_main_loop, luv_gate_work, luv_free_after, g);
}
static void luv_submit_count(sync_latch_t *l) {
  luv_queue_or_die(&luv_main_loop, luv_count_work, luv_free_after, l);
}
static void luv_submit_job(job_t *j) {
  luv_check(uv_queue_work(&luv_main_loop, &j->req, luv_job_work, luv_job_after));
}
static void luv_drain(void) { uv_run(&luv_main_loop, UV_RUN_DEFAULT); }
static void luv_set_priorities(bool on) { (void)on; /* FIFO only */ }

static const backend_t luv_backend = {
    "libuv",          luv_open,        luv_close,        luv_produce_ff, luv_produce_tracked,
    luv_submit_probe, luv_submit_gate, luv_submit_count, luv_submit_job, luv_drain,
    luv_set_priorities};

enum { B_CT, B_GLIB, B_UV, NBACKENDS };
static const backend_t *const backends[NBACKENDS] = {&ctasker_backend, &glib_backend,
                                                     &luv_backend};

/* ---- settings ----------------------------------------------------------- */

static struct {
  bool quick, json;
  long reps, tasks, producers, samples, max_tasks, peer_seconds, mem_tasks;
  double work_iters_per_us;
} cfg;

static const char *only_sections;

/* Whether CT_BENCH_ONLY asks for this section (unset: every section). */
static bool want(const char *section) {
  if (!only_sections)
    return true;
  size_t len = strlen(section);
  for (const char *s = only_sections; (s = strstr(s, section)) != NULL; s += len)
    if ((s == only_sections || s[-1] == ',') && (s[len] == ',' || s[len] == '\0'))
      return true;
  return false;
}

static void read_settings(void) {
  bool q = cfg.quick;
  cfg.reps = bench_env_long("CT_BENCH_REPS", q ? 2 : 7);
  cfg.reps = cfg.reps > MAX_REPS ? MAX_REPS : cfg.reps;
  cfg.tasks = bench_env_long("CT_BENCH_TASKS", q ? 20000 : 200000);
  cfg.producers = bench_env_long("CT_BENCH_PRODUCERS", 4);
  cfg.samples = bench_env_long("CT_BENCH_SAMPLES", q ? 50 : 1000);
  cfg.max_tasks = bench_env_long("CT_BENCH_MAX_TASKS", q ? 100000 : 10000000);
  cfg.peer_seconds = bench_env_long("CT_BENCH_PEER_SECONDS", q ? 1 : 10);
  cfg.mem_tasks = bench_env_long("CT_BENCH_MEM_TASKS", q ? 50000 : 1000000);
  only_sections = getenv("CT_BENCH_ONLY");
}

/* ---- figures: per-run values, medians and medians of per-run ratios ------ */

typedef struct figure {
  char table[24];
  char label[64];
  const char *unit;
  bool higher_is_better;
  int threads, producers; /* the scaling grid's cell; 0 elsewhere */
  double work_us;         /* the realistic mix's task size; 0 elsewhere */
  int nruns;
  double runs[NBACKENDS][MAX_REPS]; /* NAN: not measured in that run */
  double load[MAX_REPS];
  double value[NBACKENDS]; /* median of the runs; NAN: not measured */
  double ratio[NBACKENDS]; /* median over runs of ctasker / peer */
} figure_t;

#define MAX_FIGURES 96
static figure_t figures[MAX_FIGURES];
static int nfigures;

static figure_t *add_figure(const char *table, const char *label, const char *unit,
                            bool higher_is_better) {
  if (nfigures == MAX_FIGURES) {
    fprintf(stderr, "bench-pool: too many figures\n");
    exit(1);
  }
  figure_t *f = &figures[nfigures++];
  memset(f, 0, sizeof *f);
  snprintf(f->table, sizeof f->table, "%s", table);
  snprintf(f->label, sizeof f->label, "%s", label);
  f->unit = unit;
  f->higher_is_better = higher_is_better;
  for (int b = 0; b < NBACKENDS; b++)
    f->value[b] = f->ratio[b] = NAN;
  return f;
}

/* Record one run: values of the three pools (NAN where not run). */
static void figure_add_run(figure_t *f, const double v[NBACKENDS], double load) {
  for (int b = 0; b < NBACKENDS; b++)
    f->runs[b][f->nruns] = v[b];
  f->load[f->nruns++] = load;
}

/* Median of the finite values in v[0..n). */
static double median_finite(const double *v, int n) {
  double tmp[MAX_REPS];
  size_t k = 0;
  for (int i = 0; i < n; i++)
    if (isfinite(v[i]))
      tmp[k++] = v[i];
  return bench_median(tmp, k);
}

static void figure_finish(figure_t *f) {
  for (int b = 0; b < NBACKENDS; b++) {
    double ratios[MAX_REPS];
    f->value[b] = median_finite(f->runs[b], f->nruns);
    for (int r = 0; r < f->nruns; r++)
      ratios[r] = f->runs[B_CT][r] / f->runs[b][r];
    f->ratio[b] = median_finite(ratios, f->nruns);
  }
}

static void print_run(const figure_t *f) {
  if (cfg.json)
    return;
  int r = f->nruns - 1;
  printf("  run %2d  load %5.2f  %-36s", r + 1, f->load[r], f->label);
  for (int b = 0; b < NBACKENDS; b++)
    isfinite(f->runs[b][r]) ? printf("  %s %.3f", backends[b]->name, f->runs[b][r])
                            : printf("  %s -", backends[b]->name);
  printf(" %s\n", f->unit);
  fflush(stdout);
}

static void print_section(const char *title) {
  if (!cfg.json) {
    printf("\n%s\n", title);
    fflush(stdout);
  }
}

static void print_ratio(double r) {
  isfinite(r) ? printf(" %9.2fx", r) : printf(" %10s", "-");
}

static void print_table(const char *table, const char *title) {
  printf("\n%s\n%-38s %-10s %11s %11s %11s %10s %10s  %s\n", title, "", "unit", "ctasker",
         "GThreadPool", "libuv", "ct/GLib", "ct/uv", "better");
  for (int i = 0; i < nfigures; i++) {
    figure_t *f = &figures[i];
    if (strcmp(f->table, table) != 0)
      continue;
    printf("%-38s %-10s", f->label, f->unit);
    for (int b = 0; b < NBACKENDS; b++)
      isfinite(f->value[b]) ? printf(" %11.3f", f->value[b]) : printf(" %11s", "-");
    print_ratio(f->ratio[B_GLIB]);
    print_ratio(f->ratio[B_UV]);
    printf("  %s\n", f->higher_is_better ? "higher" : "lower");
  }
}

/* ---- throughput: P producer threads, started together -------------------- */

typedef struct producer {
  pthread_t thread;
  const backend_t *b;
  bool tracked;
  long n;
  sync_latch_t *done;
  pthread_barrier_t *start;
  uint64_t started_ns; /* when it passed the barrier */
} producer_t;

static void *producer_main(void *arg) {
  producer_t *p = arg;
  pthread_barrier_wait(p->start);
  p->started_ns = bench_now_ns();
  if (p->tracked)
    p->b->produce_tracked(p->n);
  else
    p->b->produce_ff(p->n, p->done);
  return NULL;
}

/* Seconds for n tasks from `producers` threads (n split among them). */
static double run_throughput(const backend_t *b, long n, int producers, bool tracked) {
  producer_t ps[producers];
  pthread_barrier_t start;
  sync_latch_t done;
  sync_latch_init(&done, tracked ? 0 : n);
  pthread_barrier_init(&start, NULL, (unsigned)producers + 1);
  for (int i = 0; i < producers; i++) {
    long share = n / producers + (i < n % producers ? 1 : 0);
    ps[i] = (producer_t){.b = b, .tracked = tracked, .n = share, .done = &done, .start = &start};
    pthread_create(&ps[i].thread, NULL, producer_main, &ps[i]);
  }
  /* The clock starts when the first producer passes the barrier, which
   * each stamps itself: neither starting the producer threads (a fixed
   * cost that would weigh on short runs only) nor a main thread
   * descheduled just after the barrier is counted. */
  pthread_barrier_wait(&start);
  sync_latch_wait(&done, -1);
  for (int i = 0; i < producers; i++)
    pthread_join(ps[i].thread, NULL);
  uint64_t t1 = bench_now_ns(), t0 = t1;
  for (int i = 0; i < producers; i++)
    t0 = ps[i].started_ns < t0 ? ps[i].started_ns : t0;
  pthread_barrier_destroy(&start);
  sync_latch_destroy(&done);
  return (double)(t1 - t0) / 1e9;
}

/* Throughput in millions of tasks per second, with the CPU time and the
 * context switches a task cost, over cfg.reps repetitions in which the
 * pools take turns. */
static void measure_throughput(const char *what, int producers, bool tracked) {
  char label[64];
  figure_t *f[3];
  snprintf(label, sizeof label, "%s, %d producer%s", what, producers, producers > 1 ? "s" : "");
  f[0] = add_figure("throughput", label, "Mtask/s", true);
  f[1] = add_figure("cpu", label, "ns/task", false);
  f[2] = add_figure("csw", label, "/1000 tasks", false);
  for (long r = 0; r < cfg.reps; r++) {
    double v[3][NBACKENDS], load = bench_load1();
    for (int b = 0; b < NBACKENDS; b++) {
      bench_usage_t u0 = bench_usage();
      double s = run_throughput(backends[b], cfg.tasks, producers, tracked);
      bench_usage_t u1 = bench_usage();
      v[0][b] = (double)cfg.tasks / s / 1e6;
      v[1][b] = (u1.cpu_s - u0.cpu_s) * 1e9 / (double)cfg.tasks;
      v[2][b] = (double)(u1.csw - u0.csw) * 1000.0 / (double)cfg.tasks;
    }
    for (int i = 0; i < 3; i++)
      figure_add_run(f[i], v[i], load);
    print_run(f[0]);
  }
  for (int i = 0; i < 3; i++)
    figure_finish(f[i]);
}

/* ---- latency ------------------------------------------------------------- */

typedef struct quantiles {
  double p50, p99, p999; /* microseconds */
} quantiles_t;

static quantiles_t run_latency(const backend_t *b, long samples, bool idle) {
  bench_probe_t *probes = calloc((size_t)samples, sizeof *probes);
  uint64_t *lat = malloc((size_t)samples * sizeof *lat);
  if (!probes || !lat)
    abort();
  for (long i = 0; i < samples; i++) {
    if (idle)
      bench_sleep_ns(IDLE_PAUSE_NS);
    uint64_t t0 = bench_now_ns();
    b->submit_probe(&probes[i]);
    bench_probe_await(&probes[i]);
    lat[i] = probes[i].started_ns > t0 ? probes[i].started_ns - t0 : 0;
  }
  b->drain();
  bench_sort_u64(lat, (size_t)samples);
  quantiles_t q = {bench_quantile(lat, (size_t)samples, 0.50) / 1e3,
                   bench_quantile(lat, (size_t)samples, 0.99) / 1e3,
                   bench_quantile(lat, (size_t)samples, 0.999) / 1e3};
  free(lat);
  free(probes);
  return q;
}

static void measure_latency(bool idle) {
  long reps = cfg.reps > 3 ? 3 : cfg.reps; /* idle runs are slow: pauses */
  const char *kind = idle ? "idle" : "warm";
  const char *names[3] = {"p50", "p99", "p99.9"};
  figure_t *f[3];
  for (int i = 0; i < 3; i++) {
    char label[64];
    snprintf(label, sizeof label, "submit->start, %s, %s", kind, names[i]);
    f[i] = add_figure("latency", label, "us", false);
  }
  for (long r = 0; r < reps; r++) {
    double v[3][NBACKENDS], load = bench_load1();
    for (int b = 0; b < NBACKENDS; b++) {
      quantiles_t q = run_latency(backends[b], cfg.samples, idle);
      v[0][b] = q.p50;
      v[1][b] = q.p99;
      v[2][b] = q.p999;
    }
    for (int i = 0; i < 3; i++)
      figure_add_run(f[i], v[i], load);
    print_run(f[1]);
  }
  for (int i = 0; i < 3; i++)
    figure_finish(f[i]);
}

/* ---- the realistic mix ----------------------------------------------------- */

static int mix_priority(long i) {
  int k = (int)(i % 10);
  return k == 0 ? CT_PRIORITY_HIGH : k <= 6 ? CT_PRIORITY_NORMAL : CT_PRIORITY_LOW;
}

/* One run of n tasks of `iters` work each, WINDOW in flight; returns
 * tasks/s and writes the p99 queueing delay of the HIGH tasks (us). */
static double run_mix(const backend_t *b, job_t *jobs, long n, long iters, double *high_p99) {
  sem_t window;
  uint64_t *delays = malloc((size_t)(n / 10 + 1) * sizeof *delays);
  if (!delays)
    abort();
  sem_init(&window, 0, WINDOW);
  b->set_priorities(true);
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    while (sem_wait(&window) != 0)
      ;
    jobs[i] = (job_t){.priority = mix_priority(i), .seq = i, .iters = iters, .window = &window};
    jobs[i].submit_ns = bench_now_ns();
    b->submit_job(&jobs[i]);
  }
  for (int i = 0; i < WINDOW; i++)
    while (sem_wait(&window) != 0)
      ;
  uint64_t t1 = bench_now_ns();
  b->drain();
  b->set_priorities(false);
  sem_destroy(&window);
  size_t k = 0;
  for (long i = 0; i < n; i++)
    if (jobs[i].priority == CT_PRIORITY_HIGH)
      delays[k++] = jobs[i].start_ns - jobs[i].submit_ns;
  bench_sort_u64(delays, k);
  *high_p99 = k ? (double)bench_quantile(delays, k, 0.99) / 1e3 : NAN;
  free(delays);
  return (double)n / ((double)(t1 - t0) / 1e9);
}

static void measure_mix(double work_us) {
  char label[64];
  figure_t *thr, *p99;
  /* About half a second of work per run on the pool's threads. */
  long n = (long)(0.5 * POOL_THREADS * 1e6 / work_us) / (cfg.quick ? 20 : 1);
  n = n > cfg.tasks ? cfg.tasks : n < 100 ? 100 : n;
  long iters = (long)(work_us * cfg.work_iters_per_us);
  job_t *jobs = calloc((size_t)n, sizeof *jobs);
  if (!jobs)
    abort();
  snprintf(label, sizeof label, "tasks of %g us, throughput", work_us);
  thr = add_figure("mix", label, "ktask/s", true);
  thr->work_us = work_us;
  snprintf(label, sizeof label, "tasks of %g us, HIGH queueing p99", work_us);
  p99 = add_figure("mix", label, "us", false);
  p99->work_us = work_us;
  for (long r = 0; r < (cfg.reps > 5 ? 5 : cfg.reps); r++) {
    double v[2][NBACKENDS], load = bench_load1();
    for (int b = 0; b < NBACKENDS; b++)
      v[0][b] = run_mix(backends[b], jobs, n, iters, &v[1][b]) / 1e3;
    figure_add_run(thr, v[0], load);
    figure_add_run(p99, v[1], load);
    print_run(thr);
    print_run(p99);
  }
  figure_finish(thr);
  figure_finish(p99);
  free(jobs);
}

/* ---- per-task cost by run size ---------------------------------------------- */

/* Runs of a size: a run of 10^4 tasks lasts a millisecond, in which a
 * wake-up delayed by another process weighs as much as the work, so the
 * small sizes are run three times as often as the others; 10^7 only 3
 * times (the peers take seconds a run). With 7 runs of the small sizes, 3
 * of 10^6 and one of 10^7, the largest of ctasker's four wall figures was
 * 1.13x to 1.86x the smallest (7 runs of the section, no size always the
 * slowest); with these counts, 1.13x in 2 of 2 runs of the section alone,
 * but 2.3x in a whole report (10^4 the slowest: the machine's load then,
 * not fewer runs, the likelier cause). */
static long sizes_reps(long n) {
  long reps = n >= 10000000 ? 3 : n >= 1000000 ? cfg.reps : 3 * cfg.reps;
  if (cfg.quick && reps > cfg.reps)
    reps = cfg.reps;
  return reps > MAX_REPS ? MAX_REPS : reps;
}

/* Nanoseconds per fire-and-forget task for n = 10^4, 10^5, ... up to
 * cfg.max_tasks, wall time and the process's CPU time (every thread): a
 * run's fixed costs that are waits, not work (the wake-ups of sleeping
 * pool threads and of the main thread, milliseconds on a loaded machine),
 * weigh on a small size's wall figure but not on its CPU figure, and a
 * large size's wall figure counts the time slices other processes take.
 * Sizes are repeated as sizes_reps() says; a peer skips a size whose
 * projected run time exceeds cfg.peer_seconds. Before its first counted
 * run of a size, each pool makes one that is not counted, right before it
 * (not all pools' in a row, which left the first pool idle for the others'
 * warm-ups: seconds at 10^7, after which ctasker had given its slab pages
 * back, as it does after a quarter second of idleness, and faulted them in
 * again in the counted run), so that what a pool does once for a size
 * (fault in the memory its queue needs, grow its allocator's caches)
 * weighs on no size's per-task figure: a small size's one run would pay it
 * in full, a large size's would spread it thin. */
static void measure_cost_by_size(void) {
  double last_ns[NBACKENDS] = {0};
  for (long n = 10000; n <= cfg.max_tasks; n *= 10) {
    char label[64];
    long reps = sizes_reps(n);
    snprintf(label, sizeof label, "per-task cost, %.0e tasks", (double)n);
    figure_t *f = add_figure("size", label, "ns/task", false);
    snprintf(label, sizeof label, "per-task CPU, %.0e tasks", (double)n);
    figure_t *fc = add_figure("sizecpu", label, "ns/task", false);
    bool skip[NBACKENDS];
    for (int b = 0; b < NBACKENDS; b++)
      skip[b] = b != B_CT && last_ns[b] * 1e-9 * (double)n > (double)cfg.peer_seconds;
    for (long r = 0; r < reps; r++) {
      double v[NBACKENDS], c[NBACKENDS], load = bench_load1();
      for (int b = 0; b < NBACKENDS; b++) {
        v[b] = c[b] = NAN;
        if (skip[b])
          continue;
        if (r == 0)
          run_throughput(backends[b], n, 1, false); /* the warm-up run */
        bench_usage_t u0 = bench_usage();
        v[b] = run_throughput(backends[b], n, 1, false) * 1e9 / (double)n;
        c[b] = (bench_usage().cpu_s - u0.cpu_s) * 1e9 / (double)n;
      }
      figure_add_run(f, v, load);
      figure_add_run(fc, c, load);
      print_run(f);
    }
    figure_finish(f);
    figure_finish(fc);
    for (int b = 0; b < NBACKENDS; b++)
      last_ns[b] = skip[b] ? INFINITY : f->value[b];
  }
}

/* ---- fresh processes: memory per pool, the scaling grid -------------------- */

/* Run this program again as `bench-pool ARGS...` with the same settings
 * and read the figures it prints as JSON into this run's figures. */
static void run_child(char *const args[]) {
  char cmd[512] = "";
  size_t len = 0;
  char exe[256];
  ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (k <= 0) {
    fprintf(stderr, "bench-pool: cannot find its own program\n");
    exit(1);
  }
  exe[k] = '\0';
  len += (size_t)snprintf(cmd + len, sizeof cmd - len, "'%s'", exe);
  for (int i = 0; args[i]; i++)
    len += (size_t)snprintf(cmd + len, sizeof cmd - len, " %s", args[i]);
  fflush(stdout);
  FILE *p = popen(cmd, "r");
  json_error_t err;
  json_t *out = p ? json_loadf(p, 0, &err) : NULL;
  if (!p || (pclose(p) != 0) || !out) {
    fprintf(stderr, "bench-pool: %s failed%s%s\n", cmd, out ? "" : ": ", out ? "" : err.text);
    exit(1);
  }
  size_t i;
  json_t *jf;
  json_array_foreach(json_object_get(out, "figures"), i, jf) {
    figure_t *f = add_figure(json_string_value(json_object_get(jf, "table")),
                             json_string_value(json_object_get(jf, "label")), "",
                             json_is_true(json_object_get(jf, "higher_is_better")));
    /* The unit strings are static in either process: match them. */
    const char *unit = json_string_value(json_object_get(jf, "unit"));
    static const char *units[] = {"Mtask/s", "bytes", "MB"};
    for (size_t u = 0; u < sizeof units / sizeof *units; u++)
      if (unit && strcmp(unit, units[u]) == 0)
        f->unit = units[u];
    f->threads = (int)json_integer_value(json_object_get(jf, "threads"));
    f->producers = (int)json_integer_value(json_object_get(jf, "producers"));
    for (int b = 0; b < NBACKENDS; b++) {
      json_t *v = json_object_get(json_object_get(jf, "values"), backends[b]->name);
      json_t *r = json_object_get(json_object_get(jf, "ratios"), backends[b]->name);
      f->value[b] = json_is_number(v) ? json_number_value(v) : NAN;
      f->ratio[b] = json_is_number(r) ? json_number_value(r) : NAN;
    }
  }
  json_decref(out);
}

/* Child: one pool only, MEM_TASKS queued behind held workers. */
static void child_memory(int b) {
  const backend_t *be = backends[b];
  sync_gate_t gate;
  sync_latch_t done;
  long n = cfg.mem_tasks;
  double v[5][NBACKENDS];
  for (int i = 0; i < 5; i++)
    for (int k = 0; k < NBACKENDS; k++)
      v[i][k] = NAN;
  if (be->open(POOL_THREADS) != 0)
    exit(1);
  sync_gate_init(&gate);
  sync_latch_init(&done, n);
  for (int i = 0; i < POOL_THREADS; i++)
    be->submit_gate(&gate);
  sync_gate_wait_arrived(&gate, POOL_THREADS, -1);
  size_t rss0 = bench_rss_bytes();
  for (long i = 0; i < n; i++)
    be->submit_count(&done);
  size_t rss1 = bench_rss_bytes();
  sync_gate_open(&gate);
  sync_latch_wait(&done, -1);
  be->drain();
  size_t rss2 = bench_rss_bytes();
  bench_sleep_ns(1000000000u);
  size_t rss3 = bench_rss_bytes();
  v[0][b] = ((double)rss1 - (double)rss0) / (double)n;
  v[1][b] = (double)rss0 / 1048576.0;
  v[2][b] = (double)rss1 / 1048576.0;
  v[3][b] = (double)rss2 / 1048576.0;
  v[4][b] = (double)rss3 / 1048576.0;
  static const char *labels[5] = {"memory per queued task", "RSS before queuing",
                                  "RSS with all queued", "RSS right after the drain",
                                  "RSS after 1 s idle"};
  for (int i = 0; i < 5; i++) {
    figure_t *f = add_figure("memory", labels[i], i ? "MB" : "bytes", false);
    figure_add_run(f, v[i], bench_load1());
    figure_finish(f);
  }
  /* Only once the pool has ended may the gate go: a task released from
   * it may still be on its way out of sync_gate_pass(). */
  be->close();
  sync_latch_destroy(&done);
  sync_gate_destroy(&gate);
}

/* Child: the scaling grid's row for `threads` pool threads. */
static void child_scaling(int threads) {
  static const int producers[] = {1, 2, 4, 8};
  long reps = cfg.reps > 3 ? 3 : cfg.reps;
  for (int b = 0; b < NBACKENDS; b++)
    if (backends[b]->open(threads) != 0)
      exit(1);
  for (size_t p = 0; p < sizeof producers / sizeof *producers; p++) {
    char label[64];
    snprintf(label, sizeof label, "%d thread%s, %d producer%s", threads, threads > 1 ? "s" : "",
             producers[p], producers[p] > 1 ? "s" : "");
    figure_t *f = add_figure("scaling", label, "Mtask/s", true);
    f->threads = threads;
    f->producers = producers[p];
    for (long r = 0; r < reps; r++) {
      double v[NBACKENDS];
      for (int b = 0; b < NBACKENDS; b++)
        v[b] = (double)cfg.tasks / run_throughput(backends[b], cfg.tasks, producers[p], false) / 1e6;
      figure_add_run(f, v, bench_load1());
    }
    figure_finish(f);
  }
  for (int b = 0; b < NBACKENDS; b++)
    backends[b]->close();
}

static void measure_memory(void) {
  for (int b = 0; b < NBACKENDS; b++) {
    char arg[16];
    snprintf(arg, sizeof arg, "%d", b);
    char *args[] = {"--child-memory", arg, cfg.quick ? "--quick" : NULL, NULL};
    run_child(args);
  }
  /* The children each gave one pool's column: fold them into one row per label. */
  for (int i = 0; i < nfigures; i++) {
    figure_t *f = &figures[i];
    if (strcmp(f->table, "memory") != 0)
      continue;
    for (int j = i + 1; j < nfigures; j++)
      if (strcmp(figures[j].table, "memory") == 0 && strcmp(figures[j].label, f->label) == 0) {
        for (int b = 0; b < NBACKENDS; b++)
          if (isfinite(figures[j].value[b]))
            f->value[b] = figures[j].value[b];
        figures[j].table[0] = '\0'; /* merged */
      }
    for (int b = 0; b < NBACKENDS; b++)
      f->ratio[b] = f->value[B_CT] / f->value[b];
  }
  int k = 0;
  for (int i = 0; i < nfigures; i++)
    if (figures[i].table[0])
      figures[k++] = figures[i];
  nfigures = k;
}

static void measure_scaling(void) {
  static const char *threads[] = {"1", "2", "4", "8"};
  for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
    char *args[] = {"--child-scaling", (char *)threads[t], cfg.quick ? "--quick" : NULL, NULL};
    run_child(args);
    if (!cfg.json) {
      for (int i = nfigures - 4; i < nfigures; i++)
        printf("  %-28s ctasker %.3f  GThreadPool %.3f  libuv %.3f Mtask/s\n", figures[i].label,
               figures[i].value[B_CT], figures[i].value[B_GLIB], figures[i].value[B_UV]);
      fflush(stdout);
    }
  }
}

/* ---- output ---------------------------------------------------------------- */

static json_t *json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *figure_json(const figure_t *f) {
  json_t *o = json_object(), *values = json_object(), *ratios = json_object(), *runs = json_array();
  for (int b = 0; b < NBACKENDS; b++) {
    json_object_set_new(values, backends[b]->name, json_num(f->value[b]));
    if (b != B_CT)
      json_object_set_new(ratios, backends[b]->name, json_num(f->ratio[b]));
  }
  for (int r = 0; r < f->nruns; r++) {
    json_t *run = json_object(), *rv = json_object();
    for (int b = 0; b < NBACKENDS; b++)
      json_object_set_new(rv, backends[b]->name, json_num(f->runs[b][r]));
    json_object_set_new(run, "load", json_num(f->load[r]));
    json_object_set_new(run, "values", rv);
    json_array_append_new(runs, run);
  }
  json_object_set_new(o, "table", json_string(f->table));
  json_object_set_new(o, "label", json_string(f->label));
  json_object_set_new(o, "unit", json_string(f->unit));
  json_object_set_new(o, "higher_is_better", json_boolean(f->higher_is_better));
  if (f->threads)
    json_object_set_new(o, "threads", json_integer(f->threads));
  if (f->producers)
    json_object_set_new(o, "producers", json_integer(f->producers));
  if (f->work_us > 0)
    json_object_set_new(o, "work_us", json_real(f->work_us));
  json_object_set_new(o, "values", values);
  json_object_set_new(o, "ratios", ratios);
  json_object_set_new(o, "runs", runs);
  return o;
}

static void print_json(double load0, double load1) {
  json_t *o = json_object(), *figs = json_array(), *settings = json_object();
  for (int i = 0; i < nfigures; i++)
    json_array_append_new(figs, figure_json(&figures[i]));
  json_object_set_new(settings, "quick", json_boolean(cfg.quick));
  json_object_set_new(settings, "reps", json_integer(cfg.reps));
  json_object_set_new(settings, "tasks", json_integer(cfg.tasks));
  json_object_set_new(settings, "producers", json_integer(cfg.producers));
  json_object_set_new(settings, "samples", json_integer(cfg.samples));
  json_object_set_new(settings, "max_tasks", json_integer(cfg.max_tasks));
  json_object_set_new(settings, "mem_tasks", json_integer(cfg.mem_tasks));
  json_object_set_new(settings, "pool_threads", json_integer(POOL_THREADS));
  json_object_set_new(o, "benchmark", json_string("bench-pool"));
  json_object_set_new(o, "pools", json_pack("[sss]", "ctasker", "GThreadPool", "libuv"));
  json_object_set_new(o, "settings", settings);
  json_object_set_new(o, "load_before", json_num(load0));
  json_object_set_new(o, "load_after", json_num(load1));
  json_object_set_new(o, "figures", figs);
  json_dumpf(o, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
  printf("\n");
  json_decref(o);
}

static void print_report(double load0, double load1) {
  printf("\nResults: the median of each pool's runs; ratios are ctasker / peer, the"
         " median of the per-run ratios\n(above 1 is better for ctasker where higher is better,"
         " below 1 where lower is better).\nLoad average (1 min) %.2f before, %.2f after.\n",
         load0, load1);
  print_table("throughput", "Throughput, empty tasks, 2 pool threads");
  print_table("cpu", "CPU time per task, all threads");
  print_table("csw", "Context switches per 1000 tasks");
  print_table("latency", "Submit->start latency, one task at a time");
  print_table("mix", "Realistic mix, 10% HIGH / 60% NORMAL / 30% LOW, 64 in flight");
  print_table("size", "Cost per fire-and-forget task by run size");
  print_table("sizecpu", "CPU time per fire-and-forget task by run size, all threads");
  print_table("memory", "Memory, a fresh process per pool, tasks queued behind held workers");
  print_table("scaling", "Scaling grid, fire-and-forget");
}

static void warm_up(void) {
  for (int b = 0; b < NBACKENDS; b++) {
    run_throughput(backends[b], cfg.tasks / 4 + 1, 1, false);
    run_throughput(backends[b], cfg.tasks / 4 + 1, 1, true);
  }
}

/* `bench-pool profile [TASKS [PRODUCERS [tracked]]]`: only ctasker's
 * fire-and-forget (or tracked) path, for perf, callgrind or strace; prints
 * its throughput. */
static int profile_ctasker(int argc, char **argv) {
  long n = argc > 2 ? atol(argv[2]) : 2000000;
  int producers = argc > 3 ? atoi(argv[3]) : 1;
  bool tracked = argc > 4 && strcmp(argv[4], "tracked") == 0;
  if (n < 1 || producers < 1 || ct_open(POOL_THREADS) != 0)
    return 2;
  double s = run_throughput(&ctasker_backend, n, producers, tracked);
  printf("ctasker %s: %ld tasks, %d producer(s): %.3f Mtask/s\n",
         tracked ? "tracked" : "fire-and-forget", n, producers, n / s / 1e6);
  ct_close();
  return 0;
}

static void print_header(void) {
  struct utsname u;
  uname(&u);
  printf("bench-pool: ctasker vs GThreadPool (exclusive) vs libuv (uv_queue_work), %d pool"
         " threads\n%s %s, %ld CPUs; reps %ld, tasks/run %ld, producers 1 and %ld, latency"
         " samples %ld, max tasks %ld%s\n",
         POOL_THREADS, u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN), cfg.reps, cfg.tasks,
         cfg.producers, cfg.samples, cfg.max_tasks, cfg.quick ? " (--quick: not for comparison)" : "");
  fflush(stdout);
}

static int usage(void) {
  fprintf(stderr, "usage: bench-pool [--quick] [--json] | profile [TASKS [PRODUCERS [tracked]]]\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "profile") == 0)
    return profile_ctasker(argc, argv);
  int child_memory_pool = -1, child_threads = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0)
      cfg.quick = true;
    else if (strcmp(argv[i], "--json") == 0)
      cfg.json = true;
    else if (strcmp(argv[i], "--child-memory") == 0 && i + 1 < argc)
      child_memory_pool = atoi(argv[++i]);
    else if (strcmp(argv[i], "--child-scaling") == 0 && i + 1 < argc)
      child_threads = atoi(argv[++i]);
    else
      return usage();
  }
  read_settings();
  char threads[16];
  snprintf(threads, sizeof threads, "%d", child_threads ? child_threads : POOL_THREADS);
  setenv("UV_THREADPOOL_SIZE", threads, 1); /* before the first libuv call */
  if (child_memory_pool >= 0 || child_threads > 0) {
    if (child_memory_pool >= NBACKENDS || child_threads > 64)
      return usage();
    child_memory_pool >= 0 ? child_memory(child_memory_pool) : child_scaling(child_threads);
    print_json(NAN, NAN);
    return 0;
  }
  cfg.work_iters_per_us = bench_calibrate_work();
  double load0 = bench_load1();
  if (!cfg.json)
    print_header();
  if (want("memory"))
    measure_memory(); /* fresh processes, before this one has threads */
  for (int b = 0; b < NBACKENDS; b++)
    if (backends[b]->open(POOL_THREADS) != 0) {
      fprintf(stderr, "could not start %s\n", backends[b]->name);
      return 1;
    }
  warm_up();
  print_section("Throughput runs (each run: the three pools in turn)");
  if (want("throughput")) {
    measure_throughput("fire-and-forget", 1, false);
    measure_throughput("fire-and-forget", (int)cfg.producers, false);
  }
  if (want("tracked")) {
    measure_throughput("tracked (handle + wait)", 1, true);
    measure_throughput("tracked (handle + wait)", (int)cfg.producers, true);
  }
  print_section("Latency runs (p99 shown)");
  if (want("latency")) {
    measure_latency(true);
    measure_latency(false);
  }
  print_section("Realistic mix runs");
  if (want("mix")) {
    measure_mix(1);
    measure_mix(10);
    measure_mix(100);
  }
  print_section("Per-task cost by run size");
  if (want("size"))
    measure_cost_by_size();
  for (int b = 0; b < NBACKENDS; b++)
    backends[b]->close();
  print_section("Scaling grid (a fresh process per thread count)");
  if (want("scaling"))
    measure_scaling();
  double load1 = bench_load1();
  cfg.json ? print_json(load0, load1) : print_report(load0, load1);
  return 0;
}
