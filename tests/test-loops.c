/* Loops: extra named loops, calls onto a loop, user watchers, tasks and
 * workers executed on a loop. */
#include <ctasker.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"
#include "gate.h"

typedef struct {
  pthread_t thread;
  atomic_bool done, gate;
  atomic_int count;
  ev_timer timer;
  void *arg;
} probe_t;

static void note_thread(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  probe_t *p = data;
  p->thread = pthread_self();
  atomic_store(&p->done, true);
}

static pthread_t loop_thread(ct_loop_t *loop) {
  probe_t p = {0};
  CHECK_OK(ct_loop_call(loop, note_thread, &p));
  WAIT_FOR(atomic_load(&p.done));
  return p.thread;
}

static void timer_fired(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)revents;
  probe_t *p = w->data;
  ev_timer_stop(ev, w);
  atomic_store(&p->done, true);
}

static void attach_timer(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  probe_t *p = data;
  ev_timer_init(&p->timer, timer_fired, 0.01, 0);
  p->timer.data = p;
  ev_timer_start(ev, &p->timer);
}

TEST(user_watcher_through_a_call) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  probe_t p = {0};
  CHECK_OK(ct_loop_call(ct_supervisor_loop(sup), attach_timer, &p));
  WAIT_FOR(atomic_load(&p.done));
  CHECK(!pthread_equal(loop_thread(ct_supervisor_loop(sup)), pthread_self()));
  CHECK_EQ_INT(ct_loop_call(NULL, attach_timer, &p), CT_EINVAL);
  CHECK_EQ_INT(ct_loop_call(ct_supervisor_loop(sup), NULL, &p), CT_EINVAL);
  stop_and_free(sup);
}

TEST(named_loops) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  ct_loop_t *io, *found, *other;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  CHECK_EQ_STR(ct_loop_name(io), "io");
  CHECK_EQ_INT(ct_loop_create(sup, "io", &other), CT_EBUSY);
  CHECK_EQ_INT(ct_loop_create(sup, "", &other), CT_EINVAL);
  CHECK_OK(ct_loop_get(sup, "io", &found));
  CHECK(found == io);
  CHECK_EQ_INT(ct_loop_get(sup, "nope", &found), CT_ENOENT);
  CHECK(found == NULL);
  CHECK_OK(ct_loop_get(sup, NULL, &found));
  CHECK(found == ct_supervisor_loop(sup));
  CHECK_OK(ct_loop_set_default(sup, io));
  CHECK_OK(ct_loop_get(sup, NULL, &found));
  CHECK(found == io);
  CHECK_OK(ct_loop_set_default(sup, NULL));
  CHECK_OK(ct_loop_get(sup, NULL, &found));
  CHECK(found == ct_supervisor_loop(sup));
  CHECK(!pthread_equal(loop_thread(io), loop_thread(ct_supervisor_loop(sup))));
  CHECK_EQ_INT(ct_loop_stop(ct_supervisor_loop(sup), -1), CT_EINVAL);
  CHECK_OK(ct_loop_create(sup, "spare", &other)); /* stopped with the supervisor */
  CHECK_OK(ct_loop_stop(io, -1));
  probe_t p = {0};
  CHECK_EQ_INT(ct_loop_call(io, note_thread, &p), CT_ESHUTDOWN);
  stop_and_free(sup);
}

static json_t *where_am_i(ct_task_t *self, void *arg) {
  (void)self;
  probe_t *p = arg;
  p->thread = pthread_self();
  return json_integer(7);
}

static void hold_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  probe_t *p = data;
  atomic_store(&p->done, true);
  while (!atomic_load(&p->gate))
    check_sleep(0.0005);
}

TEST(task_on_a_loop) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  probe_t p = {0};
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.loop = io;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, where_am_i, &p, &o, &t));
  CHECK_OK(ct_task_wait(t, -1));
  CHECK_EQ_INT(json_integer_value(ct_task_result(t)), 7);
  CHECK(pthread_equal(p.thread, loop_thread(io)));
  ct_task_unref(t);

  /* canceled while queued behind a busy call: never runs */
  probe_t hold = {0}, never = {0};
  CHECK_OK(ct_loop_call(io, hold_loop, &hold));
  WAIT_FOR(atomic_load(&hold.done));
  CHECK_OK(ct_background_task(sup, where_am_i, &never, &o, &t));
  CHECK_OK(ct_task_cancel(t));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_CANCELED);
  atomic_store(&hold.gate, true);
  (void)loop_thread(io); /* the loop has gone past the canceled task */
  CHECK(!atomic_load(&never.done) && never.count == 0 && !never.thread);
  ct_task_unref(t);
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK_EQ_INT(s.queued, 0);

  /* a timeout on the supervisor's own loop: the function would block the
   * loop that ends it (delays on loops: test-task-options) */
  ct_task_opts_t own = o;
  own.loop = ct_supervisor_loop(sup);
  own.timeout = 1;
  CHECK_EQ_INT(ct_background_task(sup, where_am_i, &p, &own, &t), CT_ENOTSUP);
  CHECK(t == NULL);
  CHECK_OK(ct_loop_stop(io, -1));
  CHECK_EQ_INT(ct_background_task(sup, where_am_i, &p, &o, &t), CT_ESHUTDOWN);
  CHECK(t == NULL);
  stop_and_free(sup);
}

