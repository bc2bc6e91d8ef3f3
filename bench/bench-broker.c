/* Redis-mode benchmark: ctasker's broker end to end against Celery and RQ,
 * in the same run, on the same redis-server.
 *
 * The bench starts one redis-server of its own on a Unix socket in a
 * temporary folder (tests/broker/redis.h, as the tests do) and runs, in
 * rounds (ctasker, Celery, RQ, ctasker, ...), the same empty task:
 *
 *   end to end  PRODUCERS threads of a producer process submit TASKS tasks;
 *     the time runs from the first submission until every result is
 *     stored. A worker in another process runs them. For ctasker that is
 *     this program started again as `bench-broker --worker URL C` (a
 *     supervisor with C pool threads, ct_broker_worker_start() with
 *     concurrency C), done when the stream is empty (an entry is deleted
 *     only after its result is stored); the bench polls XLEN on its own
 *     connection every 2 ms. The peers are bench/peer_celery.py and
 *     bench/peer_rq.py (see their comments), done when their result store
 *     holds every result;
 *   CPU  Redis's own (INFO cpu, user + system, over the timed part), the
 *     producer process's (getrusage) and the worker process's
 *     (/proc/PID/stat), each per task: they hold still on a shared
 *     machine where tasks/s do not;
 *   RPC  RPC_CALLS calls one at a time (ctasker: ct_broker_call()), the
 *     round trip's p50 and p99;
 *   where ctasker's time goes  INFO commandstats over the timed part (reset
 *     before it): Redis commands per task and the microseconds each took
 *     inside Redis (commands a script calls are counted too; the bench's
 *     own XLEN polls are left out).
 *
 * A peer whose Python library is missing is reported as missing, with the
 * package to install; the bench goes on without it. Each peer is run with
 * the first of `python3` and /usr/bin/python3 that can import it.
 *
 * Usage: bench-broker [--quick] [--json]. Settings (environment):
 * CT_BENCH_BROKER_TASKS (20000), CT_BENCH_PEER_TASKS (2000: the peers are
 * much slower), CT_BENCH_BROKER_PRODUCERS (4), CT_BENCH_BROKER_BATCH (1:
 * ctasker's producers submit one task per call, ct_broker_submit(); N > 1:
 * N per call, ct_broker_submit_many(); the peers always submit one at a
 * time), CT_BENCH_BROKER_CONCURRENCY (8), CT_BENCH_RPC_CALLS (1000), CT_BENCH_ROUNDS (3), CT_BENCH_SCRIPTS
 * (the folder of the peer scripts; default: this source folder).
 */
#include <ctasker.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>

#include "bench.h"
#include "broker/redis.h"

#define QUEUE "bench"
#define STREAM_KEY "ctasker:{" QUEUE "}:stream:normal"
#define MAX_ROUNDS 16
#define MAX_CMDS 48

enum { P_CT, P_CELERY, P_RQ, NPEERS };
static const char *const peer_names[NPEERS] = {"ctasker", "Celery", "RQ"};
static const char *const peer_scripts[NPEERS] = {NULL, "peer_celery.py", "peer_rq.py"};
static const char *const peer_modules[NPEERS] = {NULL, "celery, redis", "rq, redis"};
static const char *const peer_packages[NPEERS] = {NULL, "python3-celery python3-redis",
                                                  "python3-rq python3-redis"};

/* The figures of one peer in one round. */
enum { F_RATE, F_REDIS, F_PRODUCER, F_WORKER, F_RPC50, F_RPC99, NFIELDS };
static const char *const field_names[NFIELDS] = {
    "tasks_per_s", "redis_cpu_us_per_task", "producer_cpu_us_per_task", "worker_cpu_us_per_task",
    "rpc_p50_us", "rpc_p99_us"};

static struct {
  bool quick, json;
  long tasks, peer_tasks, producers, batch, concurrency, rpc_calls, rounds;
  const char *scripts;
} cfg;

