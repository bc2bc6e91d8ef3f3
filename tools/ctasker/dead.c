/* `ctasker dead list|show|retry|purge`: the queue's dead letters, through
 * the operator API (broker-admin.h). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char help[] =
    "Usage: ctasker dead list [--after ENTRY] [--count N] [OPTIONS]\n"
    "       ctasker dead show ENTRY [OPTIONS]\n"
    "       ctasker dead retry ENTRY... [OPTIONS]\n"
    "       ctasker dead purge (ENTRY... | --all) [OPTIONS]\n"
    "\n"
    "The queue's dead letters: malformed entries and tasks delivered too often.\n"
    "list shows them oldest first (ENTRY is a dead-letter id, as list shows);\n"
    "show prints one whole; retry submits each again (same task id, back in its\n"
    "stream, its record queued again); purge deletes them.\n"
    "\n"
    "Options:\n"
    "  --after ENTRY        list: start after this entry\n"
    "  --count N            list: at most N (1..1000, default: 100)\n"
    "  --all                purge: every dead letter of the queue\n" CLI_COMMON_HELP
    "\n"
    "Exit status: 0 done, 2 usage (or an entry that cannot be retried), 3 Redis\n"
    "error, 5 no such entry.\n";

enum { OPT_AFTER = OPT_FIRST_OWN, OPT_COUNT, OPT_ALL };

typedef struct {
  cli_common_t c;
  const char *after;
  int count;
  bool all;
} dead_args_t;

static const char *str(const json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "-";
}

static int list(ct_broker_t *b, const dead_args_t *a) {
  json_t *l;
  int err = ct_broker_dead_list(b, a->after, (size_t)a->count, &l);
  if (err != 0)
    return cli_broker_error("dead list", err);
  if (a->c.json) {
    cli_print_json(l);
  } else {
    printf("%-22s  %-8s  %-36s  %-20s  %s\n", "ENTRY", "STREAM", "TASK", "NAME", "REASON");
    size_t i;
    const json_t *d;
    json_array_foreach(l, i, d) {
      printf("%-22s  %-8s  %-36s  %-20s  %s\n", str(d, "dead_entry"), str(d, "stream"), str(d, "id"),
             str(d, "name"), str(d, "reason"));
    }
  }
  json_decref(l);
  return CLI_OK;
}

static int entry_error(const char *what, const char *entry, int err) {
  if (err == CT_ENOENT) {
    cli_error("%s %s: no such dead letter", what, entry);
    return CLI_NOT_FOUND;
  }
  if (err == CT_EINVAL) {
    cli_error("%s %s: not a dead-letter entry id, or an entry a worker would bury again", what,
              entry);
    return CLI_USAGE;
  }
  return cli_broker_error(what, err);
}

static int show(ct_broker_t *b, const dead_args_t *a, const char *entry) {
  json_t *d;
  int err = ct_broker_dead_get(b, entry, &d);
  if (err != 0)
    return entry_error("dead show", entry, err);
  if (a->c.json) {
    cli_print_json(d);
  } else {
    const char *k;
    json_t *v;
    json_object_foreach(d, k, v) { printf("%-10s %s\n", k, json_string_value(v) ?: "-"); }
  }
  json_decref(d);
  return CLI_OK;
}

static int retry(ct_broker_t *b, const dead_args_t *a, char **entries, int n) {
  int rc = CLI_OK;
  for (int i = 0; i < n; i++) {
    char id[CT_BROKER_ID_SIZE];
    int err = ct_broker_dead_retry(b, entries[i], id);
    if (err != 0) {
      rc = entry_error("dead retry", entries[i], err);
      continue;
    }
    if (a->c.json)
      printf("{\"entry\": \"%s\", \"id\": \"%s\"}\n", entries[i], id);
    else
      printf("%s -> task %s queued again\n", entries[i], id);
  }
  return rc;
}

static int purge(ct_broker_t *b, const dead_args_t *a, char **entries, int n) {
  long long total = 0;
  for (int i = 0; i < (a->all ? 1 : n); i++) {
    long long removed;
    int err = ct_broker_dead_purge(b, a->all ? NULL : entries[i], &removed);
    if (err != 0)
      return entry_error("dead purge", a->all ? "--all" : entries[i], err);
    total += removed;
  }
  if (a->c.json)
    printf("{\"removed\": %lld}\n", total);
  else
    printf("%lld dead letters removed\n", total);
  return CLI_OK;
}

/* Parse; returns -1 to go on, else the exit code. */
static int parse(int argc, char **argv, dead_args_t *a) {
  static const struct option opts[] = {CLI_COMMON_OPTIONS,
                                       {"after", required_argument, NULL, OPT_AFTER},
                                       {"count", required_argument, NULL, OPT_COUNT},
                                       {"all", no_argument, NULL, OPT_ALL},
                                       {NULL, 0, NULL, 0}};
  cli_common_init(&a->c);
  a->after = NULL;
  a->count = 100;
  a->all = false;
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (cli_common_option(&a->c, o, optarg))
      continue;
    if (o == 'h') {
      fputs(help, stdout);
      return CLI_OK;
    }
    if (o == OPT_AFTER)
      a->after = optarg;
    if (o == OPT_ALL)
      a->all = true;
    if (o == OPT_COUNT && !cli_int(optarg, 1, 1000, &a->count))
      return cli_usage_error("dead", "--count: not a number in 1..1000: '%s'", optarg);
    if (o == '?')
      return cli_usage_error("dead", "bad option");
  }
  return -1;
}

int cmd_dead(int argc, char **argv) {
  dead_args_t a;
  int rc = parse(argc, argv, &a);
  if (rc >= 0)
    return rc;
  const char *sub = optind < argc ? argv[optind] : "";
  char **rest = argv + optind + 1;
  int n = argc - optind - 1;
  bool ok = (strcmp(sub, "list") == 0 && n == 0) || (strcmp(sub, "show") == 0 && n == 1) ||
            (strcmp(sub, "retry") == 0 && n > 0) ||
            (strcmp(sub, "purge") == 0 && (n > 0) != a.all);
  if (!ok)
    return cli_usage_error("dead", "give list, show ENTRY, retry ENTRY... or purge "
                                   "(ENTRY... | --all)");
  ct_supervisor_t *sup;
  ct_broker_t *b;
  rc = cli_open(&a.c, &sup, &b);
  if (rc == CLI_OK && sub[0] == 'l')
    rc = list(b, &a);
  else if (rc == CLI_OK && sub[0] == 's')
    rc = show(b, &a, rest[0]);
  else if (rc == CLI_OK && sub[0] == 'r')
    rc = retry(b, &a, rest, n);
  else if (rc == CLI_OK)
    rc = purge(b, &a, rest, n);
  cli_close(sup, b);
  return rc;
}
