/* `ctasker worker`: a daemon that serves the handlers of plugins.
 *
 * Start: load each plugin (dlopen) and call its entry point
 * (ctasker/plugin.h) on a broker handle per queue, so that it registers its
 * handlers there; refuse to start if one cannot be loaded, lacks the entry
 * point, fails or registers nothing. Then the process pool (--processes),
 * the metrics endpoint (--metrics) and the broker workers start.
 *
 * Signals are blocked in every thread (the mask is set before the first
 * thread is made) and taken by the main thread with sigtimedwait: the
 * library's threads never see them, and the handling is ordinary code.
 * SIGTERM or SIGINT starts a drain on a thread of its own: each queue's
 * worker stops fetching and waits, within --grace, for its running tasks
 * (their results stored); what it had not fetched stays in Redis. A second
 * SIGTERM or SIGINT, or a grace that runs out, ends the process at once
 * (_exit): tasks still running are left pending in Redis, and any worker
 * of the queue takes them over once their lease passes. SIGHUP opens the
 * log file again.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ctasker/plugin.h>

#include "cli.h"
#include "log.h"
#include "prom.h"

#define MAX_QUEUES 16
#define MAX_PLUGINS 64

static const char help[] =
    "Usage: ctasker worker --handlers PLUGIN.so [OPTIONS]\n"
    "\n"
    "Serve the task handlers that the plugins register (see ctasker/plugin.h),\n"
    "until SIGTERM or SIGINT: then fetch nothing more and let running tasks end\n"
    "within the grace; a second signal stops at once (running tasks are left to\n"
    "other workers, after their lease). SIGHUP opens the log file again.\n"
    "\n"
    "Options:\n"
    "  --handlers PATH      a plugin (shared object) to load; repeatable\n"
    "  --queue NAME         a queue to serve; repeatable (default: default)\n"
    "  --threads N          pool threads of the supervisor (default: CPUs, at least 2)\n"
    "  --processes N        children of a process pool for the handlers'\n"
    "                       ct_process_task() calls (default: 0, none)\n"
    "  --concurrency N      tasks run at once per queue (default: --threads, else 4)\n"
    "  --reserve-normal N   extra pool threads only normal, high and critical tasks\n"
    "                       use (default: 0)\n"
    "  --reserve-high N     extra pool threads only high and critical tasks use\n"
    "                       (default: 0)\n"
    "  --timeout-warning S  log a warning for a task queued or running longer\n"
    "                       (default: off)\n"
    "  --timeout-critical S log an error for a task queued or running longer\n"
    "                       (default: off)\n"
    "  --grace S            seconds running tasks get to end on stop (default: 30)\n"
    "  --lease S            seconds a task stays this worker's unrenewed (default: 30)\n"
    "  --max-deliveries N   deliveries before a task goes to the dead letters (default: 5)\n"
    "  --allow-eviction     start even if Redis may evict keys (maxmemory-policy)\n"
    "  --metrics HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics\n"
    "                       (port 0: any free port, logged)\n"
    "  --log-level L        debug, info, warning or error (default: info)\n"
    "  --log-format F       text or json (one object per line) (default: text)\n"
    "  --log-file PATH      log there rather than to stderr (SIGHUP reopens it)\n"
    "  --url URL            redis://[user:password@]host[:port][/db] or\n"
    "                       unix:///path/to/socket[?db=N]\n"
    "                       (default: $CTASKER_URL, else redis://127.0.0.1:6379)\n"
    "  --namespace NS       key namespace (default: ctasker)\n"
    "  --redis-timeout S    seconds to connect and for each reply (default: 5)\n"
    "  -h, --help           this help\n"
    "\n"
    "Exit status: 0 stopped after a full drain, 1 stopped at once by a second\n"
    "signal, 2 usage, 3 Redis unreachable, 4 tasks left pending (the grace ran\n"
    "out, or Redis did not take a run's outcome), 6 could not start (plugin,\n"
    "process pool, metrics, Redis policy).\n";

enum {
  OPT_HANDLERS = OPT_FIRST_OWN, OPT_THREADS, OPT_PROCESSES, OPT_CONCURRENCY, OPT_GRACE,
  OPT_LEASE, OPT_MAX_DELIVERIES, OPT_ALLOW_EVICTION, OPT_METRICS, OPT_LOG_LEVEL,
  OPT_LOG_FORMAT, OPT_LOG_FILE, OPT_RESERVE_NORMAL, OPT_RESERVE_HIGH, OPT_TIMEOUT_WARNING,
  OPT_TIMEOUT_CRITICAL
};

typedef struct {
  cli_common_t c;
  const char *plugins[MAX_PLUGINS];
  int nplugins;
  const char *queues[MAX_QUEUES];
  int nqueues;
  int threads, processes, concurrency, max_deliveries, log_level;
  int reserve_normal, reserve_high;
  double grace, lease, timeout_warning, timeout_critical;
  bool allow_eviction, log_json;
  const char *metrics, *log_file;
} worker_args_t;

typedef struct {
  worker_args_t a;
  ct_supervisor_t *sup;
  prom_queue_t queues[MAX_QUEUES];
  void *plugins[MAX_PLUGINS];
  _Atomic(prom_t *) prom; /* set at start; worker_log reads it on the library's threads */
  atomic_bool drained;
  atomic_int drain_rc;
  atomic_bool unwritten; /* a queue's stop said an outcome was not written */
} daemon_t;

