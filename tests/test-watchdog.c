/* The timeout watchdog: a task queued or running past timeout_warning /
 * timeout_critical is reported once per threshold, with whether it had
 * started; without an on_timeout callback the report goes to the log. */
#include "gate.h"

enum { MAX_REPORTS = 64 };

typedef struct {
  pthread_mutex_t m;
  pthread_cond_t c;
  int n;
  struct {
    uint64_t id;
    int level;
    bool started;
    ct_task_status_t status;
    bool on_loop_thread;
  } r[MAX_REPORTS];
} reports_t;

static reports_t reports = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {{0}}};
static pthread_t main_thread;

static void on_timeout(ct_supervisor_t *sup, ct_task_t *task, int level, bool started,
                       void *data) {
  (void)sup;
  CHECK(data == &reports);
  pthread_mutex_lock(&reports.m);
  CHECK(reports.n < MAX_REPORTS);
  reports.r[reports.n].id = ct_task_id(task);
  reports.r[reports.n].level = level;
  reports.r[reports.n].started = started;
  reports.r[reports.n].status = ct_task_status(task);
  reports.r[reports.n].on_loop_thread = !pthread_equal(pthread_self(), main_thread);
  reports.n++;
  pthread_cond_broadcast(&reports.c);
  pthread_mutex_unlock(&reports.m);
}

/* How many reports of `level` name task `id`. */
static int count_reports(uint64_t id, int level, bool *started) {
  int n = 0;
  pthread_mutex_lock(&reports.m);
  for (int i = 0; i < reports.n; i++)
    if (reports.r[i].id == id && reports.r[i].level == level) {
      n++;
      *started = reports.r[i].started;
    }
  pthread_mutex_unlock(&reports.m);
  return n;
}

static void wait_reports(int n) {
  pthread_mutex_lock(&reports.m);
  HELPER_WAIT_UNTIL(&reports.c, &reports.m, reports.n >= n);
  pthread_mutex_unlock(&reports.m);
}

static ct_supervisor_t *start_watched(ct_timeout_fn fn, ct_log_fn log, void *log_data) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 1;
  o.timeout_warning = 0.05;
  o.timeout_critical = 0.1;
  o.on_timeout = fn;
  o.timeout_data = &reports;
  o.log = log;
  o.log_data = log_data;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
}

TEST(queued_and_running_reported_once_per_threshold) {
  main_thread = pthread_self();
  ct_supervisor_t *sup = start_watched(on_timeout, NULL, NULL);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *running = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  gate_wait_arrived(&gate, 1);
  ct_task_t *queued = submit(sup, gate_task, &gate, CT_PRIORITY_LOW);
  /* Four reports: warning and critical for each. */
  wait_reports(4);
  /* Several more watchdog ticks pass with both tasks still overdue. */
  check_sleep(0.3);
  bool started = false;
  CHECK_EQ_INT(count_reports(ct_task_id(running), CT_TIMEOUT_WARNING, &started), 1);
  CHECK(started);
  CHECK_EQ_INT(count_reports(ct_task_id(running), CT_TIMEOUT_CRITICAL, &started), 1);
  CHECK(started);
  CHECK_EQ_INT(count_reports(ct_task_id(queued), CT_TIMEOUT_WARNING, &started), 1);
  CHECK(!started);
  CHECK_EQ_INT(count_reports(ct_task_id(queued), CT_TIMEOUT_CRITICAL, &started), 1);
  CHECK(!started);
  pthread_mutex_lock(&reports.m);
  CHECK_EQ_INT(reports.n, 4);
  for (int i = 0; i < reports.n; i++) {
    CHECK(reports.r[i].on_loop_thread);
    CHECK_EQ_INT(reports.r[i].status, reports.r[i].started ? CT_TASK_STARTED : CT_TASK_QUEUED);
  }
  pthread_mutex_unlock(&reports.m);
  /* Once started, the queued task is not reported again. */
  gate_open(&gate);
  ct_task_t *both[] = {running, queued};
  CHECK_OK(ct_wait_completed(both, 2, -1));
  ct_task_unref(running);
  ct_task_unref(queued);
  stop_and_free(sup);
  pthread_mutex_lock(&reports.m);
  CHECK_EQ_INT(reports.n, 4);
  reports.n = 0;
  pthread_mutex_unlock(&reports.m);
  gate_destroy(&gate);
}

TEST(quick_tasks_are_not_reported) {
  ct_supervisor_t *sup = start_watched(on_timeout, NULL, NULL);
  gate_t open;
  gate_init(&open);
  gate_open(&open);
  ct_task_t *t[20];
  for (int i = 0; i < 20; i++)
    t[i] = submit(sup, gate_task, &open, CT_PRIORITY_NORMAL);
  CHECK_OK(ct_wait_completed(t, 20, -1));
  for (int i = 0; i < 20; i++)
    ct_task_unref(t[i]);
  stop_and_free(sup);
  gate_destroy(&open);
  /* No assertion on the count: a loaded machine may delay a task past
   * 50 ms. Every report must name a known level. */
  pthread_mutex_lock(&reports.m);
  for (int i = 0; i < reports.n; i++)
    CHECK(reports.r[i].level == CT_TIMEOUT_WARNING || reports.r[i].level == CT_TIMEOUT_CRITICAL);
  reports.n = 0;
  pthread_mutex_unlock(&reports.m);
}

/* Without on_timeout, reports are log lines. */
typedef struct {
  counter_t warnings, errors;
} log_counts_t;

static void log_line(int level, const char *msg, void *data) {
  log_counts_t *lc = data;
  if (!strstr(msg, "timeout"))
    return;
  counter_add(level == CT_LOG_ERROR ? &lc->errors : &lc->warnings, 1);
}

TEST(reports_go_to_the_log_without_a_callback) {
  log_counts_t lc;
  counter_init(&lc.warnings);
  counter_init(&lc.errors);
  ct_supervisor_t *sup = start_watched(NULL, log_line, &lc);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *t = submit(sup, gate_task, &gate, CT_PRIORITY_NORMAL);
  counter_wait_at_least(&lc.warnings, 1);
  counter_wait_at_least(&lc.errors, 1);
  check_sleep(0.2);
  CHECK_EQ_INT(counter_get(&lc.warnings), 1);
  CHECK_EQ_INT(counter_get(&lc.errors), 1);
  gate_open(&gate);
  CHECK_OK(ct_task_wait(t, -1));
  ct_task_unref(t);
  stop_and_free(sup);
  gate_destroy(&gate);
  counter_destroy(&lc.warnings);
  counter_destroy(&lc.errors);
}

int main(void) {
  RUN(queued_and_running_reported_once_per_threshold);
  RUN(quick_tasks_are_not_reported);
  RUN(reports_go_to_the_log_without_a_callback);
  return check_done();
}