static int run_on_loop(ct_worker_run_t *run) {
  probe_t *p = run->data;
  p->thread = pthread_self();
  atomic_fetch_add(&p->count, 1);
  return CT_WORKER_CONTINUE;
}

static void count_call(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  atomic_store(&((probe_t *)data)->done, true);
}

TEST(workers_on_a_loop) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  probe_t ev = {0}, bg = {0}, other = {0};
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.loop = io;
  o.data = &ev;
  ct_worker_t *e, *b;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_EVENT, run_on_loop, &o, &e));
  o.data = &bg;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_BACKGROUND, run_on_loop, &o, &b));
  CHECK_OK(ct_worker_start(e, NULL));
  CHECK_OK(ct_event_worker_trigger(e, false));
  WAIT_FOR(atomic_load(&ev.count) == 1);
  CHECK(pthread_equal(ev.thread, loop_thread(io)));
  CHECK_OK(ct_worker_start(b, NULL));
  WAIT_FOR(atomic_load(&bg.count) > 10);
  CHECK_OK(ct_loop_call(io, count_call, &other)); /* the loop still serves calls */
  WAIT_FOR(atomic_load(&other.done));
  CHECK_OK(ct_worker_stop(b, CT_WORKER_DRAIN, -1));
  CHECK(pthread_equal(bg.thread, loop_thread(io)));
  CHECK_OK(ct_worker_stop(e, CT_WORKER_DRAIN, -1));
  CHECK_OK(ct_worker_free(b));
  CHECK_OK(ct_worker_free(e));
  stop_and_free(sup);
}

/* A call that reaches the supervisor's loop table (ct_loop_get) after a
 * waiting ct_loop_stop() of its own loop has begun: the stop must not hold
 * that table while it waits for the loop thread. */
static void look_up_late(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)ev;
  probe_t *p = data;
  atomic_store(&p->done, true);
  while (!atomic_load(&p->gate))
    check_sleep(0.0005);
  check_sleep(0.05); /* let the stop reach its wait */
  ct_loop_t *found = NULL;
  ct_loop_get(((ct_supervisor_t *)p->arg), ct_loop_name(loop), &found);
  atomic_store(&p->count, found == loop);
}

TEST(stop_waits_for_a_call_that_looks_up_loops) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  probe_t p = {0};
  p.arg = sup;
  CHECK_OK(ct_loop_call(io, look_up_late, &p));
  WAIT_FOR(atomic_load(&p.done));
  atomic_store(&p.gate, true);
  CHECK_OK(ct_loop_stop(io, -1));
  CHECK_EQ_INT(atomic_load(&p.count), 1);
  stop_and_free(sup);
}

static void count_done(ct_task_t *t, void *data) {
  (void)t;
  atomic_fetch_add(&((probe_t *)data)->count, 1);
}

/* A stop is complete only once the extra loops have run what they were
 * given: a task still queued on one must not outlive its supervisor (it
 * finishes through the supervisor's registry and counters). */
TEST(stop_waits_for_tasks_queued_on_extra_loops) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  probe_t hold = {0}, task = {0};
  CHECK_OK(ct_loop_call(io, hold_loop, &hold));
  WAIT_FOR(atomic_load(&hold.done)); /* the loop is busy: the task waits */
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.loop = io;
  o.on_done = count_done;
  o.done_data = &task;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, where_am_i, &task, &o, &t));
  CHECK_EQ_INT(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0.2), CT_ETIMEDOUT);
  CHECK_EQ_INT(ct_supervisor_free(sup), CT_EBUSY);
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_QUEUED);
  atomic_store(&hold.gate, true);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  CHECK_EQ_INT(atomic_load(&task.count), 1);
  ct_stats_t s = CT_STATS_INIT;
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK_EQ_INT((int)s.submitted, 1);
  CHECK_EQ_INT((int)s.completed, 1);
  CHECK_EQ_INT((int)ct_supervisor_registry_size(sup), 0);
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_free(sup));
}

/* A waiting stop from an extra loop's own thread would wait for itself. */
static void stop_from_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  probe_t *p = data;
  atomic_store(&p->count, ct_supervisor_stop(p->arg, CT_STOP_DRAIN, -1));
  atomic_store(&p->done, true);
}