static int parse_own(worker_args_t *a, int o, const char *arg) {
  switch (o) {
  case OPT_HANDLERS:
    if (a->nplugins == MAX_PLUGINS)
      return cli_usage_error("worker", "at most %d --handlers", MAX_PLUGINS);
    a->plugins[a->nplugins++] = arg;
    return -1;
  case OPT_QUEUE:
    if (a->nqueues == MAX_QUEUES)
      return cli_usage_error("worker", "at most %d --queue", MAX_QUEUES);
    a->queues[a->nqueues++] = arg;
    return -1;
  case OPT_THREADS:
    return cli_int(arg, 1, 4096, &a->threads) ? -1
           : cli_usage_error("worker", "--threads: not a number in 1..4096: '%s'", arg);
  case OPT_PROCESSES:
    return cli_int(arg, 0, 1024, &a->processes) ? -1
           : cli_usage_error("worker", "--processes: not a number in 0..1024: '%s'", arg);
  case OPT_CONCURRENCY:
    return cli_int(arg, 1, 100000, &a->concurrency) ? -1
           : cli_usage_error("worker", "--concurrency: not a number in 1..100000: '%s'", arg);
  case OPT_MAX_DELIVERIES:
    return cli_int(arg, 1, 1000000, &a->max_deliveries) ? -1
           : cli_usage_error("worker", "--max-deliveries: not a number >= 1: '%s'", arg);
  case OPT_GRACE:
    return cli_seconds(arg, &a->grace) ? -1
           : cli_usage_error("worker", "--grace: not a number of seconds: '%s'", arg);
  case OPT_LEASE:
    return cli_seconds(arg, &a->lease) && a->lease >= 0.1 && a->lease <= 86400 ? -1
           : cli_usage_error("worker", "--lease: not a number of seconds in 0.1..86400: '%s'",
                             arg);
  case OPT_ALLOW_EVICTION:
    a->allow_eviction = true;
    return -1;
  case OPT_METRICS:
    a->metrics = arg;
    return -1;
  case OPT_LOG_LEVEL:
    a->log_level = dlog_level(arg);
    return a->log_level > 0 ? -1
           : cli_usage_error("worker", "--log-level: not debug, info, warning or error: '%s'",
                             arg);
  case OPT_LOG_FORMAT:
    a->log_json = strcmp(arg, "json") == 0;
    return a->log_json || strcmp(arg, "text") == 0
               ? -1
               : cli_usage_error("worker", "--log-format: not text or json: '%s'", arg);
  case OPT_LOG_FILE:
    a->log_file = arg;
    return -1;
  case OPT_RESERVE_NORMAL:
    return cli_int(arg, 0, 4096, &a->reserve_normal) ? -1
           : cli_usage_error("worker", "--reserve-normal: not a number in 0..4096: '%s'", arg);
  case OPT_RESERVE_HIGH:
    return cli_int(arg, 0, 4096, &a->reserve_high) ? -1
           : cli_usage_error("worker", "--reserve-high: not a number in 0..4096: '%s'", arg);
  case OPT_TIMEOUT_WARNING:
    return cli_seconds(arg, &a->timeout_warning) ? -1
           : cli_usage_error("worker", "--timeout-warning: not a number of seconds: '%s'", arg);
  case OPT_TIMEOUT_CRITICAL:
    return cli_seconds(arg, &a->timeout_critical) ? -1
           : cli_usage_error("worker", "--timeout-critical: not a number of seconds: '%s'", arg);
  default:
    return cli_usage_error("worker", "bad option");
  }
}

