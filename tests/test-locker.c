/* Locker: a lock whose acquire gives up at a bound and reports it as
 * critical (the supervisor's timeout callback with a NULL task, or an
 * error log line) instead of hanging; recursive by default; a waiter takes
 * it once the holder lets go. Order and counts only, never durations. */
#include <ctasker.h>
#include <math.h>
#include <stdatomic.h>

#include "check.h"
#include "gate.h"

static atomic_int reports, report_level, report_task_null, report_started;

static void on_timeout(ct_supervisor_t *sup, ct_task_t *task, int level, bool started,
                       void *data) {
  (void)sup;
  (void)data;
  atomic_store(&report_level, level);
  atomic_store(&report_task_null, task == NULL);
  atomic_store(&report_started, started);
  atomic_fetch_add(&reports, 1);
}

static atomic_int locker_lines, option_lines;

static void count_log(int level, const char *msg, void *data) {
  (void)data;
  if (level == CT_LOG_ERROR && strstr(msg, "locker db-lock not acquired"))
    atomic_fetch_add(&locker_lines, 1);
  if (strstr(msg, "ct_locker_new: invalid ct_locker_opts_t."))
    atomic_fetch_add(&option_lines, 1);
}

static ct_supervisor_t *start_with(bool callback, double critical) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 2;
  o.on_timeout = callback ? on_timeout : NULL;
  o.log = count_log;
  o.timeout_critical = critical;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
}

static ct_locker_t *make(ct_supervisor_t *sup, double timeout, bool recursive) {
  ct_locker_opts_t o = CT_LOCKER_OPTS_INIT;
  o.name = "db-lock";
  o.timeout = timeout;
  o.recursive = recursive;
  ct_locker_t *l;
  CHECK_OK(ct_locker_new(sup, &o, &l));
  return l;
}

/* Another thread takes the Locker, says so, and holds it until `release`
 * opens. */
typedef struct {
  ct_locker_t *l;
  gate_t taken, release;
  atomic_int rc;
} holder_t;

static void *hold_it(void *arg) {
  holder_t *h = arg;
  atomic_store(&h->rc, ct_locker_acquire(h->l));
  gate_pass(&h->taken);
  gate_pass(&h->release);
  CHECK_OK(ct_locker_release(h->l));
  return NULL;
}

static void start_holder(holder_t *h, ct_locker_t *l, pthread_t *th) {
  h->l = l;
  gate_init(&h->taken);
  gate_init(&h->release);
  atomic_init(&h->rc, 1);
  CHECK(pthread_create(th, NULL, hold_it, h) == 0);
  gate_wait_arrived(&h->taken, 1);
  CHECK_EQ_INT(atomic_load(&h->rc), 0);
}

static void end_holder(holder_t *h, pthread_t th) {
  gate_open(&h->taken);
  gate_open(&h->release);
  pthread_join(th, NULL);
  gate_destroy(&h->taken);
  gate_destroy(&h->release);
}

TEST(acquire_that_cannot_take_it_reports_critical_instead_of_hanging) {
  ct_supervisor_t *sup = start_with(true, 0);
  ct_locker_t *l = make(sup, 0.05, true);
  holder_t h;
  pthread_t th;
  start_holder(&h, l, &th);
  atomic_store(&reports, 0);
  CHECK_EQ_INT(ct_locker_acquire(l), CT_ETIMEDOUT);
  CHECK_EQ_INT(atomic_load(&reports), 1);
  CHECK_EQ_INT(atomic_load(&report_level), CT_TIMEOUT_CRITICAL);
  CHECK_EQ_INT(atomic_load(&report_task_null), 1);
  CHECK_EQ_INT(atomic_load(&report_started), 1);
  CHECK_EQ_INT(ct_locker_release(l), CT_EINVAL); /* not ours */
  CHECK_EQ_INT(ct_locker_free(l), CT_EBUSY);     /* held */
  end_holder(&h, th);
  CHECK_OK(ct_locker_acquire(l)); /* free again: taken at once */
  CHECK_OK(ct_locker_release(l));
  CHECK_EQ_INT(atomic_load(&reports), 1);
  CHECK_EQ_INT(atomic_load(&locker_lines), 0); /* the callback took the report */
  CHECK_OK(ct_locker_free(l));
  stop_and_free(sup);
}

TEST(without_a_timeout_callback_the_report_is_a_log_line) {
  ct_supervisor_t *sup = start_with(false, 0);
  ct_locker_t *l = make(sup, 0.05, true);
  holder_t h;
  pthread_t th;
  start_holder(&h, l, &th);
  atomic_store(&locker_lines, 0);
  CHECK_EQ_INT(ct_locker_acquire(l), CT_ETIMEDOUT);
  CHECK_EQ_INT(atomic_load(&locker_lines), 1);
  end_holder(&h, th);
  CHECK_OK(ct_locker_free(l));
  stop_and_free(sup);
}

