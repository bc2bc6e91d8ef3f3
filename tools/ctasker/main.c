/* `ctasker`: the Redis mode's command — a worker daemon that serves
 * handlers from plugins, and the operator's tools.
 *
 * One file per subcommand (worker.c, submit.c for submit and call,
 * status.c for status and wait, queues.c, dead.c, workers.c), what they
 * share in cli.c. This file only picks the subcommand.
 */
#include <string.h>

#include "cli.h"

static const char usage[] =
    "Usage: ctasker COMMAND [OPTIONS] [ARGS]\n"
    "\n"
    "Named tasks on Redis: run a worker, submit tasks, inspect queues.\n"
    "\n"
    "Commands:\n"
    "  worker     serve task handlers loaded from plugins\n"
    "  submit     submit a task; print its id\n"
    "  call       run a task and print its result\n"
    "  status     show tasks' status, attempts, times and result\n"
    "  wait       wait for tasks to end\n"
    "  queues     show a queue's counts per priority level\n"
    "  dead       list, show, retry or purge dead letters\n"
    "  workers    list live workers\n"
    "\n"
    "'ctasker COMMAND --help' tells more; 'man 1 ctasker' tells all.\n"
    "Exit status: 0 success, 1 task failed, 2 usage, 3 Redis error,\n"
    "4 timeout, 5 not found, 6 worker could not start.\n";

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
} command_t;

static const command_t commands[] = {
    {"worker", cmd_worker}, {"submit", cmd_submit}, {"call", cmd_call},
    {"status", cmd_status}, {"wait", cmd_wait},     {"queues", cmd_queues},
    {"dead", cmd_dead},     {"workers", cmd_workers},
};

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return CLI_USAGE;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    fputs(usage, stdout);
    return CLI_OK;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("ctasker %s\n", ct_version_string());
    return CLI_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (strcmp(argv[1], commands[i].name) == 0) {
      char program[32]; /* getopt names argv[0] in its messages */
      snprintf(program, sizeof program, "ctasker %s", commands[i].name);
      argv[1] = program;
      return commands[i].run(argc - 1, argv + 1);
    }
  cli_error("unknown command '%s'; the commands are worker, submit, call, status, wait, "
            "queues, dead, workers (see 'ctasker --help')",
            argv[1]);
  return CLI_USAGE;
}
