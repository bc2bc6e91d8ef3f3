/* Interval worker precision and queue worker throughput.
 *
 * Usage: bench-interval [seconds [period_ms]]   (default 60 s at 10 ms)
 * One busy thread keeps the other core occupied meanwhile. First a plain
 * clock_nanosleep loop on the same grid shows the floor this machine
 * allows; then the interval worker. For each: the lateness of each run
 * against its grid point (mean, p99, max), the grid points passed over
 * after a late run, and the grid error (the last due time's distance from
 * t0 + k * period: cumulative drift). Then the items/s of a queue
 * worker making empty runs, next to one-off empty tasks on the pool.
 */
#include <ctasker.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
  double *late, first_due, last_due;
  size_t n, cap;
} lateness_t;

static int measure(ct_worker_run_t *run) {
  double now = ct_now();
  lateness_t *l = run->data;
  if (l->n == 0)
    l->first_due = run->scheduled;
  l->last_due = run->scheduled;
  if (l->n < l->cap)
    l->late[l->n++] = now - run->scheduled;
  return l->n < l->cap ? CT_WORKER_CONTINUE : CT_WORKER_STOP;
}

static atomic_bool spinning = true;
static void *spin(void *arg) {
  (void)arg;
  volatile unsigned long x = 0;
  while (atomic_load_explicit(&spinning, memory_order_relaxed))
    x++;
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  double mean, p99, max; /* lateness, seconds */
  long skipped;          /* grid points passed over after a late run */
  double grid_error;     /* how far the last due time is off the grid */
} timing_t;

static timing_t summarize(lateness_t *l, double period) {
  timing_t t = {0};
  double sum = 0;
  for (size_t i = 0; i < l->n; i++)
    sum += l->late[i];
  qsort(l->late, l->n, sizeof *l->late, cmp);
  t.mean = sum / (double)l->n;
  t.p99 = l->late[(size_t)(0.99 * (double)(l->n - 1))];
  t.max = l->late[l->n - 1];
  double points = (l->last_due - l->first_due) / period;
  t.skipped = lround(points) - (long)(l->n - 1);
  t.grid_error = fabs(points - round(points)) * period;
  return t;
}

static timing_t time_worker(double seconds, double period) {
  lateness_t l = {0};
  l.cap = (size_t)(seconds / period);
  l.late = calloc(l.cap, sizeof *l.late);
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.interval = period;
  o.data = &l;
  ct_worker_t *w;
  if (ct_worker_new(NULL, CT_WORKER_INTERVAL, measure, &o, &w) != 0 || ct_worker_start(w, NULL))
    exit(1);
  while (ct_worker_state(w) != CT_WORKER_STOPPED) {
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL);
  }
  ct_worker_free(w);
  timing_t t = summarize(&l, period);
  free(l.late);
  return t;
}

/* The floor this machine allows: one thread sleeping with clock_nanosleep
 * to absolute grid points, passing over points it is already late for, as
 * the interval worker does. */
static timing_t time_sleep_loop(double seconds, double period) {
  lateness_t l = {0};
  l.cap = (size_t)(seconds / period);
  l.late = calloc(l.cap, sizeof *l.late);
  double t0 = ct_now() + period;
  for (long k = 0; l.n < l.cap; k++) {
    double due = t0 + (double)k * period;
    struct timespec ts = {(time_t)due, (long)((due - floor(due)) * 1e9)};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    double now = ct_now();
    if (l.n == 0)
      l.first_due = due;
    l.last_due = due;
    l.late[l.n++] = now - due;
    while (t0 + (double)(k + 1) * period < now - period)
      k++; /* pass over the points already gone */
  }
  timing_t t = summarize(&l, period);
  free(l.late);
  return t;
}

static void print_timing(const char *who, timing_t t) {
  printf("  %-22s mean %9.1f us  p99 %9.1f us  max %9.1f us  skipped %ld  grid error %.3f us\n",
         who, t.mean * 1e6, t.p99 * 1e6, t.max * 1e6, t.skipped, t.grid_error * 1e6);
}

static void bench_interval(double seconds, double period) {
  timing_t floor_t = time_sleep_loop(seconds, period);
  timing_t worker_t = time_worker(seconds, period);
  printf("interval %.0f ms for %.0f s each, the other core busy:\n", period * 1e3, seconds);
  print_timing("clock_nanosleep loop", floor_t);
  print_timing("ctasker interval", worker_t);
  printf("  ratio worker/loop: mean %.2fx, p99 %.2fx\n", worker_t.mean / floor_t.mean,
         worker_t.p99 / floor_t.p99);
}

static atomic_long queue_runs;
static int empty_run(ct_worker_run_t *run) {
  (void)run;
  atomic_fetch_add_explicit(&queue_runs, 1, memory_order_relaxed);
  return CT_WORKER_CONTINUE;
}
static json_t *empty_task(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

static void bench_queue(long items) {
  ct_worker_t *w;
  if (ct_worker_new(NULL, CT_WORKER_QUEUE, empty_run, NULL, &w) != 0 || ct_worker_start(w, NULL))
    exit(1);
  double t0 = ct_now();
  for (long i = 0; i < items; i++)
    while (ct_queue_worker_put(w, NULL, CT_PRIORITY_NORMAL) != 0)
      ;
  ct_worker_stop(w, CT_WORKER_DRAIN, -1);
  double queue_rate = (double)items / (ct_now() - t0);
  ct_worker_free(w);
  t0 = ct_now();
  for (long i = 0; i < items; i++)
    ct_background_task(NULL, empty_task, NULL, NULL, NULL);
  ct_default_stop(CT_STOP_DRAIN, -1);
  double pool_rate = (double)items / (ct_now() - t0);
  printf("queue worker: %.0f items/s; one-off pool tasks: %.0f tasks/s (ratio %.2f)\n",
         queue_rate, pool_rate, queue_rate / pool_rate);
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 60;
  double period = argc > 2 ? atof(argv[2]) / 1e3 : 0.010;
  if (ct_default_start(NULL) != 0)
    return 1;
  pthread_t busy;
  pthread_create(&busy, NULL, spin, NULL);
  bench_interval(seconds, period);
  atomic_store(&spinning, false);
  pthread_join(busy, NULL);
  bench_queue(1000000);
  return 0;
}
