/* The four worker kinds on one supervisor.
 *
 *   background  counts while it runs
 *   queue       prints the jobs put to it, in FIFO order
 *   event       runs once per (merged) trigger
 *   interval    ticks every 100 ms and stops itself after 5 ticks
 */
#include <ctasker.h>
#include <stdio.h>
#include <stdlib.h>

static int count(ct_worker_run_t *run) {
  (*(long *)run->data)++;
  ct_worker_sleep(run->worker, 0.01); /* returns early when the worker is stopped */
  return CT_WORKER_CONTINUE;
}

static int print_job(ct_worker_run_t *run) {
  printf("%s: job %s\n", run->name, (const char *)run->item);
  return CT_WORKER_CONTINUE;
}

static int on_event(ct_worker_run_t *run) {
  printf("%s: event handled (task %llu)\n", run->name, (unsigned long long)run->task_id);
  return CT_WORKER_CONTINUE;
}

static int tick(ct_worker_run_t *run) {
  int *n = run->data;
  printf("%s: tick %d, %.1f ms late\n", run->name, ++*n, (ct_now() - run->scheduled) * 1e3);
  return *n < 5 ? CT_WORKER_CONTINUE : CT_WORKER_STOP;
}

int main(void) {
  if (ct_default_start(NULL) != 0)
    return 1;
  long counted = 0;
  int ticks = 0;
  ct_worker_t *bg, *queue, *event, *interval;
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;

  o.name = "counter";
  o.data = &counted;
  ct_worker_new(NULL, CT_WORKER_BACKGROUND, count, &o, &bg);
  o.name = "printer";
  ct_worker_new(NULL, CT_WORKER_QUEUE, print_job, &o, &queue);
  o.name = "listener";
  ct_worker_new(NULL, CT_WORKER_EVENT, on_event, &o, &event);
  o.name = "ticker";
  o.data = &ticks;
  o.interval = 0.1;
  ct_worker_new(NULL, CT_WORKER_INTERVAL, tick, &o, &interval);

  ct_worker_start(bg, NULL);
  ct_worker_start(queue, NULL);
  ct_worker_start(event, NULL);
  ct_worker_start(interval, NULL);

  const char *jobs[] = {"one", "two", "three"};
  for (int i = 0; i < 3; i++)
    ct_queue_worker_put(queue, (void *)jobs[i], CT_PRIORITY_NORMAL);
  for (int i = 0; i < 3; i++)
    ct_event_worker_trigger(event, false); /* quick triggers merge */

  ct_worker_wait(interval, -1, NULL, NULL); /* until it stops itself */
  ct_worker_stop(bg, CT_WORKER_DRAIN, -1);
  ct_worker_stop(queue, CT_WORKER_DRAIN, -1);
  ct_worker_stop(event, CT_WORKER_DRAIN, -1);
  printf("counter ran %ld times\n", counted);

  json_t *stats = ct_supervisor_stats_json(NULL);
  char *text = json_dumps(json_object_get(stats, "workers"), JSON_INDENT(2));
  printf("%s\n", text);
  free(text);
  json_decref(stats);

  ct_worker_free(bg);
  ct_worker_free(queue);
  ct_worker_free(event);
  ct_worker_free(interval);
  return ct_default_stop(CT_STOP_DRAIN, -1) == 0 ? 0 : 1;
}
