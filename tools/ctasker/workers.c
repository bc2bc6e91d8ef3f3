/* `ctasker workers`: the queue's live workers, from their liveness
 * records (ct_broker_workers(): O(live workers)). */
#include <string.h>

#include "cli.h"

static const char help[] =
    "Usage: ctasker workers [OPTIONS]\n"
    "\n"
    "List the queue's live workers: consumer, host, pid, concurrency, tasks in\n"
    "flight, lease, when its record expires, and the names it serves.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP
    "\n"
    "Exit status: 0 shown, 2 usage, 3 Redis error.\n";

static void print_table(const json_t *l) {
  printf("%-28s  %-16s  %7s  %5s  %9s  %6s  %-19s  %s\n", "CONSUMER", "HOST", "PID", "CONC",
         "IN_FLIGHT", "LEASE", "EXPIRES (UTC)", "NAMES");
  size_t i;
  const json_t *w;
  json_array_foreach(l, i, w) {
    char names[256] = "", when[32];
    size_t j;
    const json_t *n;
    json_array_foreach(json_object_get(w, "names"), j, n) {
      size_t used = strlen(names);
      snprintf(names + used, sizeof names - used, "%s%s", j ? "," : "", json_string_value(n));
    }
    printf("%-28s  %-16s  %7lld  %5lld  %9lld  %6.1f  %-19s  %s\n",
           json_string_value(json_object_get(w, "consumer")) ?: "-",
           json_string_value(json_object_get(w, "host")) ?: "-",
           json_integer_value(json_object_get(w, "pid")),
           json_integer_value(json_object_get(w, "concurrency")),
           json_integer_value(json_object_get(w, "in_flight")),
           json_number_value(json_object_get(w, "lease")),
           cli_time(json_number_value(json_object_get(w, "expires")), when, sizeof when), names);
  }
}

int cmd_workers(int argc, char **argv) {
  static const struct option opts[] = {CLI_COMMON_OPTIONS, {NULL, 0, NULL, 0}};
  cli_common_t c;
  cli_common_init(&c);
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (cli_common_option(&c, o, optarg))
      continue;
    if (o == 'h') {
      fputs(help, stdout);
      return CLI_OK;
    }
    return cli_usage_error("workers", "bad option");
  }
  if (optind < argc)
    return cli_usage_error("workers", "unexpected argument '%s'", argv[optind]);
  ct_supervisor_t *sup;
  ct_broker_t *b;
  int rc = cli_open(&c, &sup, &b);
  json_t *l = NULL;
  int err = rc == CLI_OK ? ct_broker_workers(b, &l) : 0;
  if (err != 0)
    rc = cli_broker_error("workers", err);
  else if (rc == CLI_OK && c.json)
    cli_print_json(l);
  else if (rc == CLI_OK)
    print_table(l);
  json_decref(l);
  cli_close(sup, b);
  return rc;
}
