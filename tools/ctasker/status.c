/* `ctasker status` and `ctasker wait`: task records by id. wait reads each
 * record again every quarter second until it is terminal (one HGETALL per
 * task and round: no scan), with a progress bar on a terminal and a line
 * per ended task otherwise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char status_help[] =
    "Usage: ctasker status ID... [OPTIONS]\n"
    "\n"
    "Show each task's status, attempts, times and result or exception.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP
    "\n"
    "Exit status: 0 all found, 2 usage, 3 Redis error, 5 a task is unknown (or\n"
    "its result has expired).\n";

static const char wait_help[] =
    "Usage: ctasker wait ID... [OPTIONS]\n"
    "\n"
    "Wait until every task has ended: a progress bar on a terminal, else a line\n"
    "per task as it ends.\n"
    "\n"
    "Options:\n"
    "  --timeout S          give up after S seconds (default: wait for ever)\n" CLI_COMMON_HELP
    "\n"
    "Exit status: 0 all completed, 1 a task failed, is dead or expired, 2 usage, 3 Redis\n"
    "error, 4 timeout, 5 a task is unknown.\n";

enum { OPT_TIMEOUT = OPT_FIRST_OWN };

/* Parse; returns -1 to go on, else the exit code; *first: the first id. */
static int parse(const char *cmd, const char *help, int argc, char **argv, cli_common_t *c,
                 double *timeout, int *first) {
  static const struct option opts[] = {
      CLI_COMMON_OPTIONS, {"timeout", required_argument, NULL, OPT_TIMEOUT}, {NULL, 0, NULL, 0}};
  cli_common_init(c);
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (cli_common_option(c, o, optarg))
      continue;
    if (o == 'h') {
      fputs(help, stdout);
      return CLI_OK;
    }
    if (o == OPT_TIMEOUT && (!timeout || !cli_seconds(optarg, timeout)))
      return cli_usage_error(cmd, "--timeout: not a number of seconds: '%s'", optarg);
    if (o == '?')
      return cli_usage_error(cmd, "bad option");
  }
  if (optind >= argc)
    return cli_usage_error(cmd, "give at least one task ID");
  *first = optind;
  return -1;
}

static json_t *info_json(const char *id, const ct_broker_info_t *in) {
  return json_pack("{s:s,s:s,s:i,s:f,s:f,s:f,s:O}", "id", id, "status",
                   ct_broker_status_name(in->status), "attempts", in->attempts, "created",
                   in->created, "started", in->started, "finished", in->finished, "result",
                   in->result ? in->result : json_null());
}