TEST(waiting_stop_from_an_extra_loop_is_a_deadlock_error) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(sup, "io", &io));
  probe_t p = {0};
  p.arg = sup;
  CHECK_OK(ct_loop_call(io, stop_from_loop, &p));
  WAIT_FOR(atomic_load(&p.done));
  CHECK_EQ_INT(atomic_load(&p.count), CT_EDEADLK);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
}

/* A task or a worker runs only on a loop of its own supervisor: another
 * supervisor's loop may hold it past this one's stop and free (the task
 * finishes through its supervisor), or be freed first. */
TEST(loop_of_another_supervisor_is_refused) {
  ct_supervisor_t *sup = start_supervisor(0, 0, 0), *other = start_supervisor(0, 0, 0);
  ct_loop_t *io;
  CHECK_OK(ct_loop_create(other, "io", &io));
  probe_t p = {0};
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  ct_task_t *t = NULL;
  ct_loop_t *foreign[] = {io, ct_supervisor_loop(other)};
  for (int i = 0; i < 2; i++) {
    o.loop = foreign[i];
    CHECK_EQ_INT(ct_background_task(sup, where_am_i, &p, &o, &t), CT_EINVAL);
    CHECK(t == NULL);
  }
  ct_worker_opts_t wo = CT_WORKER_OPTS_INIT;
  wo.loop = io;
  ct_worker_t *w = NULL;
  CHECK_EQ_INT(ct_worker_new(sup, CT_WORKER_EVENT, run_on_loop, &wo, &w), CT_EINVAL);
  CHECK(w == NULL);
  o.loop = ct_supervisor_loop(sup); /* its own loops are fine */
  CHECK_OK(ct_background_task(sup, where_am_i, &p, &o, &t));
  CHECK_OK(ct_task_wait(t, -1));
  ct_task_unref(t);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  ct_stats_t s = CT_STATS_INIT; /* at rest: a loop counts its task after the callback */
  CHECK_OK(ct_supervisor_stats(sup, &s));
  CHECK_EQ_INT((int)s.submitted, 1);
  CHECK_EQ_INT((int)s.completed, 1);
  CHECK_OK(ct_supervisor_free(sup));
  stop_and_free(other);
}

/* A call that starts a watcher of its own and unreferences the loop (the
 * libev idiom for a watcher that should not keep a loop alive): once the
 * watcher has stopped, libev counts no active watcher and its run returns.
 * The loop ended there, and what was posted later was accepted and never
 * run (the supervisor's own loop: the supervisor turned STOPPED by
 * itself). Both loops go on. */
static void start_unreferenced_timer(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  probe_t *p = data;
  ev_timer_init(&p->timer, timer_fired, 0.001, 0.);
  p->timer.data = p;
  ev_timer_start(ev, &p->timer);
  ev_unref(ev);
}

static json_t *count_task(ct_task_t *self, void *arg) {
  (void)self;
  atomic_fetch_add(&((probe_t *)arg)->count, 1);
  return NULL;
}

static void a_loop_goes_on_after_a_call_unreferences_it(bool own) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_loop_t *loop = ct_supervisor_loop(sup);
  if (!own)
    CHECK_OK(ct_loop_create(sup, "unreferenced", &loop));
  probe_t p = {0};
  CHECK_OK(ct_loop_call(loop, start_unreferenced_timer, &p));
  WAIT_FOR(atomic_load(&p.done)); /* the timer fired and stopped */
  CHECK(pthread_equal(loop_thread(loop), loop_thread(loop))); /* calls still run */
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.loop = loop;
  ct_task_t *t;
  CHECK_OK(ct_background_task(sup, count_task, &p, &o, &t));
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(atomic_load(&p.count), 1);
  ct_task_unref(t);
  CHECK_OK(ct_background_task(sup, count_task, &p, NULL, &t)); /* the supervisor runs */
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  ct_task_unref(t);
  stop_and_free(sup);
}

TEST(an_extra_loop_goes_on_after_a_call_unreferences_it) {
  a_loop_goes_on_after_a_call_unreferences_it(false);
}

TEST(the_supervisors_loop_goes_on_after_a_call_unreferences_it) {
  a_loop_goes_on_after_a_call_unreferences_it(true);
}

int main(void) {
  RUN(an_extra_loop_goes_on_after_a_call_unreferences_it);
  RUN(the_supervisors_loop_goes_on_after_a_call_unreferences_it);
  RUN(user_watcher_through_a_call);
  RUN(named_loops);
  RUN(task_on_a_loop);
  RUN(workers_on_a_loop);
  RUN(stop_waits_for_a_call_that_looks_up_loops);
  RUN(stop_waits_for_tasks_queued_on_extra_loops);
  RUN(waiting_stop_from_an_extra_loop_is_a_deadlock_error);
  RUN(loop_of_another_supervisor_is_refused);
  return check_done();
}
