/* The worker's metrics, in Prometheus's text exposition format, served at
 * /metrics by libmicrohttpd on a thread of its own.
 *
 * Per queue and task name: completed, failed, retried, expired and dead
 * counters (dead: entries this worker moved to the dead letters, by the
 * name the entry had; "_unnamed" for one without a name), run-time and queue-wait histograms (from the broker's task events,
 * ct_broker_worker_observe()); per queue: tasks in flight, and at scrape
 * time the queue's own counts from ct_broker_queue_stats() (ready and
 * pending per level, dead letters: what every worker of the queue sees);
 * the supervisor's counters and threads; the process pool's children
 * (from the "processes" object of ct_supervisor_stats_json()) when there
 * is a pool; attempts to connect to Redis again. Task names come from producers, so at most MAX_SERIES series of
 * names are kept: the rest are counted under name="_other".
 */
#include "prom.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

#define MAX_SERIES 1000
#define NBUCKETS 14
static const double buckets[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                         1,     2.5,  5,     10,   30,  60,  300};

typedef struct {
  unsigned long long counts[NBUCKETS + 1]; /* the last: +Inf only */
  unsigned long long n;
  double sum;
} histogram_t;

typedef struct series {
  struct series *next;
  const prom_queue_t *queue;
  unsigned long long counts[5]; /* completed, failed, retried, expired, dead */
  histogram_t run, wait;
  char name[];
} series_t;

struct prom {
  ct_supervisor_t *sup;
  prom_queue_t *queues;
  int nqueues;
  struct MHD_Daemon *http;
  pthread_mutex_t lock;
  series_t *series;    /* lock */
  int nseries;         /* lock */
  long long in_flight[16]; /* lock: per queue (the first 16) */
  unsigned long long reconnects; /* lock */
};

prom_t *prom_new(ct_supervisor_t *sup, prom_queue_t *queues, int nqueues) {
  prom_t *p = calloc(1, sizeof *p);
  if (!p || pthread_mutex_init(&p->lock, NULL) != 0) {
    free(p);
    return NULL;
  }
  p->sup = sup;
  p->queues = queues;
  p->nqueues = nqueues;
  return p;
}

static series_t *find_series(prom_t *p, const prom_queue_t *q, const char *name) {
  for (series_t *s = p->series; s; s = s->next)
    if (s->queue == q && strcmp(s->name, name) == 0)
      return s;
  return NULL;
}

/* Under the lock: the series of (queue, name), made if new; once there are
 * MAX_SERIES, a name without one of its own counts under "_other" (a name
 * that has one keeps counting there). */
static series_t *series_of(prom_t *p, const prom_queue_t *q, const char *name) {
  series_t *s = find_series(p, q, name);
  if (!s && p->nseries >= MAX_SERIES)
    s = find_series(p, q, name = "_other");
  if (s)
    return s;
  size_t len = strlen(name);
  s = calloc(1, sizeof *s + len + 1);
  if (!s)
    return NULL;
  memcpy(s->name, name, len + 1);
  s->queue = q;
  s->next = p->series;
  p->series = s;
  p->nseries++;
  return s;
}

static void histogram_add(histogram_t *h, double v) {
  int i = 0;
  while (i < NBUCKETS && v > buckets[i])
    i++;
  h->counts[i]++;
  h->n++;
  h->sum += v;
}

void prom_observe(const ct_broker_event_t *e, void *data) {
  const prom_queue_t *q = data;
  prom_t *p = q->prom;
  int qi = (int)(q - p->queues);
  pthread_mutex_lock(&p->lock);
  series_t *s = series_of(p, q, *e->name ? e->name : "_unnamed");
  if (e->kind == CT_BROKER_EVENT_DEAD) {
    if (s)
      s->counts[4]++;
  } else if (e->kind == CT_BROKER_EVENT_START) {
    if (qi < 16)
      p->in_flight[qi]++;
    if (s)
      histogram_add(&s->wait, e->queue_wait);
  } else if (e->kind == CT_BROKER_EVENT_END) {
    if (qi < 16)
      p->in_flight[qi]--;
    int c = e->status == CT_BROKER_COMPLETED ? 0
            : e->status == CT_BROKER_FAILED  ? 1
            : e->status == CT_BROKER_RETRYING ? 2
            : e->status == CT_BROKER_EXPIRED ? 3
                                             : -1; /* a lost lease: not this worker's end */
    if (s && c >= 0)
      s->counts[c]++;
    if (s && c >= 0 && c != 3)
      histogram_add(&s->run, e->run_time);
  }
  pthread_mutex_unlock(&p->lock);
}