static void print_row(const char *id, const ct_broker_info_t *in) {
  char c[32], s[32], f[32];
  char *r = in->result ? json_dumps(in->result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  printf("%-36s  %-9s  %8d  %-19s  %-19s  %-19s  %.60s\n", id, ct_broker_status_name(in->status),
         in->attempts, cli_time(in->created, c, sizeof c), cli_time(in->started, s, sizeof s),
         cli_time(in->finished, f, sizeof f), r ? r : "-");
  free(r);
}

int cmd_status(int argc, char **argv) {
  cli_common_t c;
  int first;
  int rc = parse("status", status_help, argc, argv, &c, NULL, &first);
  if (rc >= 0)
    return rc;
  ct_supervisor_t *sup;
  ct_broker_t *b;
  rc = cli_open(&c, &sup, &b);
  json_t *all = json_array();
  if (rc == CLI_OK && !c.json)
    printf("%-36s  %-9s  %8s  %-19s  %-19s  %-19s  %s\n", "ID", "STATUS", "ATTEMPTS",
           "CREATED (UTC)", "STARTED", "FINISHED", "RESULT");
  bool opened = rc == CLI_OK; /* else cli_open() said why (a bad --url...) */
  for (int i = first; opened && rc != CLI_REDIS && i < argc; i++) {
    ct_broker_info_t in;
    int err = ct_broker_get(b, argv[i], &in);
    if (err == CT_ENOENT || err == CT_EINVAL) {
      cli_error("task %s: %s", argv[i],
                err == CT_ENOENT ? "unknown (never submitted, or its result has expired)"
                                 : "not a task id (a UUID) or a malformed record");
      rc = err == CT_ENOENT ? CLI_NOT_FOUND : CLI_USAGE;
    } else if (err != 0) {
      rc = cli_broker_error(argv[i], err);
    } else {
      if (c.json)
        json_array_append_new(all, info_json(argv[i], &in));
      else
        print_row(argv[i], &in);
      json_decref(in.result);
    }
  }
  if (c.json && opened && rc != CLI_REDIS)
    cli_print_json(all);
  json_decref(all);
  cli_close(sup, b);
  return rc;
}

/* --- wait --------------------------------------------------------------- */

static void progress(int done, int total) {
  enum { WIDTH = 30 };
  int fill = total ? done * WIDTH / total : WIDTH;
  fprintf(stderr, "\r[%.*s%*s] %d/%d ended", fill, "##############################",
          WIDTH - fill, "", done, total);
  fflush(stderr);
}

static bool terminal(ct_broker_status_t s) {
  return s == CT_BROKER_COMPLETED || s == CT_BROKER_FAILED || s == CT_BROKER_DEAD ||
         s == CT_BROKER_EXPIRED;
}

/* One round over the tasks not yet ended; returns an exit code if one must
 * end the wait, else -1. */
static int wait_round(ct_broker_t *b, const cli_common_t *c, char **ids, int n, bool *ended,
                      int *n_ended, int *worst, bool bar) {
  for (int i = 0; i < n; i++) {
    if (ended[i])
      continue;
    ct_broker_info_t in;
    int err = ct_broker_get(b, ids[i], &in);
    if (err == CT_ENOENT) {
      cli_error("task %s: unknown (never submitted, or its result has expired)", ids[i]);
      return CLI_NOT_FOUND;
    }
    if (err != 0)
      return cli_broker_error(ids[i], err);
    if (terminal(in.status)) {
      ended[i] = true;
      ++*n_ended;
      if (in.status != CT_BROKER_COMPLETED)
        *worst = CLI_TASK_FAILED;
      if (c->json) {
        json_t *j = info_json(ids[i], &in);
        char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        puts(s ? s : "{}");
        free(s);
        json_decref(j);
      } else if (!bar) {
        printf("%s %s\n", ids[i], ct_broker_status_name(in.status));
      }
      fflush(stdout);
    }
    json_decref(in.result);
  }
  return -1;
}

int cmd_wait(int argc, char **argv) {
  cli_common_t c;
  int first;
  double timeout = INFINITY;
  int rc = parse("wait", wait_help, argc, argv, &c, &timeout, &first);
  if (rc >= 0)
    return rc;
  ct_supervisor_t *sup;
  ct_broker_t *b;
  rc = cli_open(&c, &sup, &b);
  int n = argc - first, n_ended = 0, worst = CLI_OK;
  bool *ended = calloc((size_t)n, sizeof *ended);
  if (!ended && rc == CLI_OK) {
    cli_error("out of memory");
    rc = CLI_START;
  }
  bool bar = !c.json && isatty(STDERR_FILENO);
  double end = ct_now() + timeout;
  while (rc == CLI_OK && n_ended < n) {
    int r = wait_round(b, &c, argv + first, n, ended, &n_ended, &worst, bar);
    if (bar)
      progress(n_ended, n);
    if (r >= 0)
      rc = r;
    else if (n_ended < n && ct_now() >= end)
      rc = CLI_TIMEOUT;
    else if (n_ended < n)
      nanosleep(&(struct timespec){0, 250000000}, NULL);
  }
  if (bar)
    fputc('\n', stderr);
  if (rc == CLI_TIMEOUT)
    cli_error("%d of %d tasks still not ended after %g s", n - n_ended, n, timeout);
  free(ended);
  cli_close(sup, b);
  return rc == CLI_OK ? worst : rc;
}
