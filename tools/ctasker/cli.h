/* What the `ctasker` subcommands share: exit codes, the common options,
 * connecting, logging and printing. */
#ifndef CTASKER_CLI_H
#define CTASKER_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include <ctasker.h>

/* Exit codes (the man page's EXIT STATUS). */
enum {
  CLI_OK = 0,
  CLI_TASK_FAILED = 1, /* an error result, a failed or dead task; a fast stop */
  CLI_USAGE = 2,       /* bad command line, option or JSON */
  CLI_REDIS = 3,       /* Redis unreachable, or it refused a command */
  CLI_TIMEOUT = 4,     /* a call or wait timed out; a drain left tasks pending */
  CLI_NOT_FOUND = 5,   /* no such task, dead letter or registered name */
  CLI_START = 6        /* the worker could not start (plugin, supervisor, Redis policy) */
};

/* The options every subcommand takes. */
typedef struct cli_common {
  const char *url;   /* --url, else $CTASKER_URL, else redis://127.0.0.1:6379 */
  const char *ns;    /* --namespace */
  const char *queue; /* --queue (the first one, for the operator commands) */
  double timeout;    /* --redis-timeout: connect and command timeout */
  bool json;         /* --json */
} cli_common_t;

/* getopt_long codes of the common options, and their table entries (to
 * put at the start of each subcommand's table). */
enum { OPT_URL = 1000, OPT_NS, OPT_QUEUE, OPT_JSON, OPT_REDIS_TIMEOUT, OPT_FIRST_OWN };
#define CLI_COMMON_OPTIONS                                                     \
  {"url", required_argument, NULL, OPT_URL},                                   \
  {"namespace", required_argument, NULL, OPT_NS},                              \
  {"queue", required_argument, NULL, OPT_QUEUE},                               \
  {"json", no_argument, NULL, OPT_JSON},                                       \
  {"redis-timeout", required_argument, NULL, OPT_REDIS_TIMEOUT},               \
  {"help", no_argument, NULL, 'h'}

/* The help lines of the common options. */
#define CLI_COMMON_HELP                                                        \
  "  --url URL            redis://[user:password@]host[:port][/db] or\n"       \
  "                       unix:///path/to/socket[?db=N]\n"                     \
  "                       (default: $CTASKER_URL, else redis://127.0.0.1:6379)\n" \
  "  --namespace NS       key namespace (default: ctasker)\n"                  \
  "  --queue NAME         queue (default: default)\n"                          \
  "  --redis-timeout S    seconds to connect and for each reply (default: 5)\n" \
  "  --json               print JSON for scripts\n"                            \
  "  -h, --help           this help\n"

void cli_common_init(cli_common_t *c);

/* Handle a common option; returns true if opt was one. An invalid value
 * exits with CLI_USAGE. */
bool cli_common_option(cli_common_t *c, int opt, const char *arg);

/* Print to stderr "ctasker: <message>\n". */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print "ctasker CMD: <message>" and a pointer to --help; returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse a number of seconds (>= 0, finite); false if it is not one. */
bool cli_seconds(const char *s, double *out);

/* Parse an int in [lo, hi]; false if it is not one. */
bool cli_int(const char *s, int lo, int hi, int *out);

/* Parse JSON kwargs (an object); NULL (after a message) if it is not one. */
json_t *cli_kwargs(const char *cmd, const char *text);

/* Start a supervisor for an operator command (its log: errors only). */
ct_supervisor_t *cli_supervisor(void);

/* Connect to c's queue; on failure print why ("cannot connect to URL:
 * connection refused") and return the exit code (CLI_REDIS). log/log_data:
 * the handle's own log callback after the connect (NULL: errors to stderr). */
int cli_connect(const cli_common_t *c, ct_supervisor_t *sup, const char *queue,
                ct_log_fn log, void *log_data, ct_broker_t **out);

/* What an operator command opens: its supervisor and one handle on c's
 * queue. Returns CLI_OK, or the exit code after a message. */
int cli_open(const cli_common_t *c, ct_supervisor_t **sup, ct_broker_t **b);
void cli_close(ct_supervisor_t *sup, ct_broker_t *b);

/* The exit code and message for a failed broker call. */
int cli_broker_error(const char *what, int rc);

/* Print JSON (indented) to stdout with a newline. */
void cli_print_json(const json_t *j);

/* A Unix time as "2026-01-02 03:04:05" (UTC) into buf; "-" for 0. */
const char *cli_time(double t, char *buf, size_t size);

/* Subcommands: argc/argv start at the subcommand's name. */
int cmd_worker(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_call(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_wait(int argc, char **argv);
int cmd_queues(int argc, char **argv);
int cmd_dead(int argc, char **argv);
int cmd_workers(int argc, char **argv);

#endif