/* Parse; returns -1 to go on, else the exit code. */
static int parse(int argc, char **argv, worker_args_t *a) {
  static const struct option opts[] = {
      CLI_COMMON_OPTIONS,
      {"handlers", required_argument, NULL, OPT_HANDLERS},
      {"threads", required_argument, NULL, OPT_THREADS},
      {"processes", required_argument, NULL, OPT_PROCESSES},
      {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
      {"grace", required_argument, NULL, OPT_GRACE},
      {"lease", required_argument, NULL, OPT_LEASE},
      {"max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES},
      {"allow-eviction", no_argument, NULL, OPT_ALLOW_EVICTION},
      {"metrics", required_argument, NULL, OPT_METRICS},
      {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
      {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
      {"log-file", required_argument, NULL, OPT_LOG_FILE},
      {"reserve-normal", required_argument, NULL, OPT_RESERVE_NORMAL},
      {"reserve-high", required_argument, NULL, OPT_RESERVE_HIGH},
      {"timeout-warning", required_argument, NULL, OPT_TIMEOUT_WARNING},
      {"timeout-critical", required_argument, NULL, OPT_TIMEOUT_CRITICAL},
      {NULL, 0, NULL, 0}};
  memset(a, 0, sizeof *a);
  cli_common_init(&a->c);
  a->grace = 30;
  a->log_level = CT_LOG_INFO;
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') {
      fputs(help, stdout);
      return CLI_OK;
    }
    if (o != OPT_QUEUE && o != OPT_JSON && cli_common_option(&a->c, o, optarg))
      continue;
    int rc = o == OPT_JSON ? -1 : parse_own(a, o, optarg);
    if (rc >= 0)
      return rc;
  }
  if (optind < argc)
    return cli_usage_error("worker", "unexpected argument '%s'", argv[optind]);
  if (a->nplugins == 0)
    return cli_usage_error("worker", "give at least one --handlers PLUGIN.so");
  if (a->nqueues == 0)
    a->queues[a->nqueues++] = "default";
  return -1;
}

/* The library's lines, counting reconnection attempts for the metrics. */
static void worker_log(int level, const char *msg, void *data) {
  daemon_t *d = data;
  if (d->prom && strstr(msg, ": connecting again in "))
    prom_reconnect(d->prom);
  dlog_line(level, msg, NULL);
}

/* --- starting ----------------------------------------------------------- */

static int start_supervisor(daemon_t *d) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = d->a.threads;
  o.reserve_normal = d->a.reserve_normal;
  o.reserve_high = d->a.reserve_high;
  o.timeout_warning = d->a.timeout_warning;
  o.timeout_critical = d->a.timeout_critical;
  o.log = worker_log;
  o.log_data = d;
  int rc = ct_supervisor_new(&o, &d->sup);
  if (rc == 0)
    rc = ct_supervisor_start(d->sup);
  if (rc != 0)
    dlog(CT_LOG_ERROR, "cannot start the supervisor: %s", ct_strerror(rc));
  return rc == 0 ? CLI_OK : CLI_START;
}

static int load_plugins(daemon_t *d) {
  for (int i = 0; i < d->a.nplugins; i++) {
    const char *path = d->a.plugins[i];
    d->plugins[i] = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!d->plugins[i]) {
      dlog(CT_LOG_ERROR, "plugin %s: cannot load it: %s", path, dlerror());
      return CLI_START;
    }
  }
  return CLI_OK;
}

