/* A daemon: workers in one group, signals owned by the host, stats on
 * demand and a clean shutdown.
 *
 *   poller     a background worker on a thread of its own: sleeps between
 *              steps, and a stop cuts the sleep short
 *   heartbeat  an interval worker, once a second, feeding the queue
 *   jobs       a queue worker
 *   stats      an event worker that prints the supervisor's statistics;
 *              SIGUSR1 triggers it from a signal handler
 *
 * The main thread waits for SIGINT or SIGTERM (or SIGALRM, after the
 * seconds given as argv[1]) with sigwait(): ctasker's threads block every
 * signal, so the host decides where signals go. Then one call stops the
 * group (the last started first, draining the queue) and frees it.
 */
#include <ctasker.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static ct_worker_t *stats_worker;

static void on_usr1(int sig) {
  (void)sig;
  ct_event_worker_signal(stats_worker, false); /* async-signal-safe */
}

static int poll_step(ct_worker_run_t *run) {
  (*(long *)run->data)++;
  ct_worker_sleep(run->worker, 0.5); /* returns early when stopped */
  return CT_WORKER_CONTINUE;
}

static int heartbeat(ct_worker_run_t *run) {
  static intptr_t beats;
  ct_queue_worker_put(run->data, (void *)++beats, CT_PRIORITY_NORMAL);
  return CT_WORKER_CONTINUE;
}

static int job(ct_worker_run_t *run) {
  printf("job %ld\n", (long)(intptr_t)run->item);
  return CT_WORKER_CONTINUE;
}

static int print_stats(ct_worker_run_t *run) {
  (void)run;
  json_t *stats = ct_supervisor_stats_json(NULL);
  json_dumpf(stats, stdout, JSON_INDENT(2));
  printf("\n");
  json_decref(stats);
  return CT_WORKER_CONTINUE;
}

static ct_worker_t *add(ct_worker_group_t *g, ct_worker_kind_t kind, ct_worker_fn fn,
                        ct_worker_opts_t *o, const char *name) {
  ct_worker_t *w = NULL;
  o->name = name;
  if (ct_worker_new(NULL, kind, fn, o, &w) == 0 && ct_worker_group_add(g, w) != 0) {
    ct_worker_free(w);
    w = NULL;
  }
  return w;
}

int main(int argc, char **argv) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGALRM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL); /* before any thread starts */
  if (ct_default_start(NULL) != 0)
    return 1;

  ct_worker_group_opts_t go = CT_WORKER_GROUP_OPTS_INIT;
  go.owns_members = true;
  ct_worker_group_t *group;
  if (ct_worker_group_new(&go, &group) != 0)
    return 1;
  long polls = 0;
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.data = &polls;
  ct_worker_t *poller = add(group, CT_WORKER_BACKGROUND, poll_step, &o, "poller");
  o = (ct_worker_opts_t)CT_WORKER_OPTS_INIT;
  ct_worker_t *jobs = add(group, CT_WORKER_QUEUE, job, &o, "jobs");
  o.data = jobs;
  o.interval = 1.0;
  ct_worker_t *beat = add(group, CT_WORKER_INTERVAL, heartbeat, &o, "heartbeat");
  o = (ct_worker_opts_t)CT_WORKER_OPTS_INIT;
  stats_worker = add(group, CT_WORKER_EVENT, print_stats, &o, "stats");
  if (!poller || !jobs || !beat || !stats_worker || ct_worker_group_start(group, NULL) != 0)
    return 1;

  signal(SIGUSR1, on_usr1);
  if (argc > 1)
    alarm((unsigned)atoi(argv[1]));
  printf("running as pid %ld: kill -USR1 for stats, -TERM to stop\n", (long)getpid());
  fflush(stdout);
  int sig;
  sigwait(&stop_signals, &sig);

  signal(SIGUSR1, SIG_IGN); /* no handler may reach the stats worker now */
  int rc = ct_worker_group_shutdown(group, CT_WORKER_DRAIN, 5.0);
  printf("stopped on signal %d after %ld polls: %s\n", sig, polls, ct_strerror(rc));
  return ct_default_stop(CT_STOP_DRAIN, -1) == 0 && rc == 0 ? 0 : 1;
}
