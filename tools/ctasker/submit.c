/* `ctasker submit` and `ctasker call`: one task by name, from the command
 * line. Both parse the same options; submit prints the id, call waits for
 * the result (ct_broker_call(), a blocking read with a deadline). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli.h"

/* The options submit and call share. */
#define TASK_OPTIONS_HELP                                                                 \
  "  --priority P         critical, high, normal, low, or 0..255 (default: normal)\n"   \
  "  --delay S            run no sooner than S seconds from now\n"                      \
  "  --at TIME            run no sooner than TIME: Unix seconds, or UTC as\n"            \
  "                       2026-01-02T03:04:05Z\n"                                       \
  "  --attempts N         runs a failing task may have in all (default: 1)\n"           \
  "  --backoff S          seconds before the first retry, doubled after (default: 1)\n" \
  "  --run-timeout S      seconds one run may take (default: no limit)\n"               \
  "  --ttl S              seconds the record and result are kept (default: 86400)\n" CLI_COMMON_HELP

static const char submit_help[] =
    "Usage: ctasker submit NAME [JSON] [OPTIONS]\n"
    "\n"
    "Submit the task NAME with keyword arguments JSON (an object; default {})\n"
    "and print its id. A name no worker has registered in the queue is refused.\n"
    "\n"
    "Options:\n"
    "  --key KEY            idempotency key: while a task submitted with KEY is\n"
    "                       known, its id is returned and nothing is submitted\n"
    TASK_OPTIONS_HELP
    "\n"
    "Exit status: 0 submitted, 2 usage, bad JSON or options the library refuses\n"
    "(such as both --delay and --at), 3 Redis error, 5 name not registered.\n";

static const char call_help[] =
    "Usage: ctasker call NAME [JSON] [OPTIONS]\n"
    "\n"
    "Run the task NAME with keyword arguments JSON (an object; default {}) on\n"
    "some worker, wait for it and print its result (or its exception).\n"
    "\n"
    "Options:\n"
    "  --timeout S          seconds to wait (default: 30); a worker that takes the\n"
    "                       task later does not run it\n"
    TASK_OPTIONS_HELP
    "\n"
    "Exit status: 0 result, 1 the task failed (its exception is printed), 2 usage\n"
    "or bad JSON, 3 Redis error, 4 timeout, 5 name not registered.\n";

enum {
  OPT_PRIORITY = OPT_FIRST_OWN, OPT_TTL, OPT_TIMEOUT, OPT_DELAY, OPT_AT, OPT_KEY, OPT_ATTEMPTS,
  OPT_BACKOFF, OPT_RUN_TIMEOUT
};

typedef struct {
  cli_common_t c;
  const char *name;
  json_t *kwargs;
  ct_broker_submit_opts_t so;
  double timeout;
} task_args_t;

static bool parse_priority(const char *s, int *out) {
  static const struct {
    const char *name;
    int value;
  } classes[] = {{"critical", CT_PRIORITY_CRITICAL}, {"high", CT_PRIORITY_HIGH},
                 {"normal", CT_PRIORITY_NORMAL},     {"low", CT_PRIORITY_LOW}};
  for (size_t i = 0; i < sizeof classes / sizeof *classes; i++)
    if (strcasecmp(s, classes[i].name) == 0) {
      *out = classes[i].value;
      return true;
    }
  return cli_int(s, CT_PRIORITY_CRITICAL, CT_PRIORITY_MAX, out);
}

/* "2026-01-02T03:04:05Z" (UTC) or Unix seconds. */
static bool parse_time(const char *s, double *out) {
  struct tm tm = {0};
  const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (end && (*end == '\0' || strcmp(end, "Z") == 0)) {
    *out = (double)timegm(&tm);
    return true;
  }
  return cli_seconds(s, out) && *out > 0;
}

/* The options of delays, keys and retries; false after a message. */
static bool parse_timing(const char *cmd, int o, const char *arg, ct_broker_submit_opts_t *so) {
  bool ok = true;
  if (o == OPT_DELAY)
    ok = cli_seconds(arg, &so->delay);
  else if (o == OPT_AT)
    ok = parse_time(arg, &so->eta);
  else if (o == OPT_KEY)
    so->key = arg;
  else if (o == OPT_ATTEMPTS)
    ok = cli_int(arg, 1, 1000000, &so->max_attempts);
  else if (o == OPT_BACKOFF)
    ok = cli_seconds(arg, &so->backoff);
  else if (o == OPT_RUN_TIMEOUT)
    ok = cli_seconds(arg, &so->timeout);
  if (!ok)
    cli_usage_error(cmd, "bad value for this option: '%s'", arg);
  return ok;
}