static struct {
  double v[NPEERS][MAX_ROUNDS][NFIELDS];
  double load[MAX_ROUNDS];
  char python[NPEERS][64]; /* the interpreter that runs the peer; "" if missing */
  char missing[NPEERS][256];
  char version[NPEERS][32];
  char note[NPEERS][160];
  long completed[NPEERS], submitted[NPEERS];
  /* ctasker's commandstats, summed over the rounds */
  char cmd[MAX_CMDS][32];
  double cmd_calls[MAX_CMDS], cmd_usec[MAX_CMDS];
  int ncmds;
} res;

static test_redis_t redis;

/* ---- the ctasker worker process --------------------------------------------- */

static json_t *empty_handler(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self, (void)kwargs, (void)data;
  return NULL;
}

static void die_rc(const char *what, int rc) {
  if (rc != 0) {
    fprintf(stderr, "bench-broker: %s: %s\n", what, ct_strerror(rc));
    exit(1);
  }
}

static ct_supervisor_t *start_supervisor(int threads) {
  ct_supervisor_t *sup;
  ct_supervisor_opts_t opts = CT_SUPERVISOR_OPTS_INIT;
  opts.pool_size = threads;
  die_rc("ct_supervisor_new", ct_supervisor_new(&opts, &sup));
  die_rc("ct_supervisor_start", ct_supervisor_start(sup));
  return sup;
}

static ct_broker_t *open_broker(ct_supervisor_t *sup, const char *url) {
  ct_broker_t *b;
  ct_broker_opts_t opts = CT_BROKER_OPTS_INIT;
  opts.url = url;
  opts.queue = QUEUE;
  opts.command_timeout = 30;
  die_rc("ct_broker_new", ct_broker_new(sup, &opts, &b));
  return b;
}

/* `bench-broker --worker URL CONCURRENCY`: serve "empty" until stdin closes. */
static int worker_main(const char *url, int concurrency) {
  ct_supervisor_t *sup = start_supervisor(concurrency);
  ct_broker_t *b = open_broker(sup, url);
  ct_broker_worker_opts_t wopts = CT_BROKER_WORKER_OPTS_INIT;
  wopts.concurrency = concurrency;
  die_rc("ct_broker_register", ct_broker_register(b, "empty", empty_handler, NULL));
  die_rc("ct_broker_worker_start", ct_broker_worker_start(b, &wopts));
  printf("ready\n");
  fflush(stdout);
  char buf[64];
  while (read(0, buf, sizeof buf) > 0)
    ;
  ct_broker_free(b); /* stops the worker and waits */
  ct_supervisor_stop(sup, CT_STOP_DRAIN, -1);
  ct_supervisor_free(sup);
  return 0;
}

typedef struct worker_proc {
  pid_t pid;
  int to_child; /* closing it ends the worker */
} worker_proc_t;

static worker_proc_t spawn_worker(void) {
  int in[2], out[2];
  char exe[256], conc[16];
  ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
  CHECK(k > 0 && pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0); /* dup2 clears it for the child */
  exe[k] = '\0';
  snprintf(conc, sizeof conc, "%ld", cfg.concurrency);
  fflush(stdout);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]), close(out[0]);
    execl(exe, exe, "--worker", redis.url, conc, (char *)NULL);
    _exit(127);
  }
  close(in[0]), close(out[1]);
  char line[16] = "";
  FILE *f = fdopen(out[0], "r");
  if (!f || !fgets(line, sizeof line, f) || strcmp(line, "ready\n") != 0) {
    fprintf(stderr, "bench-broker: the ctasker worker did not start\n");
    exit(1);
  }
  fclose(f);
  return (worker_proc_t){pid, in[1]};
}

