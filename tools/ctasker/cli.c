/* What the subcommands share: the common options, connecting with a
 * message that says why it failed, and printing.
 *
 * An operator command is short-lived: it starts a supervisor of its own
 * (ct_broker_new needs one), makes one broker handle, runs one or a few
 * calls and exits. The library never prints: its log lines come through a
 * callback, and while connecting the last error line is kept so that a
 * failure can say why in one line rather than as a code.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_URL "redis://127.0.0.1:6379"

void cli_common_init(cli_common_t *c) {
  const char *env = getenv("CTASKER_URL");
  *c = (cli_common_t){env && *env ? env : DEFAULT_URL, NULL, NULL, 5.0, false};
}

bool cli_common_option(cli_common_t *c, int opt, const char *arg) {
  switch (opt) {
  case OPT_URL:
    c->url = arg;
    return true;
  case OPT_NS:
    c->ns = arg;
    return true;
  case OPT_QUEUE:
    if (!c->queue)
      c->queue = arg;
    return true;
  case OPT_JSON:
    c->json = true;
    return true;
  case OPT_REDIS_TIMEOUT:
    if (!cli_seconds(arg, &c->timeout) || c->timeout <= 0) {
      cli_error("--redis-timeout: not a number of seconds > 0: '%s'", arg);
      exit(CLI_USAGE);
    }
    return true;
  default:
    return false;
  }
}

void cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("ctasker: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "ctasker %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nTry 'ctasker %s --help'.\n", cmd);
  va_end(ap);
  return CLI_USAGE;
}

bool cli_seconds(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v < 0)
    return false;
  *out = v;
  return true;
}

bool cli_int(const char *s, int lo, int hi, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi)
    return false;
  *out = (int)v;
  return true;
}

json_t *cli_kwargs(const char *cmd, const char *text) {
  json_error_t err;
  json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &err);
  if (!j) {
    cli_usage_error(cmd, "the arguments are not valid JSON: %s (line %d, column %d)", err.text,
                    err.line, err.column);
    return NULL;
  }
  if (!json_is_object(j)) {
    json_decref(j);
    cli_usage_error(cmd, "the arguments must be a JSON object, such as '{\"a\": 1}'");
    return NULL;
  }
  return j;
}

/* The handles' log: the last error line is kept, for a failed connect's
 * message; every line goes on to the command's own log, if it has one (the
 * same for all its handles, set before the first). */
typedef struct {
  pthread_mutex_t lock;
  char last[512];
  ct_log_fn forward;
  void *forward_data;
} connect_log_t;

static connect_log_t connect_log = {PTHREAD_MUTEX_INITIALIZER, "", NULL, NULL};

static void keep_error(int level, const char *msg, void *data) {
  (void)data;
  pthread_mutex_lock(&connect_log.lock);
  if (level >= CT_LOG_ERROR)
    snprintf(connect_log.last, sizeof connect_log.last, "%s", msg);
  ct_log_fn forward = connect_log.forward;
  void *forward_data = connect_log.forward_data;
  pthread_mutex_unlock(&connect_log.lock);
  if (forward)
    forward(level, msg, forward_data);
}

static void errors_to_stderr(int level, const char *msg, void *data) {
  (void)data;
  if (level >= CT_LOG_ERROR)
    cli_error("%s", msg);
}

ct_supervisor_t *cli_supervisor(void) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 2;
  o.log = errors_to_stderr;
  ct_supervisor_t *sup = NULL;
  int rc = ct_supervisor_new(&o, &sup);
  if (rc == 0 && (rc = ct_supervisor_start(sup)) != 0) {
    ct_supervisor_free(sup);
    sup = NULL;
  }
  if (rc != 0)
    cli_error("cannot start: %s", ct_strerror(rc));
  return sup;
}

/* The URL without its password, for messages. */
static void url_display(const char *url, char *buf, size_t size) {
  const char *scheme = strstr(url, "://");
  const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
  const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
  if (!at || (slash && slash < at && strncmp(url, "unix", 4) != 0)) {
    snprintf(buf, size, "%s", url);
    return;
  }
  snprintf(buf, size, "%.*s://***@%s", (int)(scheme - url), url, at + 1);
}

/* The reason in a connection log line "redis <url>: <why>", lower-cased
 * first letter, as "connection refused". */
static const char *reason_of(char *line) {
  char *why = strncmp(line, "redis ", 6) == 0 ? strstr(line, ": ") : NULL;
  why = why ? why + 2 : line;
  if (strncmp(why, "cannot connect: ", 16) == 0)
    why += 16;
  if (*why && isupper((unsigned char)why[0]) && islower((unsigned char)why[1]))
    why[0] = (char)tolower((unsigned char)why[0]);
  return *why ? why : "no answer";
}

int cli_connect(const cli_common_t *c, ct_supervisor_t *sup, const char *queue,
                ct_log_fn log, void *log_data, ct_broker_t **out) {
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = c->url;
  o.ns = c->ns;
  o.queue = queue ? queue : c->queue;
  o.connect_timeout = c->timeout;
  o.command_timeout = c->timeout;
  o.log = keep_error;
  pthread_mutex_lock(&connect_log.lock);
  connect_log.last[0] = '\0';
  connect_log.forward = log;
  connect_log.forward_data = log_data;
  pthread_mutex_unlock(&connect_log.lock);
  int rc = ct_broker_new(sup, &o, out);
  if (rc == 0)
    return CLI_OK;
  char shown[512];
  url_display(c->url, shown, sizeof shown);
  if (rc == CT_EINVAL) {
    cli_error("bad --url, --namespace or --queue: '%s' (%s)", shown, ct_strerror(rc));
    return CLI_USAGE;
  }
  pthread_mutex_lock(&connect_log.lock);
  cli_error("cannot connect to %s: %s", shown,
            rc == CT_ETIMEDOUT ? reason_of(connect_log.last) : ct_strerror(rc));
  pthread_mutex_unlock(&connect_log.lock);
  return CLI_REDIS;
}

int cli_open(const cli_common_t *c, ct_supervisor_t **sup, ct_broker_t **b) {
  *b = NULL;
  *sup = cli_supervisor();
  return *sup ? cli_connect(c, *sup, NULL, NULL, NULL, b) : CLI_START;
}

void cli_close(ct_supervisor_t *sup, ct_broker_t *b) {
  ct_broker_free(b);
  if (sup) {
    ct_supervisor_stop(sup, CT_STOP_CANCEL, -1);
    ct_supervisor_free(sup);
  }
}

int cli_broker_error(const char *what, int rc) {
  cli_error("%s: %s", what, ct_strerror(rc));
  return rc == CT_ENOENT ? CLI_NOT_FOUND : rc == CT_EINVAL ? CLI_USAGE : CLI_REDIS;
}

void cli_print_json(const json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
  if (s)
    puts(s);
  free(s);
}

const char *cli_time(double t, char *buf, size_t size) {
  if (t <= 0)
    return "-";
  time_t s = (time_t)t;
  struct tm tm;
  gmtime_r(&s, &tm);
  strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}