void prom_reconnect(prom_t *p) {
  pthread_mutex_lock(&p->lock);
  p->reconnects++;
  pthread_mutex_unlock(&p->lock);
}

/* --- exposition --------------------------------------------------------- */

/* A label value with \, " and newline escaped. */
static void label(FILE *f, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      fputc('\\', f);
    if (*v == '\n')
      fputs("\\n", f);
    else
      fputc(*v, f);
  }
}

static void head(FILE *f, const char *name, const char *type, const char *help) {
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void labels(FILE *f, const series_t *s) {
  fputs("queue=\"", f);
  label(f, s->queue->name);
  fputs("\",name=\"", f);
  label(f, s->name);
  fputc('"', f);
}

static void write_histogram(FILE *f, const char *metric, const series_t *s, const histogram_t *h) {
  unsigned long long cum = 0;
  for (int i = 0; i <= NBUCKETS; i++) {
    cum += h->counts[i];
    fprintf(f, "%s_bucket{", metric);
    labels(f, s);
    if (i < NBUCKETS)
      fprintf(f, ",le=\"%g\"} %llu\n", buckets[i], cum);
    else
      fprintf(f, ",le=\"+Inf\"} %llu\n", cum);
  }
  fprintf(f, "%s_sum{", metric);
  labels(f, s);
  fprintf(f, "} %.6f\n%s_count{", h->sum, metric);
  labels(f, s);
  fprintf(f, "} %llu\n", h->n);
}

static void write_series(FILE *f, prom_t *p) {
  static const struct {
    const char *name, *help;
  } counters[5] = {
      {"ctasker_tasks_completed_total", "Tasks this worker completed."},
      {"ctasker_tasks_failed_total", "Tasks this worker ended with an exception."},
      {"ctasker_tasks_retried_total", "Runs that failed and were scheduled to run again."},
      {"ctasker_tasks_expired_total", "RPC tasks not run: the caller's deadline had passed."},
      {"ctasker_tasks_dead_total",
       "Entries this worker moved to the dead letters (delivered too often, or malformed)."}};
  for (int c = 0; c < 5; c++) {
    head(f, counters[c].name, "counter", counters[c].help);
    for (const series_t *s = p->series; s; s = s->next) {
      fprintf(f, "%s{", counters[c].name);
      labels(f, s);
      fprintf(f, "} %llu\n", s->counts[c]);
    }
  }
  head(f, "ctasker_task_run_seconds", "histogram", "Seconds a task's run took.");
  for (const series_t *s = p->series; s; s = s->next)
    write_histogram(f, "ctasker_task_run_seconds", s, &s->run);
  head(f, "ctasker_task_queue_wait_seconds", "histogram",
       "Seconds from a task's submission to its start.");
  for (const series_t *s = p->series; s; s = s->next)
    write_histogram(f, "ctasker_task_queue_wait_seconds", s, &s->wait);
  head(f, "ctasker_tasks_in_flight", "gauge", "Tasks this worker runs now.");
  for (int i = 0; i < p->nqueues && i < 16; i++) {
    fputs("ctasker_tasks_in_flight{queue=\"", f);
    label(f, p->queues[i].name);
    fprintf(f, "\"} %lld\n", p->in_flight[i]);
  }
  head(f, "ctasker_redis_reconnect_attempts_total", "counter",
       "Attempts to connect to Redis again after a connection broke.");
  fprintf(f, "ctasker_redis_reconnect_attempts_total %llu\n", p->reconnects);
}

static void write_supervisor(FILE *f, prom_t *p) {
  ct_stats_t st = CT_STATS_INIT;
  if (ct_supervisor_stats(p->sup, &st) != 0)
    return;
  const struct {
    const char *name, *type, *what;
    unsigned long long v;
  } m[] = {
      {"ctasker_supervisor_submitted_total", "counter", "Tasks the supervisor accepted.",
       st.submitted},
      {"ctasker_supervisor_completed_total", "counter", "Tasks the supervisor completed.",
       st.completed},
      {"ctasker_supervisor_failed_total", "counter", "Tasks that ended with an error.",
       st.failed},
      {"ctasker_supervisor_canceled_total", "counter", "Tasks canceled.", st.canceled},
      {"ctasker_supervisor_queued", "gauge", "Tasks in the run queue now.", st.queued},
      {"ctasker_supervisor_running", "gauge", "Tasks running now.", st.running},
      {"ctasker_supervisor_threads", "gauge", "Pool threads alive now.", st.threads},
      {"ctasker_supervisor_threads_idle", "gauge", "Pool threads idle now.", st.threads_idle},
  };
  for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
    head(f, m[i].name, m[i].type, m[i].what);
    fprintf(f, "%s %llu\n", m[i].name, m[i].v);
  }
}

