/* What the process-pool tests share: a supervisor started with its pool,
 * the check that a stopped pool leaves nothing behind, the pool's fork
 * server, and process functions that several tests register (under names
 * of their own).
 */
#ifndef CT_TESTS_POOL_H
#define CT_TESTS_POOL_H

#include <ctasker.h>
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "proc.h"

/* A started supervisor (its options `so`; NULL: the defaults) with a
 * process pool of `children` children (task_timeout 0: none). The pool is
 * made first, while this thread is the only one: ASan's allocator (unlike
 * glibc's malloc) is not made safe across fork(), so a fork server forked
 * while the loop thread starts could inherit its lock held and hang in
 * malloc. */
static inline ct_supervisor_t *pool_sup_start(const ct_supervisor_opts_t *so, int children,
                                              double task_timeout) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(so, &sup));
  ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
  po.pool_size = children;
  po.task_timeout = task_timeout;
  CHECK_OK(ct_process_pool_create(sup, &po));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
}

/* The same, the pool made once the supervisor runs (as a program that adds
 * it later would). */
static inline ct_supervisor_t *pool_sup_start_pool_last(const ct_supervisor_opts_t *so,
                                                        int children, double task_timeout) {
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(so, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
  po.pool_size = children;
  po.task_timeout = task_timeout;
  CHECK_OK(ct_process_pool_create(sup, &po));
  return sup;
}

/* Run `fn` (a process function registered as pool_fn_pid) to completion;
 * the pid of the child that ran it. */
static inline int pool_child_pid(ct_supervisor_t *sup, const char *fn) {
  ct_task_t *t;
  CHECK_OK(ct_process_task(sup, fn, NULL, NULL, &t));
  CHECK_OK(ct_task_wait(t, 60));
  CHECK(!ct_task_failed(t));
  int pid = (int)json_integer_value(ct_task_result(t));
  ct_task_unref(t);
  return pid;
}

/* Stop and free sup; no child, zombie or descriptor of its left. */
static inline void pool_stop_and_check_nothing_left(ct_supervisor_t *sup, int fds_before) {
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 60));
  CHECK_OK(ct_supervisor_free(sup));
  int kids[4];
  CHECK_EQ_INT(children_of(getpid(), kids, 4), 0);
  CHECK_EQ_INT(waitpid(-1, NULL, WNOHANG), -1); /* not even a zombie */
  CHECK_EQ_INT(count_fds(), fds_before);
}

/* The one fork server (this process's only child). */
static inline int pool_fork_server(void) {
  int pids[4];
  CHECK_EQ_INT(children_of(getpid(), pids, 4), 1);
  return pids[0];
}

/* Reaped, and so gone: kill(pid, 0) fails with ESRCH. */
static inline bool pool_gone(int pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

/* No longer running: gone, or a zombie of whoever adopted it (an orphan's
 * reaper is not ours to wait for). */
static inline bool pool_ended(int pid) {
  char st = proc_state(pid);
  return st == 0 || st == 'Z';
}

/* Process functions: the child's pid; a child that never returns; a child
 * killed (SIGKILL) while it runs. */
static inline json_t *pool_fn_pid(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  return json_integer((json_int_t)getpid());
}

static inline json_t *pool_fn_hang(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  for (;;)
    pause();
  return NULL;
}

static inline json_t *pool_fn_killed(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  raise(SIGKILL);
  return NULL;
}

#endif
