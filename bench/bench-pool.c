/* Thread-pool benchmark: ctasker against GLib's GThreadPool and libuv's
 * uv_queue_work, side by side in one process, each with 2 worker threads.
 *
 *   ctasker      a supervisor with pool_size 2, min_threads 2 (no reserves);
 *   GThreadPool  max_threads 2, exclusive (its threads start at once and
 *                serve only this pool, like ctasker's);
 *   libuv        UV_THREADPOOL_SIZE=2, set before the first libuv call.
 *
 * What is measured (every task is empty but for its bookkeeping):
 *   throughput, fire-and-forget  producers submit N tasks that each count a
 *     latch; the time runs from the start until the last one has counted
 *     (and, for libuv, until every producer's loop has reaped its requests);
 *   throughput, tracked  each producer submits batches of BATCH tasks and
 *     waits for each batch: ctasker through handles and ct_wait_completed(),
 *     GLib through a job the producer allocates and a latch, libuv through
 *     the after-work callback on the producer's own loop;
 *   submit->start latency  one task at a time; "idle" pauses a few ms
 *     between tasks so the workers go to sleep, "warm" submits the next task
 *     as soon as the previous one's function has returned;
 *   CPU per task  the process's CPU time over each throughput run (every
 *     pool's threads, the producers, the waiter) divided by its tasks: the
 *     pools not under test sleep meanwhile;
 *   per-task cost  fire-and-forget, one producer, from 10^3 up to
 *     CT_BENCH_MAX_TASKS tasks (peers stop where a size would take too long);
 *   heap per queued task  both workers are held in gate tasks, N tasks are
 *     queued, and the growth of the heap in use (mallinfo2) is divided by N;
 *     this runs first, while no allocator cache holds freed task memory.
 *
 * libuv's uv_queue_work is called only from the thread that owns the loop,
 * so each libuv producer has its own loop (the pool is shared), and every
 * request is a malloc'd uv_work_t freed in its after-work callback, as a
 * libuv program would do it. Repetitions are interleaved across the three
 * pools so that a change in the machine's load hits all of them alike, and
 * the median of the repetitions is reported.
 *
 * Settings (environment): CT_BENCH_REPS (5), CT_BENCH_TASKS (200000, per
 * throughput run), CT_BENCH_PRODUCERS (4), CT_BENCH_SAMPLES (1000 latency
 * samples per run), CT_BENCH_MAX_TASKS (10000000), CT_BENCH_PEER_SECONDS (3,
 * the most a peer's per-task-cost size may take), CT_BENCH_SPIN_US (0:
 * ctasker's idle_spin option in microseconds; the peers do not spin).
 * `bench-pool profile [TASKS [PRODUCERS]]` runs only ctasker's
 * fire-and-forget path, for a profiler.
 */
#include <ctasker.h>
#include <glib.h>
#include <stdio.h>
#include <uv.h>

#include "bench.h"

#define POOL_THREADS 2
#define BATCH 1024
#define IDLE_PAUSE_NS 3000000u /* long enough for every pool's workers to sleep */
#define HEAP_TASKS 100000

/* ---- the three pools, behind one table of operations ------------------ */