/* The process pool's children, if the supervisor has a pool. */
static void write_processes(FILE *f, prom_t *p) {
  json_t *all = ct_supervisor_stats_json(p->sup);
  const json_t *pp = json_object_get(all, "processes");
  const struct {
    const char *name, *type, *what, *field;
  } m[] = {
      {"ctasker_process_children", "gauge", "Children the process pool keeps (its size).",
       "size"},
      {"ctasker_process_children_busy", "gauge", "Children running a task now.", "running"},
      {"ctasker_process_children_forked_total", "counter",
       "Children forked, first ones and replacements.", "children_forked"},
      {"ctasker_process_children_crashed_total", "counter",
       "Children that died while running a task.", "crashed"},
      {"ctasker_process_timeouts_total", "counter", "Children killed for overrunning a task's timeout.",
       "timeouts"},
      {"ctasker_process_tasks_queued", "gauge", "Process tasks waiting for a child.", "queued"},
  };
  for (size_t i = 0; pp && i < sizeof m / sizeof *m; i++) {
    head(f, m[i].name, m[i].type, m[i].what);
    fprintf(f, "%s %lld\n", m[i].name, (long long)json_integer_value(json_object_get(pp, m[i].field)));
  }
  json_decref(all);
}

/* The queues' own counts, read from Redis now; ctasker_redis_up says
 * whether that worked. The queues share the worker's Redis: once one read
 * found it unreachable (no reply within the command timeout), the others
 * are not tried, so that a scrape lasts one timeout, not one a queue
 * (Prometheus gives up on a scrape after 10 s by default). */
static void write_queues(FILE *f, prom_t *p) {
  json_t *stats[16] = {NULL};
  bool unreachable = false;
  head(f, "ctasker_redis_up", "gauge", "1 if the queue's counts could be read from Redis.");
  for (int i = 0; i < p->nqueues && i < 16; i++) {
    int rc = unreachable ? CT_ETIMEDOUT : ct_broker_queue_stats(p->queues[i].broker, &stats[i]);
    unreachable = rc == CT_ETIMEDOUT || rc == CT_ESHUTDOWN;
    fputs("ctasker_redis_up{queue=\"", f);
    label(f, p->queues[i].name);
    fprintf(f, "\"} %d\n", rc == 0);
  }
  static const char *const gauges[] = {"ready", "pending"};
  for (int g = 0; g < 2; g++) {
    fprintf(f, "# HELP ctasker_queue_%s Entries %s in the queue's stream of a level.\n",
            gauges[g], g == 0 ? "no worker has taken yet" : "taken, not yet acknowledged,");
    fprintf(f, "# TYPE ctasker_queue_%s gauge\n", gauges[g]);
    for (int i = 0; i < p->nqueues && i < 16; i++) {
      size_t j;
      const json_t *l;
      json_array_foreach(json_object_get(stats[i], "levels"), j, l) {
        fprintf(f, "ctasker_queue_%s{queue=\"", gauges[g]);
        label(f, p->queues[i].name);
        fprintf(f, "\",level=\"%s\"} %lld\n", json_string_value(json_object_get(l, "level")),
                json_integer_value(json_object_get(l, gauges[g])));
      }
    }
  }
  head(f, "ctasker_queue_dead_letters", "gauge", "Entries in the queue's dead letters.");
  for (int i = 0; i < p->nqueues && i < 16; i++) {
    if (!stats[i])
      continue;
    fputs("ctasker_queue_dead_letters{queue=\"", f);
    label(f, p->queues[i].name);
    fprintf(f, "\"} %lld\n", json_integer_value(json_object_get(stats[i], "dead")));
    json_decref(stats[i]);
  }
}