/* End the worker; false (said on stderr) if it did not end cleanly. */
static bool stop_worker(worker_proc_t *w) {
  int status = 0;
  close(w->to_child);
  waitpid(w->pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return true;
  fprintf(stderr, "bench-broker: the ctasker worker ended with status %d\n", status);
  return false;
}

/* ---- readings ---------------------------------------------------------------- */

/* CPU seconds (user + system) of process pid so far. */
static double proc_cpu_s(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0)
    close(fd);
  if (n <= 0)
    return NAN;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  unsigned long ut = 0, st = 0;
  /* after the name: state ppid pgrp session tty tpgid flags minflt cminflt
   * majflt cmajflt utime stime */
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return NAN;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A field of an INFO section, as a number. */
static double info_field(const char *info, const char *name) {
  char key[64];
  snprintf(key, sizeof key, "\n%s:", name);
  const char *p = strstr(info, key);
  return p ? strtod(p + strlen(key), NULL) : NAN;
}

static double redis_cpu_s(void) {
  redisReply *r = test_redis(&redis, "INFO cpu");
  double v = info_field(r->str, "used_cpu_user") + info_field(r->str, "used_cpu_sys");
  freeReplyObject(r);
  return v;
}

/* Add INFO commandstats (since the last CONFIG RESETSTAT) to res.cmd*. */
static void add_commandstats(void) {
  redisReply *r = test_redis(&redis, "INFO commandstats");
  for (const char *p = r->str; (p = strstr(p, "cmdstat_")) != NULL; p++) {
    char name[32];
    double calls, usec;
    if (sscanf(p, "cmdstat_%31[^:]:calls=%lf,usec=%lf", name, &calls, &usec) != 3)
      continue;
    if (strcmp(name, "xlen") == 0 || strcmp(name, "info") == 0 || strcmp(name, "config|resetstat") == 0)
      continue; /* the bench's own */
    int i = 0;
    while (i < res.ncmds && strcmp(res.cmd[i], name) != 0)
      i++;
    if (i == MAX_CMDS)
      continue;
    if (i == res.ncmds)
      snprintf(res.cmd[res.ncmds++], sizeof res.cmd[0], "%s", name);
    res.cmd_calls[i] += calls;
    res.cmd_usec[i] += usec;
  }
  freeReplyObject(r);
}

/* Sort res.cmd* by their time per task, largest first. */
static void sort_commandstats(void) {
  for (int i = 1; i < res.ncmds; i++)
    for (int j = i; j > 0 && res.cmd_usec[j] > res.cmd_usec[j - 1]; j--) {
      char name[32];
      double c = res.cmd_calls[j], u = res.cmd_usec[j];
      memcpy(name, res.cmd[j], sizeof name);
      memcpy(res.cmd[j], res.cmd[j - 1], sizeof name);
      memcpy(res.cmd[j - 1], name, sizeof name);
      res.cmd_calls[j] = res.cmd_calls[j - 1], res.cmd_usec[j] = res.cmd_usec[j - 1];
      res.cmd_calls[j - 1] = c, res.cmd_usec[j - 1] = u;
    }
}

static long long stream_length(void) {
  return test_redis_int(&redis, "XLEN %s", STREAM_KEY);
}

/* ---- ctasker's round ---------------------------------------------------------- */

typedef struct producer {
  pthread_t thread;
  ct_broker_t *broker;
  long first, n;
  char (*ids)[CT_BROKER_ID_SIZE];
} producer_t;

static void *producer_main(void *arg) {
  producer_t *p = arg;
  if (cfg.batch <= 1) {
    for (long i = p->first; i < p->first + p->n; i++)
      die_rc("ct_broker_submit", ct_broker_submit(p->broker, "empty", NULL, NULL, p->ids[i]));
    return NULL;
  }
  const char **names = calloc((size_t)cfg.batch, sizeof *names);
  int *rcs = calloc((size_t)cfg.batch, sizeof *rcs);
  CHECK(names && rcs);
  for (long i = 0; i < cfg.batch; i++)
    names[i] = "empty";
  for (long i = p->first, end = p->first + p->n; i < end; i += cfg.batch) {
    long n = end - i < cfg.batch ? end - i : cfg.batch;
    die_rc("ct_broker_submit_many", ct_broker_submit_many(p->broker, (size_t)n, names, NULL,
                                                          NULL, p->ids + i, rcs));
  }
  free(names);
  free(rcs);
  return NULL;
}

/* Submit cfg.tasks from cfg.producers threads; returns the seconds until
 * the stream is empty again, i.e. every result stored. */
static double ct_end_to_end(ct_broker_t *b, char (*ids)[CT_BROKER_ID_SIZE]) {
  producer_t ps[cfg.producers];
  uint64_t t0 = bench_now_ns();
  for (long i = 0, first = 0; i < cfg.producers; i++) {
    long n = cfg.tasks / cfg.producers + (i < cfg.tasks % cfg.producers ? 1 : 0);
    ps[i] = (producer_t){.broker = b, .first = first, .n = n, .ids = ids};
    pthread_create(&ps[i].thread, NULL, producer_main, &ps[i]);
    first += n;
  }
  for (long i = 0; i < cfg.producers; i++)
    pthread_join(ps[i].thread, NULL);
  while (stream_length() > 0) {
    if (bench_now_ns() - t0 > 600 * 1000000000ull) {
      fprintf(stderr, "bench-broker: tasks still queued after 600 s\n");
      exit(1);
    }
    bench_sleep_ns(2000000);
  }
  return (double)(bench_now_ns() - t0) / 1e9;
}

static void rpc_quantiles(uint64_t *ns, long n, double *p50, double *p99) {
  bench_sort_u64(ns, (size_t)n);
  *p50 = n ? (double)bench_quantile(ns, (size_t)n, 0.50) / 1e3 : NAN;
  *p99 = n ? (double)bench_quantile(ns, (size_t)n, 0.99) / 1e3 : NAN;
}

static void ct_round(ct_broker_t *b, pid_t worker, int round) {
  char(*ids)[CT_BROKER_ID_SIZE] = calloc((size_t)cfg.tasks, CT_BROKER_ID_SIZE);
  uint64_t *rpc = calloc((size_t)cfg.rpc_calls, sizeof *rpc);
  double *v = res.v[P_CT][round];
  CHECK(ids && rpc);
  freeReplyObject(test_redis(&redis, "CONFIG RESETSTAT"));
  double r0 = redis_cpu_s(), w0 = proc_cpu_s(worker);
  bench_usage_t u0 = bench_usage();
  double s = ct_end_to_end(b, ids);
  bench_usage_t u1 = bench_usage();
  double r1 = redis_cpu_s(), w1 = proc_cpu_s(worker);
  add_commandstats();
  v[F_RATE] = (double)cfg.tasks / s;
  v[F_REDIS] = (r1 - r0) * 1e6 / (double)cfg.tasks;
  v[F_PRODUCER] = (u1.cpu_s - u0.cpu_s) * 1e6 / (double)cfg.tasks;
  v[F_WORKER] = (w1 - w0) * 1e6 / (double)cfg.tasks;
  /* Outside the timed part: every task ended with its result stored. */
  for (long i = 0; i < cfg.tasks; i++) {
    ct_broker_info_t info;
    if (ct_broker_get(b, ids[i], &info) == 0) {
      res.completed[P_CT] += info.status == CT_BROKER_COMPLETED;
      json_decref(info.result);
    }
  }
  res.submitted[P_CT] += cfg.tasks;
  for (long i = 0; i < cfg.rpc_calls; i++) {
    json_t *result = NULL;
    uint64_t t0 = bench_now_ns();
    die_rc("ct_broker_call", ct_broker_call(b, "empty", NULL, NULL, 10, &result));
    rpc[i] = bench_now_ns() - t0;
    json_decref(result);
  }
  rpc_quantiles(rpc, cfg.rpc_calls, &v[F_RPC50], &v[F_RPC99]);
  free(rpc);
  free(ids);
}

/* ---- the Python peers ----------------------------------------------------------- */

/* Find an interpreter that imports the peer's modules, or say what is missing. */
static void find_python(int peer) {
  static const char *const candidates[] = {"python3", "/usr/bin/python3"};
  for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s -c 'import %s' >/dev/null 2>&1", candidates[i],
             peer_modules[peer]);
    if (system(cmd) == 0) {
      snprintf(res.python[peer], sizeof res.python[peer], "%s", candidates[i]);
      return;
    }
  }
  snprintf(res.missing[peer], sizeof res.missing[peer],
           "no python3 here imports %s (Debian: apt-get install %s)", peer_modules[peer],
           peer_packages[peer]);
}