/* Call every plugin's entry point on the handle of queue q. */
static int register_plugins(daemon_t *d, prom_queue_t *q) {
  for (int i = 0; i < d->a.nplugins; i++) {
    const char *path = d->a.plugins[i];
    ct_plugin_entry_fn entry;
    *(void **)&entry = dlsym(d->plugins[i], CT_PLUGIN_ENTRY_NAME);
    if (!entry) {
      dlog(CT_LOG_ERROR, "plugin %s: no entry point %s (define it with CT_PLUGIN_HANDLERS or "
           "CT_PLUGIN_ENTRY of ctasker/plugin.h)", path, CT_PLUGIN_ENTRY_NAME);
      return CLI_START;
    }
    int n = entry(q->broker);
    if (n < 0) {
      dlog(CT_LOG_ERROR, "plugin %s: its registration failed on queue %s: %s", path, q->name,
           ct_strerror(n));
      return CLI_START;
    }
    if (n == 0) {
      dlog(CT_LOG_ERROR, "plugin %s: it registered no handler", path);
      return CLI_START;
    }
    dlog(CT_LOG_INFO, "plugin %s: %d handlers on queue %s", path, n, q->name);
  }
  return CLI_OK;
}

static int start_queue(daemon_t *d, prom_queue_t *q) {
  ct_broker_worker_opts_t o = CT_BROKER_WORKER_OPTS_INIT;
  o.concurrency = d->a.concurrency ? d->a.concurrency : d->a.threads;
  o.lease = d->a.lease;
  o.max_deliveries = d->a.max_deliveries;
  o.allow_eviction = d->a.allow_eviction;
  int rc = d->prom ? ct_broker_worker_observe(q->broker, prom_observe, q) : 0;
  if (rc == 0)
    rc = ct_broker_worker_start(q->broker, &o);
  if (rc == CT_ENOTSUP)
    dlog(CT_LOG_ERROR, "queue %s: Redis may evict task data (its maxmemory-policy is not "
         "noeviction): set it, or start with --allow-eviction", q->name);
  else if (rc != 0)
    dlog(CT_LOG_ERROR, "queue %s: the worker cannot start: %s", q->name, ct_strerror(rc));
  return rc == 0 ? CLI_OK : rc == CT_ETIMEDOUT ? CLI_REDIS : CLI_START;
}

static int start_metrics(daemon_t *d) {
  int port;
  if (prom_serve(d->prom, d->a.metrics, &port) != 0)
    return CLI_START;
  char host[256];
  snprintf(host, sizeof host, "%.*s", (int)(strrchr(d->a.metrics, ':') - d->a.metrics),
           d->a.metrics);
  dlog(CT_LOG_INFO, "metrics at http://%s:%d/metrics", host, port);
  return CLI_OK;
}

static int start(daemon_t *d) {
  int rc = start_supervisor(d);
  if (rc == CLI_OK)
    rc = load_plugins(d);
  for (int i = 0; rc == CLI_OK && i < d->a.nqueues; i++) {
    prom_queue_t *q = &d->queues[i];
    q->name = d->a.queues[i];
    rc = cli_connect(&d->a.c, d->sup, q->name, worker_log, d, &q->broker);
    if (rc == CLI_OK)
      rc = register_plugins(d, q);
  }
  if (rc == CLI_OK && d->a.processes > 0) {
    ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
    po.pool_size = d->a.processes;
    int err = ct_process_pool_create(d->sup, &po);
    if (err != 0) {
      dlog(CT_LOG_ERROR, "cannot start the process pool: %s", ct_strerror(err));
      rc = CLI_START;
    }
  }
  if (rc == CLI_OK && d->a.metrics) {
    d->prom = prom_new(d->sup, d->queues, d->a.nqueues);
    for (int i = 0; i < d->a.nqueues; i++)
      d->queues[i].prom = d->prom;
    rc = d->prom ? start_metrics(d) : CLI_START;
  }
  for (int i = 0; rc == CLI_OK && i < d->a.nqueues; i++)
    rc = start_queue(d, &d->queues[i]);
  return rc;
}

/* --- stopping ----------------------------------------------------------- */

