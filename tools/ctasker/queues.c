/* `ctasker queues`: a queue's counts per priority level, from
 * ct_broker_queue_stats() (one script of O(levels) commands: safe to run
 * against a busy Redis, and to repeat with --watch). */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
    "Usage: ctasker queues [OPTIONS]\n"
    "\n"
    "Show the queue per priority level: ready (not yet taken), pending (taken,\n"
    "not yet acknowledged), oldest pending age, completed, failed, retried and\n"
    "expired counters; then the delayed tasks, dead letters and live workers.\n"
    "Reads O(levels) keys: never a scan.\n"
    "\n"
    "Options:\n"
    "  --watch[=S]          show again every S seconds (default: 2; 0.1 to 86400) until\n"
    "                       interrupted\n" CLI_COMMON_HELP
    "\n"
    "Exit status: 0 shown, 2 usage, 3 Redis error.\n";

enum { OPT_WATCH = OPT_FIRST_OWN };

static long long get_int(const json_t *o, const char *k) {
  return json_integer_value(json_object_get(o, k));
}

static void print_table(const json_t *s) {
  printf("queue %s\n", json_string_value(json_object_get(s, "queue")));
  printf("%-9s %10s %10s %10s %12s %10s %10s %10s\n", "LEVEL", "READY", "PENDING",
         "OLDEST(s)", "COMPLETED", "FAILED", "RETRIED", "EXPIRED");
  size_t i;
  const json_t *l;
  json_array_foreach(json_object_get(s, "levels"), i, l) {
    printf("%-9s %10lld %10lld %10.1f %12lld %10lld %10lld %10lld\n",
           json_string_value(json_object_get(l, "level")), get_int(l, "ready"),
           get_int(l, "pending"), json_number_value(json_object_get(l, "oldest_pending_age")),
           get_int(l, "completed"), get_int(l, "failed"), get_int(l, "retried"),
           get_int(l, "expired"));
  }
  printf("delayed: %lld   dead letters: %lld   live workers: %lld\n", get_int(s, "delayed"),
         get_int(s, "dead"), get_int(s, "workers"));
}

int cmd_queues(int argc, char **argv) {
  static const struct option opts[] = {
      CLI_COMMON_OPTIONS, {"watch", optional_argument, NULL, OPT_WATCH}, {NULL, 0, NULL, 0}};
  cli_common_t c;
  cli_common_init(&c);
  double watch = 0;
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (cli_common_option(&c, o, optarg))
      continue;
    if (o == 'h') {
      fputs(help, stdout);
      return CLI_OK;
    }
    if (o == OPT_WATCH && !optarg)
      watch = 2;
    else if (o == OPT_WATCH && (!cli_seconds(optarg, &watch) || watch < 0.1 || watch > 86400))
      return cli_usage_error("queues", "--watch: not a number of seconds from 0.1 to 86400: '%s'",
                             optarg);
    if (o == '?')
      return cli_usage_error("queues", "bad option");
  }
  if (optind < argc)
    return cli_usage_error("queues", "unexpected argument '%s'", argv[optind]);
  ct_supervisor_t *sup;
  ct_broker_t *b;
  int rc = cli_open(&c, &sup, &b);
  bool clear = watch > 0 && !c.json && isatty(STDOUT_FILENO);
  while (rc == CLI_OK) {
    json_t *s;
    int err = ct_broker_queue_stats(b, &s);
    if (err != 0) {
      rc = cli_broker_error("queues", err);
      break;
    }
    if (clear)
      fputs("\033[H\033[2J", stdout);
    if (c.json)
      cli_print_json(s);
    else
      print_table(s);
    fflush(stdout);
    json_decref(s);
    if (watch <= 0)
      break;
    struct timespec t = {(time_t)watch, (long)((watch - (double)(time_t)watch) * 1e9)};
    nanosleep(&t, NULL);
  }
  cli_close(sup, b);
  return rc;
}