TEST(the_bound_defaults_to_the_supervisors_timeout_critical) {
  ct_supervisor_t *none = start_with(true, 0);
  ct_locker_t *l;
  CHECK_EQ_INT(ct_locker_new(none, NULL, &l), CT_EINVAL); /* no bound anywhere */
  CHECK(l == NULL);
  stop_and_free(none);
  ct_supervisor_t *sup = start_with(true, 0.05);
  CHECK_OK(ct_locker_new(sup, NULL, &l));
  holder_t h;
  pthread_t th;
  start_holder(&h, l, &th);
  atomic_store(&reports, 0);
  CHECK_EQ_INT(ct_locker_acquire(l), CT_ETIMEDOUT); /* 0.05 s, the supervisor's */
  CHECK_EQ_INT(atomic_load(&reports), 1);
  end_holder(&h, th);
  CHECK_OK(ct_locker_free(l));
  stop_and_free(sup);
}

static void *release_soon(void *arg) {
  holder_t *h = arg;
  check_sleep(0.02);
  gate_open(&h->release);
  return NULL;
}

TEST(a_waiter_takes_it_once_the_holder_lets_go) {
  ct_supervisor_t *sup = start_with(true, 0);
  ct_locker_t *l = make(sup, 60, true);
  holder_t h;
  pthread_t th, opener;
  start_holder(&h, l, &th);
  gate_open(&h.taken);
  CHECK(pthread_create(&opener, NULL, release_soon, &h) == 0);
  atomic_store(&reports, 0);
  CHECK_OK(ct_locker_acquire(l)); /* waits for the holder, well within 60 s */
  CHECK_EQ_INT(atomic_load(&reports), 0);
  CHECK_OK(ct_locker_release(l));
  pthread_join(opener, NULL);
  end_holder(&h, th);
  CHECK_OK(ct_locker_free(l));
  stop_and_free(sup);
}

TEST(recursive_by_default_and_not_when_asked) {
  ct_supervisor_t *sup = start_with(true, 0);
  ct_locker_t *r = make(sup, INFINITY, true);
  CHECK_OK(ct_locker_acquire(r));
  CHECK_OK(ct_locker_acquire(r));
  CHECK_OK(ct_locker_release(r));
  CHECK_EQ_INT(ct_locker_free(r), CT_EBUSY); /* still held once */
  CHECK_OK(ct_locker_release(r));
  CHECK_EQ_INT(ct_locker_release(r), CT_EINVAL); /* not held any more */
  CHECK_OK(ct_locker_free(r));
  ct_locker_t *n = make(sup, 0.05, false);
  CHECK_OK(ct_locker_acquire(n));
  atomic_store(&reports, 0);
  CHECK_EQ_INT(ct_locker_acquire(n), CT_EDEADLK); /* would wait for itself */
  CHECK_EQ_INT(atomic_load(&reports), 0);
  CHECK_OK(ct_locker_release(n));
  CHECK_OK(ct_locker_free(n));
  stop_and_free(sup);
}

/* Each refused option is logged, naming its field, as common.h promises
 * for every options struct (the Locker's were refused unsaid). */
TEST(locker_bad_input) {
  ct_supervisor_t *sup = start_with(true, 0);
  ct_locker_opts_t o = CT_LOCKER_OPTS_INIT;
  ct_locker_t *l;
  atomic_store(&option_lines, 0);
  o.timeout = NAN;
  CHECK_EQ_INT(ct_locker_new(sup, &o, &l), CT_EINVAL);
  o.timeout = -1;
  CHECK_EQ_INT(ct_locker_new(sup, &o, &l), CT_EINVAL);
  o.timeout = 0; /* the supervisor has no timeout_critical */
  CHECK_EQ_INT(ct_locker_new(sup, &o, &l), CT_EINVAL);
  o.timeout = 1;
  o.size = 1;
  CHECK_EQ_INT(ct_locker_new(sup, &o, &l), CT_EINVAL);
  CHECK_EQ_INT(atomic_load(&option_lines), 4);
  o.size = sizeof o;
  CHECK_EQ_INT(ct_locker_new(sup, &o, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_locker_acquire(NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_locker_release(NULL), CT_EINVAL);
  CHECK_OK(ct_locker_free(NULL));
  if (!ct_supervisor_default())
    CHECK_EQ_INT(ct_locker_new(NULL, &o, &l), CT_EINVAL); /* no default supervisor */
  stop_and_free(sup);
}

int main(void) {
  RUN(acquire_that_cannot_take_it_reports_critical_instead_of_hanging);
  RUN(without_a_timeout_callback_the_report_is_a_log_line);
  RUN(the_bound_defaults_to_the_supervisors_timeout_critical);
  RUN(a_waiter_takes_it_once_the_holder_lets_go);
  RUN(recursive_by_default_and_not_when_asked);
  RUN(locker_bad_input);
  return check_done();
}