/* The whole page; NULL if out of memory. */
static char *exposition(prom_t *p, size_t *len) {
  char *buf = NULL;
  FILE *f = open_memstream(&buf, len);
  if (!f)
    return NULL;
  pthread_mutex_lock(&p->lock);
  write_series(f, p);
  pthread_mutex_unlock(&p->lock);
  write_supervisor(f, p);
  write_processes(f, p);
  write_queues(f, p);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* --- HTTP --------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *body, size_t len,
                             enum MHD_ResponseMemoryMode mode, const char *type) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, "Content-Type", type);
  enum MHD_Result ok = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls) {
  (void)version;
  (void)upload;
  (void)upload_size;
  (void)con_cls;
  static char not_found[] = "not found: the metrics are at /metrics\n";
  static char bad_method[] = "only GET\n";
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, bad_method, strlen(bad_method),
                 MHD_RESPMEM_PERSISTENT, "text/plain");
  if (strcmp(url, "/metrics") != 0)
    return reply(c, MHD_HTTP_NOT_FOUND, not_found, strlen(not_found), MHD_RESPMEM_PERSISTENT,
                 "text/plain");
  size_t len = 0;
  char *body = exposition(cls, &len);
  if (!body)
    return MHD_NO;
  return reply(c, MHD_HTTP_OK, body, len, MHD_RESPMEM_MUST_FREE,
               "text/plain; version=0.0.4; charset=utf-8");
}

/* HOST:PORT (HOST may be [v6]) into an address; false after a log line. */
static bool parse_address(const char *hostport, struct sockaddr_storage *sa) {
  const char *colon = strrchr(hostport, ':');
  int port;
  if (!colon || colon == hostport || !cli_int(colon + 1, 0, 65535, &port)) {
    dlog(CT_LOG_ERROR, "--metrics %s: give HOST:PORT, PORT from 0 to 65535, such as 127.0.0.1:9808",
         hostport);
    return false;
  }
  char host[256];
  const char *h = hostport;
  size_t hlen = (size_t)(colon - hostport);
  if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
    h++;
    hlen -= 2;
  }
  snprintf(host, sizeof host, "%.*s", (int)hlen, h);
  struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
  struct addrinfo *ai = NULL;
  int rc = getaddrinfo(host, colon + 1, &hints, &ai);
  if (rc != 0) {
    dlog(CT_LOG_ERROR, "--metrics %s: %s", hostport, gai_strerror(rc));
    return false;
  }
  memcpy(sa, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(ai);
  return true;
}

int prom_serve(prom_t *p, const char *hostport, int *port) {
  struct sockaddr_storage sa = {0};
  if (!parse_address(hostport, &sa))
    return -1;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (sa.ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  p->http = MHD_start_daemon(flags, 0, NULL, NULL, on_request, p, MHD_OPTION_SOCK_ADDR,
                             (struct sockaddr *)&sa, MHD_OPTION_END);
  if (!p->http) {
    dlog(CT_LOG_ERROR, "--metrics %s: cannot listen there (in use, or not this host's)",
         hostport);
    return -1;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(p->http, MHD_DAEMON_INFO_BIND_PORT);
  *port = info ? info->port : 0;
  return 0;
}

void prom_free(prom_t *p) {
  if (!p)
    return;
  if (p->http)
    MHD_stop_daemon(p->http);
  while (p->series) {
    series_t *s = p->series;
    p->series = s->next;
    free(s);
  }
  pthread_mutex_destroy(&p->lock);
  free(p);
}
