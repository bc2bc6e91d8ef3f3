/* What only some tasks carry (ct__task_more_t): an arg_free and a timeout.
 *
 * arg_free is called exactly once, when the task is terminal and its
 * function, if it ran, has returned: by the thread that finishes or
 * cancels the task (after on_done), or, for a task its deadline finished,
 * by the second of the deadline's thread (once on_done has returned) and
 * the function's thread (once the function has returned): each sets
 * CT__F_ARG_WAITS, and the one that finds it set frees.
 *
 * A timeout races the function's return. Each side claims the task with a
 * compare-and-swap on its flags that sets its own bit only while the other
 * side's bit is clear (CT__F_RETURNED for the return, CT__F_TIMED_OUT for
 * the deadline), so exactly one of them wins, and only the winner's bit is
 * ever set. The return that wins finishes the task as usual; the deadline
 * that wins finishes it with TimeoutError and sets its cancel flag, and the
 * function's later return only gives back its result and the argument.
 * The owner (the supervisor) keeps the deadline's timer: it is armed
 * through owner->deadline_start just before the function runs, and
 * disarmed through owner->deadline_end when it returns, on time or late.
 * A pool thread cannot be killed: until the function returns, its thread
 * stays busy and the argument stays alive.
 */
#include "ctasker/result.h"
#include "core/task-internal.h"

/* Set `mine` in the task's flags unless `theirs` is set: true if set. */
static bool claim(ct_task_t *t, unsigned mine, unsigned theirs) {
  unsigned flags = atomic_load(&t->flags);
  do {
    if (flags & theirs)
      return false;
  } while (!atomic_compare_exchange_weak(&t->flags, &flags, flags | mine));
  return true;
}

void ct__task_free_arg(ct_task_t *t) {
  ct__task_more_t *more = ct__task_more(t);
  if (more && more->arg_free)
    more->arg_free(t->arg);
}

void ct__task_timed_out_half(ct_task_t *t) {
  if (atomic_fetch_or(&t->flags, CT__F_ARG_WAITS) & CT__F_ARG_WAITS)
    ct__task_free_arg(t);
}

bool ct__task_run_timed(ct_task_t *t) {
  t->owner->deadline_start(t->owner, t);
  json_t *result = t->fn(t, t->arg);
  bool on_time = claim(t, CT__F_RETURNED, CT__F_TIMED_OUT);
  bool failed = on_time ? ct_result_is_error(result) : true;
  if (on_time)
    ct__task_finish(t, result);
  else
    json_decref(result); /* the task's result is its TimeoutError */
  t->owner->deadline_end(t->owner, t, !on_time);
  if (!on_time)
    ct__task_timed_out_half(t);
  ct_task_unref(t);
  return failed;
}

bool ct__task_time_out(ct_task_t *t) {
  if (!claim(t, CT__F_TIMED_OUT, CT__F_RETURNED))
    return false;
  atomic_fetch_or(&t->flags, CT__F_CANCEL_REQUESTED);
  ct__task_finish(t, ct_error_new("TimeoutError", "task %llu ran past its timeout of %g s",
                                  (unsigned long long)t->id, ct__task_more(t)->timeout));
  return true;
}
