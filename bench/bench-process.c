/* Process task throughput: empty tasks on a 2-child pool, side by side with
 * fork-per-task (fork + waitpid of a child per task) and a bare 64-byte
 * pipe round trip to a child, in the same run. Prints tasks/s, the ratio
 * to fork-per-task, and the per-task overhead above the bare round trip.
 * Usage: bench-process [tasks] */
#include <ctasker.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static json_t *empty(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  return NULL;
}

static double bench_pool(int n) {
  ct_supervisor_t *sup;
  ct_supervisor_new(NULL, &sup);
  ct_supervisor_start(sup);
  ct_process_pool_opts_t o = CT_PROCESS_POOL_OPTS_INIT;
  o.pool_size = 2;
  ct_process_pool_create(sup, &o);
  ct_task_t **tasks = malloc(sizeof *tasks * (size_t)n);
  ct_task_t *warm;
  ct_process_task(sup, "empty", NULL, NULL, &warm); /* children are up */
  ct_task_wait(warm, -1);
  ct_task_unref(warm);
  double t0 = ct_now();
  for (int i = 0; i < n; i++)
    ct_process_task(sup, "empty", NULL, NULL, &tasks[i]);
  ct_wait_completed(tasks, (size_t)n, -1);
  double dt = ct_now() - t0;
  for (int i = 0; i < n; i++)
    ct_task_unref(tasks[i]);
  free(tasks);
  ct_supervisor_stop(sup, CT_STOP_DRAIN, -1);
  ct_supervisor_free(sup);
  return dt;
}

static double bench_fork_per_task(int n) {
  double t0 = ct_now();
  for (int i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid == 0)
      _exit(0);
    waitpid(pid, NULL, 0);
  }
  return ct_now() - t0;
}

static double bench_pipe_round_trip(int n) {
  int to[2], from[2];
  char buf[64] = {0};
  if (pipe(to) || pipe(from))
    return 0;
  pid_t pid = fork();
  if (pid == 0) {
    close(to[1]);
    close(from[0]);
    while (read(to[0], buf, sizeof buf) == sizeof buf)
      if (write(from[1], buf, sizeof buf) != sizeof buf)
        break;
    _exit(0);
  }
  double t0 = ct_now();
  for (int i = 0; i < n; i++)
    if (write(to[1], buf, sizeof buf) != sizeof buf || read(from[0], buf, sizeof buf) != sizeof buf)
      break;
  double dt = ct_now() - t0;
  close(to[1]);
  waitpid(pid, NULL, 0);
  close(to[0]);
  close(from[0]);
  close(from[1]);
  return dt;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  ct_process_register("empty", empty, NULL);
  double pool = bench_pool(n), forks = bench_fork_per_task(n / 4), pipe_rt = bench_pipe_round_trip(n);
  double pool_rate = n / pool, fork_rate = (n / 4) / forks;
  printf("process pool (2 children): %9.0f tasks/s  %6.1f us/task\n", pool_rate, 1e6 / pool_rate);
  printf("fork per task:             %9.0f tasks/s  %6.1f us/task\n", fork_rate, 1e6 / fork_rate);
  printf("bare 64-byte pipe round trip:           %6.1f us\n", 1e6 * pipe_rt / n);
  printf("pool / fork-per-task: %.1fx\n", pool_rate / fork_rate);
  printf("pool overhead above a bare round trip: %.1f us/task\n", 1e6 * (pool - pipe_rt) / n);
  return 0;
}
