/* Interval worker precision and queue worker throughput.
 *
 * Usage: bench-interval [seconds [period_ms]]   (default 60 s at 10 ms)
 * One busy thread keeps the other core occupied meanwhile. Reports the
 * lateness of each run against its grid point (mean, p99, max) and the
 * cumulative drift: the last run's grid point against t0 + n * period.
 * Targets: mean <= 150 us, p99 <= 500 us, drift 0. Then the items/s of a
 * queue worker making empty runs, next to one-off empty tasks on the pool.
 */
#include <ctasker.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

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

static void bench_interval(double seconds, double period) {
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
  double sum = 0;
  for (size_t i = 0; i < l.n; i++)
    sum += l.late[i];
  qsort(l.late, l.n, sizeof *l.late, cmp);
  double drift = l.last_due - (l.first_due + (double)(l.n - 1) * period);
  printf("interval %.0f ms x %zu runs: lateness mean %.1f us, p99 %.1f us, max %.1f us; "
         "drift %.3f us\n",
         period * 1e3, l.n, sum / (double)l.n * 1e6, l.late[(size_t)(0.99 * (double)(l.n - 1))] * 1e6,
         l.late[l.n - 1] * 1e6, drift * 1e6);
  ct_worker_free(w);
  free(l.late);
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
