/* Interval workers whose messages to the supervisor's loop cannot be
 * allocated. Such a post failed with CT_ENOMEM, and then:
 *   - a run's re-arm was lost: the worker stayed RUNNING and never ran again;
 *   - a stop's disarm was taken for a loop that had ended: the timer stayed
 *     watched on the loop, so a restart aborted in libev and a free left the
 *     loop a freed worker to call.
 * Now the first fails the worker (it ends FAILED with CT_ENOMEM, and says
 * so), and a stop's disarm needs no allocation.
 *
 * The posts fail at will: the library's ct__worker_post() is routed through
 * __wrap_ct__worker_post() below by the linker (--wrap, see
 * tests/meson.build), which fails while `failing` is set, as it does when
 * its malloc() fails.
 */
#include <stdatomic.h>
#include <string.h>

#include "gate.h"

int __real_ct__worker_post(ct_worker_t *w, void (*fn)(ct_worker_t *w));
int __wrap_ct__worker_post(ct_worker_t *w, void (*fn)(ct_worker_t *w));

static atomic_bool failing;
static atomic_int failed_posts;

int __wrap_ct__worker_post(ct_worker_t *w, void (*fn)(ct_worker_t *w)) {
  if (atomic_load(&failing)) {
    atomic_fetch_add(&failed_posts, 1);
    return CT_ENOMEM;
  }
  return __real_ct__worker_post(w, fn);
}

static atomic_int runs;

static int count_run(ct_worker_run_t *run) {
  (void)run;
  atomic_fetch_add(&runs, 1);
  return CT_WORKER_CONTINUE;
}

static atomic_int said; /* error lines that name the next run */

static void count_said(int level, const char *msg, void *data) {
  (void)data;
  if (level == CT_LOG_ERROR && strstr(msg, "could not set its next run"))
    atomic_fetch_add(&said, 1);
}

static ct_worker_t *start_interval(ct_supervisor_t *sup, double interval) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.interval = interval;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_INTERVAL, count_run, &o, &w));
  CHECK_OK(ct_worker_start(w, NULL));
  return w;
}

TEST(an_interval_worker_that_cannot_set_its_next_run_ends_failed_and_says_so) {
  ct_supervisor_t *sup = start_supervisor_logging(2, count_said);
  atomic_store(&runs, 0);
  ct_worker_t *w = start_interval(sup, 0.01);
  WAIT_FOR(atomic_load(&runs) >= 2);
  atomic_store(&failing, true); /* the next run's re-arm */
  WAIT_FOR(ct_worker_state(w) == CT_WORKER_STOPPED);
  atomic_store(&failing, false);
  int code = 0;
  json_t *error = NULL;
  CHECK_EQ_INT(ct_worker_last_end(w, &code, &error), CT_WORKER_END_FAILED);
  CHECK_EQ_INT(code, CT_ENOMEM);
  CHECK(error && strcmp(ct_result_error_class(error), "WorkerError") == 0);
  json_decref(error);
  CHECK(atomic_load(&said) >= 1);
  CHECK(atomic_load(&failed_posts) >= 1);
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

/* Stopped while every post fails; then restarted, and freed: a new worker
 * (which may get the same timer descriptor) runs beside nothing stale. */
TEST(an_interval_worker_stopped_while_posts_fail_leaves_no_timer_behind) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  atomic_store(&runs, 0);
  ct_worker_t *w = start_interval(sup, 0.01);
  WAIT_FOR(atomic_load(&runs) >= 1);
  atomic_store(&failing, true);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  atomic_store(&failing, false);
  CHECK_EQ_INT(ct_worker_state(w), CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_start(w, NULL));
  int before = atomic_load(&runs);
  WAIT_FOR(atomic_load(&runs) >= before + 3);
  atomic_store(&failing, true);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  atomic_store(&failing, false);
  CHECK_OK(ct_worker_free(w));
  w = start_interval(sup, 0.01);
  before = atomic_load(&runs);
  WAIT_FOR(atomic_load(&runs) >= before + 3);
  CHECK_OK(ct_worker_stop(w, CT_WORKER_DROP, -1));
  CHECK_OK(ct_worker_free(w));
  stop_and_free(sup);
}

int main(void) {
  RUN(an_interval_worker_that_cannot_set_its_next_run_ends_failed_and_says_so);
  RUN(an_interval_worker_stopped_while_posts_fail_leaves_no_timer_behind);
  return check_done();
}