typedef struct backend {
  const char *name;
  int (*open)(void);
  void (*close)(void);
  /* Submit n fire-and-forget tasks that count `done`, and return once
   * they are submitted (libuv: once its loop has reaped them). Any thread. */
  void (*produce_ff)(long n, sync_latch_t *done);
  /* Submit n tasks in batches, waiting for each batch. Any thread. */
  void (*produce_tracked)(long n);
  /* The following three are called from the main thread only. */
  void (*submit_probe)(bench_probe_t *p);
  void (*submit_gate)(sync_gate_t *g);
  void (*submit_count)(sync_latch_t *l);
  /* Reap finished work the pool hands back to the main thread. */
  void (*drain)(void);
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

static void ct_submit_or_die(ct_task_fn fn, void *arg, ct_task_t **out) {
  int rc = ct_background_task(ct_sup, fn, arg, NULL, out);
  if (rc != 0) {
    fprintf(stderr, "ct_background_task: %s\n", ct_strerror(rc));
    exit(1);
  }
}

static int ct_open(void) {
  ct_supervisor_opts_t opts = CT_SUPERVISOR_OPTS_INIT;
  opts.pool_size = POOL_THREADS;
  opts.min_threads = POOL_THREADS;
  opts.idle_spin = (double)bench_env_long("CT_BENCH_SPIN_US", 0) * 1e-6;
  int rc = ct_supervisor_new(&opts, &ct_sup);
  return rc != 0 ? rc : ct_supervisor_start(ct_sup);
}

static void ct_close(void) {
  ct_supervisor_stop(ct_sup, CT_STOP_DRAIN, -1);
  ct_supervisor_free(ct_sup);
}

static void ct_produce_ff(long n, sync_latch_t *done) {
  for (long i = 0; i < n; i++)
    ct_submit_or_die(ct_count_fn, done, NULL);
}

static void ct_produce_tracked(long n) {
  ct_task_t *batch[BATCH];
  for (long left = n; left > 0;) {
    size_t k = left < BATCH ? (size_t)left : BATCH;
    for (size_t i = 0; i < k; i++)
      ct_submit_or_die(ct_empty_fn, NULL, &batch[i]);
    ct_wait_completed(batch, k, -1);
    for (size_t i = 0; i < k; i++)
      ct_task_unref(batch[i]);
    left -= (long)k;
  }
}

static void ct_submit_probe(bench_probe_t *p) { ct_submit_or_die(ct_probe_fn, p, NULL); }
static void ct_submit_gate(sync_gate_t *g) { ct_submit_or_die(ct_gate_fn, g, NULL); }
static void ct_submit_count(sync_latch_t *l) { ct_submit_or_die(ct_count_fn, l, NULL); }
static void no_drain(void) {}

static const backend_t ctasker_backend = {
    "ctasker",         ct_open,        ct_close,       ct_produce_ff,   ct_produce_tracked,
    ct_submit_probe,   ct_submit_gate, ct_submit_count, no_drain};

/* -- GLib GThreadPool -- */

/* One pool serves every kind of job, so that gate tasks really hold its two
 * threads. A job is a pointer to a latch, job, probe or gate with its kind
 * in the two low bits (all are at least 8-byte aligned): no allocation. */
typedef enum { G_COUNT, G_TRACKED, G_PROBE, G_GATE } glib_kind_t;

typedef struct glib_tracked_job {
  sync_latch_t *batch;
  atomic_int done;
} glib_tracked_job_t;

static GThreadPool *glib_pool;

static void glib_run(gpointer data, gpointer user) {
  (void)user;
  void *obj = (void *)((uintptr_t)data & ~(uintptr_t)3);
  switch ((glib_kind_t)((uintptr_t)data & 3)) {
  case G_COUNT:
    sync_latch_count(obj);
    break;
  case G_TRACKED: {
    glib_tracked_job_t *job = obj;
    atomic_store_explicit(&job->done, 1, memory_order_release);
    sync_latch_count(job->batch);
    break;
  }
  case G_PROBE:
    bench_probe_hit(obj);
    break;
  case G_GATE:
    sync_gate_pass(obj, -1);
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

static int glib_open(void) {
  GError *err = NULL;
  glib_pool = g_thread_pool_new(glib_run, NULL, POOL_THREADS, TRUE, &err);
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
  glib_tracked_job_t *batch[BATCH];
  for (long left = n; left > 0;) {
    size_t k = left < BATCH ? (size_t)left : BATCH;
    sync_latch_t latch;
    sync_latch_init(&latch, (long)k);
    for (size_t i = 0; i < k; i++) {
      batch[i] = malloc(sizeof *batch[i]);
      if (!batch[i])
        abort();
      batch[i]->batch = &latch;
      atomic_init(&batch[i]->done, 0);
      glib_push_or_die(G_TRACKED, batch[i]);
    }
    sync_latch_wait(&latch, -1);
    for (size_t i = 0; i < k; i++)
      free(batch[i]);
    sync_latch_destroy(&latch);
    left -= (long)k;
  }
}

static void glib_submit_probe(bench_probe_t *p) { glib_push_or_die(G_PROBE, p); }
static void glib_submit_gate(sync_gate_t *g) { glib_push_or_die(G_GATE, g); }
static void glib_submit_count(sync_latch_t *l) { glib_push_or_die(G_COUNT, l); }

static const backend_t glib_backend = {
    "GThreadPool",      glib_open,        glib_close,        glib_produce_ff, glib_produce_tracked,
    glib_submit_probe,  glib_submit_gate, glib_submit_count, no_drain};

/* -- libuv uv_queue_work -- */

static uv_loop_t luv_main_loop; /* the main thread's loop: probes, gates, heap */

static void luv_count_work(uv_work_t *req) { sync_latch_count(req->data); }
static void luv_probe_work(uv_work_t *req) { bench_probe_hit(req->data); }
static void luv_gate_work(uv_work_t *req) { sync_gate_pass(req->data, -1); }
static void luv_empty_work(uv_work_t *req) { (void)req; }

static void luv_free_after(uv_work_t *req, int status) {
  (void)status;
  free(req);
}

static void luv_tracked_after(uv_work_t *req, int status) {
  (void)status;
  long *completed = req->loop->data;
  (*completed)++;
  free(req);
}

static void luv_queue_or_die(uv_loop_t *loop, uv_work_cb work, uv_after_work_cb after,
                            void *data) {
  uv_work_t *req = malloc(sizeof *req);
  int rc = UV_ENOMEM;
  if (req) {
    req->data = data;
    rc = uv_queue_work(loop, req, work, after);
  }
  if (rc != 0) {
    fprintf(stderr, "uv_queue_work: %s\n", uv_strerror(rc));
    exit(1);
  }
}

static int luv_open(void) { return uv_loop_init(&luv_main_loop); }
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
  uv_loop_init(&loop);
  loop.data = &completed;
  for (long left = n; left > 0;) {
    long k = left < BATCH ? left : BATCH;
    for (long i = 0; i < k; i++)
      luv_queue_or_die(&loop, luv_empty_work, luv_tracked_after, NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once every after-work has run */
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
static void luv_drain(void) { uv_run(&luv_main_loop, UV_RUN_DEFAULT); }

static const backend_t luv_backend = {
    "libuv",          luv_open,        luv_close,        luv_produce_ff, luv_produce_tracked,
    luv_submit_probe,  luv_submit_gate, luv_submit_count, luv_drain};

enum { B_CT, B_GLIB, B_UV, NBACKENDS };
static const backend_t *const backends[NBACKENDS] = {&ctasker_backend, &glib_backend,
                                                     &luv_backend};

/* ---- settings ----------------------------------------------------------- */

static struct {
  long reps, tasks, producers, samples, max_tasks, peer_seconds;
} cfg;

static void read_settings(void) {
  cfg.reps = bench_env_long("CT_BENCH_REPS", 5);
  cfg.tasks = bench_env_long("CT_BENCH_TASKS", 200000);
  cfg.producers = bench_env_long("CT_BENCH_PRODUCERS", 4);
  cfg.samples = bench_env_long("CT_BENCH_SAMPLES", 1000);
  cfg.max_tasks = bench_env_long("CT_BENCH_MAX_TASKS", 10000000);
  cfg.peer_seconds = bench_env_long("CT_BENCH_PEER_SECONDS", 3);
}

/* ---- throughput: P producer threads, started together -------------------- */

typedef struct producer {
  pthread_t thread;
  const backend_t *b;
  bool tracked;
  long n;
  sync_latch_t *done;
  pthread_barrier_t *start;
} producer_t;

static void *producer_main(void *arg) {
  producer_t *p = arg;
  pthread_barrier_wait(p->start);
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
  /* The clock starts before the producers can: a main thread descheduled
   * just after the barrier must not miss the start of a short run. */
  uint64_t t0 = bench_now_ns();
  pthread_barrier_wait(&start);
  sync_latch_wait(&done, -1);
  for (int i = 0; i < producers; i++)
    pthread_join(ps[i].thread, NULL);
  uint64_t t1 = bench_now_ns();
  pthread_barrier_destroy(&start);
  sync_latch_destroy(&done);
  return (double)(t1 - t0) / 1e9;
}

/* ---- latency ------------------------------------------------------------- */

typedef struct quantiles {
  double p50, p99, p999; /* microseconds */
} quantiles_t;

static quantiles_t run_latency(const backend_t *b, long samples, bool idle) {
  bench_probe_t *probes = calloc((size_t)samples, sizeof *probes);
  uint64_t *lat = malloc((size_t)samples * sizeof *lat);
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

/* ---- heap bytes per queued task ------------------------------------------ */

static double run_heap_per_task(const backend_t *b, long n) {
  sync_gate_t gate;
  sync_latch_t done;
  sync_gate_init(&gate);
  sync_latch_init(&done, n);
  for (int i = 0; i < POOL_THREADS; i++)
    b->submit_gate(&gate);
  sync_gate_wait_arrived(&gate, POOL_THREADS, -1);
  size_t before = bench_heap_in_use();
  for (long i = 0; i < n; i++)
    b->submit_count(&done);
  size_t after = bench_heap_in_use();
  sync_gate_open(&gate);
  sync_latch_wait(&done, -1);
  b->drain();
  sync_latch_destroy(&done);
  sync_gate_destroy(&gate);
  return ((double)after - (double)before) / (double)n;
}

/* ---- results: the median of each figure over the repetitions --------------- */

typedef struct figure {
  const char *label;
  const char *unit;
  bool higher_is_better;
  double value[NBACKENDS]; /* median; NAN: not measured */
} figure_t;

#define MAX_FIGURES 32
static figure_t figures[MAX_FIGURES];
static int nfigures;

static figure_t *add_figure(const char *label, const char *unit, bool higher_is_better) {
  figure_t *f = &figures[nfigures++];
  f->label = label;
  f->unit = unit;
  f->higher_is_better = higher_is_better;
  for (int b = 0; b < NBACKENDS; b++)
    f->value[b] = NAN;
  return f;
}

static void print_ratio(double ct, double peer) {
  if (isnan(ct) || isnan(peer) || peer == 0)
    printf(" %9s", "-");
  else
    printf(" %8.2fx", ct / peer);
}

static void print_table(void) {
  printf("\n%-34s %-9s %11s %11s %11s %10s %10s\n", "figure (median)", "unit", "ctasker",
         "GThreadPool", "libuv", "ct/GLib", "ct/uv");
  for (int i = 0; i < nfigures; i++) {
    figure_t *f = &figures[i];
    printf("%-34s %-9s", f->label, f->unit);
    for (int b = 0; b < NBACKENDS; b++)
      isnan(f->value[b]) ? printf(" %11s", "-") : printf(" %11.3f", f->value[b]);
    print_ratio(f->value[B_CT], f->value[B_GLIB]);
    print_ratio(f->value[B_CT], f->value[B_UV]);
    printf("   (%s)\n", f->higher_is_better ? "higher is better" : "lower is better");
  }
}

/* ---- the measurements ------------------------------------------------------ */

/* CPU seconds of the whole process: every pool's threads, the producers and
 * the waiter. The pools not under test sleep meanwhile, so the difference
 * over a run is what that run cost. */
static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Throughput in millions of tasks per second, median over cfg.reps runs,
 * the pools taking turns within each repetition; and, as the figure
 * `cpu_label`, the CPU time a task cost (submission and execution). */
static figure_t *measure_throughput(const char *label, const char *cpu_label, int producers,
                                    bool tracked) {
  figure_t *f = add_figure(label, "Mtask/s", true);
  figure_t *cpu = add_figure(cpu_label, "ns/task", false);
  double runs[NBACKENDS][cfg.reps], cpu_runs[NBACKENDS][cfg.reps];
  for (long r = 0; r < cfg.reps; r++)
    for (int b = 0; b < NBACKENDS; b++) {
      double c0 = cpu_seconds();
      runs[b][r] = cfg.tasks / run_throughput(backends[b], cfg.tasks, producers, tracked) / 1e6;
      cpu_runs[b][r] = (cpu_seconds() - c0) * 1e9 / (double)cfg.tasks;
    }
  for (int b = 0; b < NBACKENDS; b++) {
    f->value[b] = bench_median(runs[b], (size_t)cfg.reps);
    cpu->value[b] = bench_median(cpu_runs[b], (size_t)cfg.reps);
  }
  return f;
}

/* Latency quantiles, each the median over the repetitions. */
static void measure_latency(bool idle, figure_t *out[3]) {
  long reps = cfg.reps > 3 ? 3 : cfg.reps; /* idle runs are slow: pauses */
  static const char *labels[2][3] = {
      {"latency warm p50", "latency warm p99", "latency warm p999"},
      {"latency idle p50", "latency idle p99", "latency idle p999"}};
  double q[3][NBACKENDS][reps];
  for (long r = 0; r < reps; r++)
    for (int b = 0; b < NBACKENDS; b++) {
      quantiles_t v = run_latency(backends[b], cfg.samples, idle);
      q[0][b][r] = v.p50;
      q[1][b][r] = v.p99;
      q[2][b][r] = v.p999;
    }
  for (int i = 0; i < 3; i++) {
    out[i] = add_figure(labels[idle][i], "us", false);
    for (int b = 0; b < NBACKENDS; b++)
      out[i]->value[b] = bench_median(q[i][b], (size_t)reps);
  }
}

/* Nanoseconds per fire-and-forget task for n = 10^3, 10^4, ... up to
 * cfg.max_tasks. Large sizes are repeated fewer times; a peer skips a size
 * whose projected run time exceeds cfg.peer_seconds. */
#define MAX_SIZES 12
static int measure_scaling(long sizes[MAX_SIZES], figure_t *out[MAX_SIZES]) {
  static char labels[MAX_SIZES][40];
  double last_ns[NBACKENDS] = {0};
  int nsizes = 0;
  for (long n = 1000; n <= cfg.max_tasks && nsizes < MAX_SIZES; n *= 10, nsizes++) {
    long reps = n >= 10000000 ? 3 : n >= 1000000 ? 3 : cfg.reps;
    reps = reps > cfg.reps ? cfg.reps : reps;
    snprintf(labels[nsizes], sizeof labels[nsizes], "per-task cost, %.0e tasks", (double)n);
    figure_t *f = out[nsizes] = add_figure(labels[nsizes], "ns/task", false);
    sizes[nsizes] = n;
    double runs[NBACKENDS][reps];
    bool skip[NBACKENDS];
    for (int b = 0; b < NBACKENDS; b++)
      skip[b] = b != B_CT && last_ns[b] * 1e-9 * (double)n * (double)reps > (double)cfg.peer_seconds;
    for (long r = 0; r < reps; r++)
      for (int b = 0; b < NBACKENDS; b++)
        if (!skip[b])
          runs[b][r] = run_throughput(backends[b], n, 1, false) * 1e9 / (double)n;
    for (int b = 0; b < NBACKENDS; b++)
      if (!skip[b])
        last_ns[b] = f->value[b] = bench_median(runs[b], (size_t)reps);
      else
        last_ns[b] = INFINITY;
  }
  return nsizes;
}

/* One run per pool, before anything else has run: GLib keeps the list
 * nodes it frees in its own slice cache, so only its first run shows the
 * heap it needs; for the others a repeat gives the same figure. */
static figure_t *measure_heap(void) {
  figure_t *f = add_figure("heap per queued f&f task", "bytes", false);
  for (int b = 0; b < NBACKENDS; b++)
    f->value[b] = run_heap_per_task(backends[b], HEAP_TASKS);
  return f;
}

/* ---- verdicts against the targets of the issue ----------------------------- */

static void verdict(bool reached, const char *target, const char *fmt, double a, double b) {
  printf("  [%s] %s: ", reached ? "reached" : "NOT reached", target);
  printf(fmt, a, b);
  printf("\n");
}

static double ratio(const figure_t *f, int peer) { return f->value[B_CT] / f->value[peer]; }

static double min2(double a, double b) { return isnan(a) ? b : isnan(b) ? a : a < b ? a : b; }

static void warm_up(void) {
  for (int b = 0; b < NBACKENDS; b++) {
    run_throughput(backends[b], cfg.tasks / 4 + 1, 1, false);
    run_throughput(backends[b], cfg.tasks / 4 + 1, 1, true);
  }
}

/* `bench-pool profile [TASKS [PRODUCERS]]`: only ctasker's fire-and-forget
 * path, for perf, callgrind or strace; prints its throughput. */
static int profile_ctasker(int argc, char **argv) {
  long n = argc > 2 ? atol(argv[2]) : 2000000;
  int producers = argc > 3 ? atoi(argv[3]) : 1;
  if (n < 1 || producers < 1 || ct_open() != 0)
    return 2;
  double s = run_throughput(&ctasker_backend, n, producers, false);
  printf("ctasker fire-and-forget: %ld tasks, %d producer(s): %.3f Mtask/s\n", n, producers,
         n / s / 1e6);
  ct_close();
  return 0;
}

/* Every figure a verdict needs. */
typedef struct results {
  figure_t *heap, *ff1, *ffp, *tr1, *trp, *idle[3], *warm[3];
  figure_t *cost[MAX_SIZES];
  long sizes[MAX_SIZES];
  int nsizes;
} results_t;

static void measure_all(results_t *r) {
  static char ff_many[64], tr_many[64], ff_many_cpu[64], tr_many_cpu[64];
  snprintf(ff_many, sizeof ff_many, "fire-and-forget, %ld producers", cfg.producers);
  snprintf(tr_many, sizeof tr_many, "tracked, %ld producers", cfg.producers);
  snprintf(ff_many_cpu, sizeof ff_many_cpu, "CPU, fire-and-forget, %ld producers", cfg.producers);
  snprintf(tr_many_cpu, sizeof tr_many_cpu, "CPU, tracked, %ld producers", cfg.producers);
  r->heap = measure_heap();
  warm_up();
  r->ff1 = measure_throughput("fire-and-forget, 1 producer", "CPU, fire-and-forget, 1 producer", 1,
                              false);
  r->ffp = measure_throughput(ff_many, ff_many_cpu, (int)cfg.producers, false);
  r->tr1 = measure_throughput("tracked, 1 producer", "CPU, tracked, 1 producer", 1, true);
  r->trp = measure_throughput(tr_many, tr_many_cpu, (int)cfg.producers, true);
  measure_latency(true, r->idle);
  measure_latency(false, r->warm);
  r->nsizes = measure_scaling(r->sizes, r->cost);
}

static void print_flat_cost_verdict(const results_t *r) {
  if (r->nsizes < 2) {
    printf("  [not measured] flat per-task cost: set CT_BENCH_MAX_TASKS >= 10000\n");
    return;
  }
  const figure_t *from = r->cost[1], *to = r->cost[r->nsizes - 1];
  long top = r->sizes[r->nsizes - 1];
  double growth = to->value[B_CT] / from->value[B_CT];
  bool reached = growth <= 1.5 && top >= 10000000;
  printf("  [%s] flat per-task cost (<= 1.5x) from 1e4 to 1e7: %.2fx from 1e4 to %.0e"
         " (%.1f -> %.1f ns/task)\n",
         reached ? "reached" : "NOT reached", growth, (double)top, from->value[B_CT],
         to->value[B_CT]);
}

static void print_verdicts(const results_t *r) {
  printf("\nTargets (issue 2):\n");
  const char *worst = "worst of 1 and N producers %.2fx (1 producer %.2fx)";
  double ff_glib = min2(ratio(r->ff1, B_GLIB), ratio(r->ffp, B_GLIB));
  double ff_uv = min2(ratio(r->ff1, B_UV), ratio(r->ffp, B_UV));
  double tr_glib = min2(ratio(r->tr1, B_GLIB), ratio(r->trp, B_GLIB));
  verdict(ff_glib >= 4, "fire-and-forget >= 4x GThreadPool", worst, ff_glib, ratio(r->ff1, B_GLIB));
  verdict(ff_uv >= 2, "fire-and-forget >= 2x libuv", worst, ff_uv, ratio(r->ff1, B_UV));
  verdict(tr_glib >= 2, "tracked >= 2x GThreadPool", worst, tr_glib, ratio(r->tr1, B_GLIB));
  double best_peer_p99 = min2(r->idle[1]->value[B_GLIB], r->idle[1]->value[B_UV]);
  verdict(r->idle[1]->value[B_CT] <= best_peer_p99, "idle p99 no worse than the best peer",
          "%.1f us vs %.1f us", r->idle[1]->value[B_CT], best_peer_p99);
  verdict(r->warm[0]->value[B_CT] <= 1.0, "warm p50 <= 1 us", "%.3f us (limit %.0f us)",
          r->warm[0]->value[B_CT], 1.0);
  print_flat_cost_verdict(r);
  verdict(r->heap->value[B_CT] <= 128, "<= 128 heap bytes per queued f&f task",
          "%.1f bytes (limit %.0f)", r->heap->value[B_CT], 128);
  printf("(one run on a shared machine: figures and verdicts are indicative)\n");
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "profile") == 0)
    return profile_ctasker(argc, argv);
  setenv("UV_THREADPOOL_SIZE", "2", 1); /* before the first libuv call */
  read_settings();
  printf("ctasker vs GThreadPool (max_threads 2, exclusive) vs libuv (UV_THREADPOOL_SIZE=2)\n");
  printf("reps %ld, tasks/run %ld, producers %ld, latency samples %ld, max tasks %ld\n",
         cfg.reps, cfg.tasks, cfg.producers, cfg.samples, cfg.max_tasks);
  fflush(stdout);
  for (int b = 0; b < NBACKENDS; b++)
    if (backends[b]->open() != 0) {
      fprintf(stderr, "could not start %s\n", backends[b]->name);
      return 1;
    }
  results_t r;
  measure_all(&r);
  print_table();
  print_verdicts(&r);
  for (int b = 0; b < NBACKENDS; b++)
    backends[b]->close();
  return 0;
}