static void *drain_main(void *arg) {
  daemon_t *d = arg;
  double end = ct_now() + d->a.grace;
  int rc = CLI_OK;
  /* Every queue stops fetching at once; then each is waited for. One after
   * the other, each queue went on fetching, and waiting for a Redis that
   * had gone away, until the stops before it had ended. */
  for (int i = 0; i < d->a.nqueues; i++)
    ct_broker_worker_stop(d->queues[i].broker, 0);
  for (int i = 0; i < d->a.nqueues; i++) {
    /* A grace spent (or 0) still looks once, for a millisecond: a stop
     * with timeout 0 does not wait, and so says nothing of what runs. */
    double left = end - ct_now();
    int err = ct_broker_worker_stop(d->queues[i].broker, left > 0.001 ? left : 0.001);
    if (err == CT_ETIMEDOUT)
      rc = CLI_TIMEOUT;
    else if (err == CT_EAGAIN)
      atomic_store(&d->unwritten, true);
  }
  atomic_store(&d->drain_rc, rc);
  atomic_store(&d->drained, true);
  return NULL;
}

/* Take signals until the drain is done; returns the exit code. */
static int serve(daemon_t *d, const sigset_t *set) {
  pthread_t drainer;
  bool draining = false;
  for (;;) {
    if (draining && atomic_load(&d->drained)) {
      pthread_join(drainer, NULL);
      return atomic_load(&d->drain_rc);
    }
    int sig = sigtimedwait(set, NULL, &(struct timespec){0, 100000000});
    if (sig == SIGHUP) {
      int err = dlog_reopen();
      dlog(err ? CT_LOG_ERROR : CT_LOG_INFO, "SIGHUP: log reopened%s%s", err ? ": " : "",
           err ? strerror(err) : "");
    } else if ((sig == SIGTERM || sig == SIGINT) && draining) {
      dlog(CT_LOG_WARNING, "second %s: stopping now; running tasks are left to other workers "
           "once their lease passes", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      _exit(CLI_TASK_FAILED);
    } else if (sig == SIGTERM || sig == SIGINT) {
      dlog(CT_LOG_INFO, "%s: draining: no new tasks, running ones get %g s (a second signal "
           "stops at once)", sig == SIGTERM ? "SIGTERM" : "SIGINT", d->a.grace);
      if (pthread_create(&drainer, NULL, drain_main, d) != 0) {
        dlog(CT_LOG_ERROR, "cannot start the drain: stopping now");
        _exit(CLI_TASK_FAILED);
      }
      draining = true;
    }
  }
}

static void finish(daemon_t *d) {
  for (int i = 0; i < d->a.nqueues; i++)
    ct_broker_free(d->queues[i].broker);
  prom_free(d->prom);
  if (d->sup) {
    ct_supervisor_stop(d->sup, CT_STOP_CANCEL, -1);
    ct_supervisor_free(d->sup);
  }
  for (int i = 0; i < d->a.nplugins; i++)
    if (d->plugins[i])
      dlclose(d->plugins[i]);
}

int cmd_worker(int argc, char **argv) {
  daemon_t *d = calloc(1, sizeof *d);
  if (!d)
    return CLI_START;
  int rc = parse(argc, argv, &d->a);
  if (rc >= 0) {
    free(d);
    return rc;
  }
  int err = dlog_init(d->a.log_level, d->a.log_json, d->a.log_file);
  if (err)
    cli_error("--log-file %s: %s", d->a.log_file, strerror(err));
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  rc = err ? CLI_USAGE : start(d);
  if (rc == CLI_OK) {
    dlog(CT_LOG_INFO, "ready: pid %d, %d queues", (int)getpid(), d->a.nqueues);
    rc = serve(d, &set);
    if (rc == CLI_TIMEOUT) {
      dlog(CT_LOG_WARNING, "the grace of %g s ran out: running tasks are left to other "
           "workers once their lease passes", d->a.grace);
      _exit(CLI_TIMEOUT);
    }
    if (atomic_load(&d->unwritten)) {
      dlog(CT_LOG_WARNING, "stopped: every running task ended, but Redis did not take the "
           "outcome of some: they are left to other workers once their lease passes");
      rc = CLI_TIMEOUT;
    } else {
      dlog(CT_LOG_INFO, "stopped: every running task ended");
    }
  }
  finish(d);
  free(d);
  return rc;
}