static double json_num(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static void peer_round(int peer, int round) {
  char cmd[1024];
  double *v = res.v[peer][round];
  for (int f = 0; f < NFIELDS; f++)
    v[f] = NAN;
  if (!res.python[peer][0])
    return;
  snprintf(cmd, sizeof cmd, "%s '%s/%s' '%s' %ld %ld %ld", res.python[peer], cfg.scripts,
           peer_scripts[peer], redis.sock, cfg.peer_tasks, cfg.producers, cfg.rpc_calls);
  fflush(stdout);
  FILE *p = popen(cmd, "r");
  json_error_t err;
  json_t *o = p ? json_loadf(p, 0, &err) : NULL;
  int status = p ? pclose(p) : -1;
  if (!o || status != 0) {
    snprintf(res.missing[peer], sizeof res.missing[peer], "%s failed (exit status %d)%s%s",
             peer_scripts[peer], status, o ? "" : ": ", o ? "" : err.text);
    res.python[peer][0] = '\0';
    json_decref(o);
    return;
  }
  const char *missing = json_string_value(json_object_get(o, "missing"));
  if (missing) {
    snprintf(res.missing[peer], sizeof res.missing[peer], "%s", missing);
    res.python[peer][0] = '\0';
  } else {
    for (int f = 0; f < NFIELDS; f++)
      v[f] = json_num(o, field_names[f]);
    res.completed[peer] += (long)json_num(o, "completed");
    res.submitted[peer] += (long)json_num(o, "tasks");
    snprintf(res.version[peer], sizeof res.version[peer], "%s",
             json_string_value(json_object_get(o, "version")) ?: "");
    snprintf(res.note[peer], sizeof res.note[peer], "%s",
             json_string_value(json_object_get(o, "note")) ?: "");
  }
  json_decref(o);
}

/* ---- output ----------------------------------------------------------------------- */

static double median_of(int peer, int field) {
  double tmp[MAX_ROUNDS];
  size_t k = 0;
  for (int r = 0; r < cfg.rounds; r++)
    if (isfinite(res.v[peer][r][field]))
      tmp[k++] = res.v[peer][r][field];
  return bench_median(tmp, k);
}

/* Median over rounds of ctasker's tasks/s divided by the peer's. */
static double median_ratio(int peer) {
  double tmp[MAX_ROUNDS];
  size_t k = 0;
  for (int r = 0; r < cfg.rounds; r++) {
    double x = res.v[P_CT][r][F_RATE] / res.v[peer][r][F_RATE];
    if (isfinite(x))
      tmp[k++] = x;
  }
  return bench_median(tmp, k);
}

static void print_round(int round) {
  if (cfg.json)
    return;
  printf("  round %d  load %5.2f ", round + 1, res.load[round]);
  for (int p = 0; p < NPEERS; p++)
    isfinite(res.v[p][round][F_RATE]) ? printf("  %s %.0f tasks/s", peer_names[p],
                                               res.v[p][round][F_RATE])
                                      : printf("  %s -", peer_names[p]);
  printf("\n");
  fflush(stdout);
}

static const char *redis_version(void) {
  static char version[32] = "?";
  redisReply *r = test_redis(&redis, "INFO server");
  const char *p = strstr(r->str, "redis_version:");
  if (p)
    sscanf(p, "redis_version:%31[^\r\n]", version);
  freeReplyObject(r);
  return version;
}

static void print_text(double load0, double load1) {
  printf("\nResults (median of %ld rounds; load average %.2f before, %.2f after)\n", cfg.rounds,
         load0, load1);
  printf("%-8s %10s %9s %12s %12s %12s %10s %10s\n", "", "tasks/s", "ct/peer", "Redis us/t",
         "producer us/t", "worker us/t", "RPC p50 us", "RPC p99 us");
  for (int p = 0; p < NPEERS; p++) {
    if (p != P_CT && res.missing[p][0]) {
      printf("%-8s missing: %s\n", peer_names[p], res.missing[p]);
      continue;
    }
    printf("%-8s %10.0f", peer_names[p], median_of(p, F_RATE));
    p == P_CT ? printf(" %9s", "") : printf(" %8.1fx", median_ratio(p));
    for (int f = F_REDIS; f < NFIELDS; f++)
      printf(" %12.1f", median_of(p, f));
    printf("\n");
  }
  for (int p = 0; p < NPEERS; p++)
    if (res.submitted[p])
      printf("%s: %ld of %ld tasks completed with their result stored%s%s%s%s\n", peer_names[p],
             res.completed[p], res.submitted[p], res.version[p][0] ? "; version " : "",
             res.version[p], res.note[p][0] ? "; " : "", res.note[p]);
  printf("\nWhere ctasker's Redis time goes (INFO commandstats over the timed parts; the"
         " commands a script\ncalls are counted both on their own and in the script's time)\n"
         "%-28s %12s %12s %12s\n", "command",
         "calls/task", "us/call", "us/task");
  double total = (double)res.submitted[P_CT];
  for (int i = 0; i < res.ncmds; i++)
    printf("%-28s %12.2f %12.2f %12.2f\n", res.cmd[i], res.cmd_calls[i] / total,
           res.cmd_usec[i] / res.cmd_calls[i], res.cmd_usec[i] / total);
}

static void print_json(double load0, double load1) {
  json_t *o = json_object(), *peers = json_object(), *cmds = json_array();
  for (int p = 0; p < NPEERS; p++) {
    json_t *po = json_object(), *rounds = json_array();
    if (p != P_CT && res.missing[p][0])
      json_object_set_new(po, "missing", json_string(res.missing[p]));
    for (int f = 0; f < NFIELDS; f++) {
      double m = median_of(p, f);
      json_object_set_new(po, field_names[f], isfinite(m) ? json_real(m) : json_null());
    }
    double ratio = p == P_CT ? 1.0 : median_ratio(p);
    json_object_set_new(po, "ct_ratio", isfinite(ratio) ? json_real(ratio) : json_null());
    json_object_set_new(po, "submitted", json_integer(res.submitted[p]));
    json_object_set_new(po, "completed", json_integer(res.completed[p]));
    json_object_set_new(po, "version", json_string(res.version[p]));
    for (int r = 0; r < cfg.rounds; r++) {
      json_t *ro = json_object();
      json_object_set_new(ro, "load", json_real(res.load[r]));
      for (int f = 0; f < NFIELDS; f++) {
        double x = res.v[p][r][f];
        json_object_set_new(ro, field_names[f], isfinite(x) ? json_real(x) : json_null());
      }
      json_array_append_new(rounds, ro);
    }
    json_object_set_new(po, "rounds", rounds);
    json_object_set_new(peers, peer_names[p], po);
  }
  double total = (double)res.submitted[P_CT];
  for (int i = 0; i < res.ncmds; i++)
    json_array_append_new(cmds, json_pack("{s:s,s:f,s:f}", "command", res.cmd[i], "calls_per_task",
                                          res.cmd_calls[i] / total, "usec_per_call",
                                          res.cmd_usec[i] / res.cmd_calls[i]));
  json_object_set_new(o, "benchmark", json_string("bench-broker"));
  json_object_set_new(o, "redis_version", json_string(redis_version()));
  json_object_set_new(o, "settings",
                      json_pack("{s:b,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "quick", cfg.quick, "tasks",
                                (json_int_t)cfg.tasks, "peer_tasks", (json_int_t)cfg.peer_tasks,
                                "producers", (json_int_t)cfg.producers, "batch",
                                (json_int_t)(cfg.batch > 1 ? cfg.batch : 1), "concurrency",
                                (json_int_t)cfg.concurrency, "rpc_calls",
                                (json_int_t)cfg.rpc_calls, "rounds", (json_int_t)cfg.rounds));
  json_object_set_new(o, "load_before", json_real(load0));
  json_object_set_new(o, "load_after", json_real(load1));
  json_object_set_new(o, "peers", peers);
  json_object_set_new(o, "ctasker_commands", cmds);
  json_dumpf(o, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
  printf("\n");
  json_decref(o);
}

/* ---- main ------------------------------------------------------------------------ */

static void read_settings(void) {
  bool q = cfg.quick;
  cfg.tasks = bench_env_long("CT_BENCH_BROKER_TASKS", q ? 2000 : 20000);
  cfg.peer_tasks = bench_env_long("CT_BENCH_PEER_TASKS", q ? 200 : 2000);
  cfg.producers = bench_env_long("CT_BENCH_BROKER_PRODUCERS", 4);
  cfg.batch = bench_env_long("CT_BENCH_BROKER_BATCH", 1);
  cfg.concurrency = bench_env_long("CT_BENCH_BROKER_CONCURRENCY", 8);
  cfg.rpc_calls = bench_env_long("CT_BENCH_RPC_CALLS", q ? 100 : 1000);
  cfg.rounds = bench_env_long("CT_BENCH_ROUNDS", q ? 1 : 3);
  cfg.rounds = cfg.rounds > MAX_ROUNDS ? MAX_ROUNDS : cfg.rounds;
  cfg.scripts = getenv("CT_BENCH_SCRIPTS") ? getenv("CT_BENCH_SCRIPTS") : CT_BENCH_SCRIPTS;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--worker") == 0)
    return worker_main(argv[2], atoi(argv[3]));
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0)
      cfg.quick = true;
    else if (strcmp(argv[i], "--json") == 0)
      cfg.json = true;
    else {
      fprintf(stderr, "usage: bench-broker [--quick] [--json]\n");
      return 2;
    }
  }
  read_settings();
  if (system("command -v redis-server >/dev/null") != 0) {
    fprintf(stderr, "bench-broker needs redis-server (Debian: apt-get install redis-server)\n");
    return 1;
  }
  for (int p = P_CT + 1; p < NPEERS; p++)
    find_python(p);
  test_redis_start(&redis, NULL);
  worker_proc_t worker = spawn_worker(); /* before this process has threads */
  ct_supervisor_t *sup = start_supervisor(2);
  ct_broker_t *b = open_broker(sup, redis.url);
  json_t *warm = NULL;
  die_rc("ct_broker_call (warm-up)", ct_broker_call(b, "empty", NULL, NULL, 30, &warm));
  json_decref(warm);
  double load0 = bench_load1();
  if (!cfg.json) {
    printf("bench-broker: empty tasks end to end (submit -> result stored), producer and worker"
           " in separate processes,\none redis-server %s on a Unix socket; ctasker %ld tasks"
           " per round, peers %ld; %ld producer threads (ctasker: %ld per submit call);"
           " worker concurrency %ld; %ld RPC calls%s\n",
           redis_version(), cfg.tasks, cfg.peer_tasks, cfg.producers,
           cfg.batch > 1 ? cfg.batch : 1, cfg.concurrency,
           cfg.rpc_calls, cfg.quick ? " (--quick: not for comparison)" : "");
    for (int p = P_CT + 1; p < NPEERS; p++)
      if (res.missing[p][0])
        printf("%s: missing, %s\n", peer_names[p], res.missing[p]);
    fflush(stdout);
  }
  for (int r = 0; r < cfg.rounds; r++) {
    res.load[r] = bench_load1();
    ct_round(b, worker.pid, r);
    for (int p = P_CT + 1; p < NPEERS; p++)
      peer_round(p, r);
    print_round(r);
  }
  double load1 = bench_load1();
  ct_broker_free(b);
  ct_supervisor_stop(sup, CT_STOP_DRAIN, -1);
  ct_supervisor_free(sup);
  bool worker_ok = stop_worker(&worker);
  sort_commandstats();
  cfg.json ? print_json(load0, load1) : print_text(load0, load1);
  test_redis_stop(&redis);
  return worker_ok ? 0 : 1;
}