/* Parse; returns -1 to go on, else the exit code. */
static int parse(const char *cmd, const char *help, int argc, char **argv, task_args_t *t) {
  static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                       {"priority", required_argument, NULL, OPT_PRIORITY},
                                       {"ttl", required_argument, NULL, OPT_TTL},
                                       {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                       {"delay", required_argument, NULL, OPT_DELAY},
                                       {"at", required_argument, NULL, OPT_AT},
                                       {"key", required_argument, NULL, OPT_KEY},
                                       {"attempts", required_argument, NULL, OPT_ATTEMPTS},
                                       {"backoff", required_argument, NULL, OPT_BACKOFF},
                                       {"run-timeout", required_argument, NULL, OPT_RUN_TIMEOUT},
                                       {NULL, 0, NULL, 0}};
  cli_common_init(&t->c);
  t->so = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  t->timeout = 30;
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (cli_common_option(&t->c, o, optarg))
      continue;
    if (o == 'h') {
      fputs(help, stdout);
      return CLI_OK;
    }
    if (o == OPT_PRIORITY && !parse_priority(optarg, &t->so.priority))
      return cli_usage_error(cmd, "--priority: not a class or 0..255: '%s'", optarg);
    if (o == OPT_TTL && (!cli_seconds(optarg, &t->so.result_ttl) || t->so.result_ttl == 0))
      return cli_usage_error(cmd, "--ttl: not a number of seconds > 0: '%s'", optarg);
    if (o == OPT_KEY && strcmp(cmd, "call") == 0)
      return cli_usage_error(cmd, "--key: a call is answered once, to its caller; use submit");
    if (o >= OPT_DELAY && !parse_timing(cmd, o, optarg, &t->so))
      return CLI_USAGE;
    if (o == OPT_TIMEOUT && (strcmp(cmd, "call") != 0 || !cli_seconds(optarg, &t->timeout) ||
                             t->timeout <= 0 || t->timeout > 86400))
      return cli_usage_error(cmd, "--timeout: not a number of seconds in (0, 86400]: '%s'",
                             optarg);
    if (o == '?')
      return cli_usage_error(cmd, "bad option");
  }
  if (optind >= argc || argc - optind > 2)
    return cli_usage_error(cmd, "give a task NAME and at most one JSON argument");
  t->name = argv[optind];
  t->kwargs = cli_kwargs(cmd, optind + 1 < argc ? argv[optind + 1] : "{}");
  return t->kwargs ? -1 : CLI_USAGE;
}

int cmd_submit(int argc, char **argv) {
  task_args_t t;
  int rc = parse("submit", submit_help, argc, argv, &t);
  if (rc >= 0)
    return rc;
  ct_supervisor_t *sup;
  ct_broker_t *b;
  rc = cli_open(&t.c, &sup, &b);
  char id[CT_BROKER_ID_SIZE];
  int err = rc == CLI_OK ? ct_broker_submit(b, t.name, t.kwargs, &t.so, id) : 0;
  if (rc == CLI_OK && err == CT_ENOENT) {
    cli_error("no worker has registered '%s' in this queue: nothing submitted", t.name);
    rc = CLI_NOT_FOUND;
  } else if (rc == CLI_OK && err != 0) {
    rc = cli_broker_error("submit", err);
  } else if (rc == CLI_OK && t.c.json) {
    json_t *j = json_pack("{s:s}", "id", id);
    cli_print_json(j);
    json_decref(j);
  } else if (rc == CLI_OK) {
    puts(id);
  }
  cli_close(sup, b);
  json_decref(t.kwargs);
  return rc;
}

static int print_result(const cli_common_t *c, json_t *result) {
  bool failed = ct_result_is_error(result);
  if (c->json) {
    json_t *j = json_pack("{s:s,s:O}", "status", failed ? "failed" : "completed",
                          failed ? "error" : "result", result ? result : json_null());
    cli_print_json(j);
    json_decref(j);
  } else {
    cli_print_json(result ? result : json_null());
  }
  return failed ? CLI_TASK_FAILED : CLI_OK;
}

int cmd_call(int argc, char **argv) {
  task_args_t t;
  int rc = parse("call", call_help, argc, argv, &t);
  if (rc >= 0)
    return rc;
  ct_supervisor_t *sup;
  ct_broker_t *b;
  rc = cli_open(&t.c, &sup, &b);
  json_t *result = NULL;
  int err = rc == CLI_OK ? ct_broker_call(b, t.name, t.kwargs, &t.so, t.timeout, &result) : 0;
  if (rc == CLI_OK && err == CT_ENOENT) {
    cli_error("no worker has registered '%s' in this queue: nothing submitted", t.name);
    rc = CLI_NOT_FOUND;
  } else if (rc == CLI_OK && err == CT_ETIMEDOUT) {
    cli_error("call %s: no result within %g s (the task may still run)", t.name, t.timeout);
    rc = CLI_TIMEOUT;
  } else if (rc == CLI_OK && err != 0) {
    rc = cli_broker_error("call", err);
  } else if (rc == CLI_OK) {
    rc = print_result(&t.c, result);
  }
  json_decref(result);
  cli_close(sup, b);
  json_decref(t.kwargs);
  return rc;
}
