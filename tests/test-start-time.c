/* A task's start time, read from another thread while the task starts: a
 * thread that polls a task's status and start time never sees it STARTED
 * (or COMPLETED) without its start time, nor a start time earlier than its
 * queueing time, whichever executor runs it (a pool thread, an extra loop,
 * the process pool). The executor stamps the time before the status that
 * publishes it; the other way round, a poller could read the status before
 * the stamp (a start time of 0), and the two threads' accesses to the time
 * were a data race (TSan reported it). Each task waits until the poller
 * has seen it STARTED and said so, so every round checks a running task.
 * A pool thread that goes straight on from one task to the next stamps the
 * first one's end and the second one's start with one clock read, unless
 * the second was queued after that end; and a thread overtaken meanwhile
 * by another does not stamp a start earlier than that one's (start times
 * follow the start order, which test-priority reads from them). */
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>

#include "gate.h"
#include "pool.h"

#define ROUNDS 2000
#define PROCESS_ROUNDS 200

/* Poll t from its submission to its end, checking its start time against
 * its status and queueing time; the first time it is seen STARTED,
 * tell(data) lets it return. */
static void poll_until_completed(ct_task_t *t, void (*tell)(void *), void *data) {
  double queued = ct_task_time_queued(t);
  CHECK(queued > 0);
  double give_up = ct_now() + WAIT_BOUND_S;
  bool seen = false;
  for (;;) {
    ct_task_status_t status = ct_task_status(t);
    double started = ct_task_time_started(t); /* read after the status */
    if (status == CT_TASK_STARTED || status == CT_TASK_COMPLETED)
      CHECK(started > 0);
    if (started != 0)
      CHECK(started >= queued);
    if (status == CT_TASK_STARTED && !seen) {
      seen = true;
      tell(data);
    }
    if (status == CT_TASK_COMPLETED)
      break;
    CHECK(status == CT_TASK_QUEUED || status == CT_TASK_STARTED);
    CHECK(ct_now() < give_up);
  }
  CHECK(seen);
}

static void tell_flag(void *flag) { atomic_store((atomic_bool *)flag, true); }

/* On a pool thread or a loop: returns once the poller has seen it run (or
 * after a generous bound: the poller then fails on its own check). */
static json_t *wait_for_flag(ct_task_t *self, void *arg) {
  (void)self;
  atomic_bool *seen = arg;
  double give_up = ct_now() + WAIT_BOUND_S;
  while (!atomic_load(seen) && ct_now() < give_up)
    sched_yield();
  return NULL;
}

/* Submit wait_for_flag ROUNDS times to `loop` (NULL: the pool) and poll
 * each task. */
static void poll_rounds(ct_supervisor_t *sup, ct_loop_t *loop) {
  for (int i = 0; i < ROUNDS; i++) {
    atomic_bool seen = false;
    ct_task_opts_t o = CT_TASK_OPTS_INIT;
    o.loop = loop;
    ct_task_t *t;
    CHECK_OK(ct_background_task(sup, wait_for_flag, &seen, &o, &t));
    poll_until_completed(t, tell_flag, &seen);
    CHECK_OK(ct_task_wait(t, -1)); /* the executor is done with `seen` */
    ct_task_unref(t);
  }
}

TEST(a_pool_task_is_never_seen_started_without_its_start_time) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  poll_rounds(sup, NULL);
  stop_and_free(sup);
}

TEST(a_loop_task_is_never_seen_started_without_its_start_time) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_loop_t *loop;
  CHECK_OK(ct_loop_create(sup, "poll", &loop));
  poll_rounds(sup, loop);
  stop_and_free(sup);
}

static json_t *empty_task(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

/* A pool thread that goes straight from one task to the next reads the
 * clock once for the first one's end and the second one's start. */
TEST(a_thread_going_straight_to_the_next_task_starts_it_when_the_last_ended) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  gate_t gate;
  gate_init(&gate);
  ct_task_t *first, *second;
  CHECK_OK(ct_background_task(sup, gate_task, &gate, NULL, &first));
  gate_wait_arrived(&gate, 1);
  CHECK_OK(ct_background_task(sup, empty_task, NULL, NULL, &second)); /* queued behind it */
  gate_open(&gate);
  CHECK_OK(ct_task_wait(second, -1));
  CHECK(ct_task_time_started(second) == ct_task_time_completed(first));
  CHECK(ct_task_time_queued(second) <= ct_task_time_started(second));
  ct_task_unref(first);
  ct_task_unref(second);
  gate_destroy(&gate);
  stop_and_free(sup);
}

typedef struct {
  ct_supervisor_t *sup;
  ct_task_t *next;
} submit_next_t;

/* on_done: runs after the task's end is stamped, before its thread looks
 * for the next task, which this submits. */
static void submit_next(ct_task_t *t, void *data) {
  (void)t;
  submit_next_t *s = data;
  CHECK_OK(ct_background_task(s->sup, empty_task, NULL, NULL, &s->next));
}

/* ... but a task queued after that end does not start before it was
 * queued: its start comes from the clock. */
TEST(a_task_queued_after_the_last_one_ended_starts_after_it_was_queued) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  for (int i = 0; i < 200; i++) {
    submit_next_t s = {sup, NULL};
    ct_task_opts_t o = CT_TASK_OPTS_INIT;
    o.on_done = submit_next;
    o.done_data = &s;
    ct_task_t *first;
    CHECK_OK(ct_background_task(sup, empty_task, NULL, &o, &first));
    CHECK_OK(ct_task_wait(first, -1)); /* after on_done: s.next is set */
    CHECK_OK(ct_task_wait(s.next, -1));
    CHECK(ct_task_time_queued(s.next) >= ct_task_time_completed(first));
    CHECK(ct_task_time_started(s.next) >= ct_task_time_queued(s.next));
    ct_task_unref(first);
    ct_task_unref(s.next);
  }
  stop_and_free(sup);
}

static void tell_file(void *path) {
  int fd = open(path, O_CREAT | O_WRONLY, 0600);
  CHECK(fd >= 0);
  close(fd);
}

/* In a pool child: returns once the file args.path exists (or after a
 * generous bound). */
static json_t *wait_for_file(uint64_t task_id, json_t *args, void *data) {
  (void)task_id;
  (void)data;
  const char *path = json_string_value(json_object_get(args, "path"));
  double give_up = ct_now() + WAIT_BOUND_S;
  while (access(path, F_OK) != 0 && ct_now() < give_up)
    check_sleep(0.0001);
  return NULL;
}

TEST(a_process_task_is_never_seen_started_without_its_start_time) {
  char dir[] = "/tmp/ct-start-time-XXXXXX";
  CHECK(mkdtemp(dir));
  char path[sizeof dir + 16];
  snprintf(path, sizeof path, "%s/seen", dir);
  json_t *args = json_pack("{s:s}", "path", path);
  CHECK_OK(ct_process_register("wait_for_file", wait_for_file, NULL));
  ct_supervisor_t *sup = pool_sup_start(NULL, 1, 0);
  for (int i = 0; i < PROCESS_ROUNDS; i++) {
    ct_task_t *t;
    CHECK_OK(ct_process_task(sup, "wait_for_file", args, NULL, &t));
    poll_until_completed(t, tell_file, path);
    CHECK_OK(ct_task_wait(t, -1));
    CHECK(!ct_task_failed(t));
    ct_task_unref(t);
    CHECK_OK(unlink(path));
  }
  json_decref(args);
  stop_and_free(sup);
  CHECK_OK(rmdir(dir));
}

typedef struct {
  gate_t gate;             /* holds the first two tasks */
  atomic_bool first_ended; /* the first task's on_done has begun */
  ct_task_t *next;         /* the task the other thread starts meanwhile */
  ct_task_t *last;         /* the one the first task's thread starts after */
} overtaken_t;

static bool has_started(ct_task_t *t) {
  ct_task_status_t s = ct_task_status(t);
  return s == CT_TASK_STARTED || s == CT_TASK_COMPLETED;
}

/* on_done of the first task: its end is stamped; its thread waits here
 * until the other thread has started the next task. */
static void hold_until_next_started(ct_task_t *t, void *data) {
  (void)t;
  overtaken_t *o = data;
  atomic_store(&o->first_ended, true);
  WAIT_FOR(has_started(o->next));
}

/* The second running task: ends after the first one did. */
static json_t *end_after_the_first(ct_task_t *self, void *arg) {
  (void)self;
  overtaken_t *o = arg;
  gate_pass(&o->gate);
  WAIT_FOR(atomic_load(&o->first_ended));
  return NULL;
}

/* The next task: keeps its thread until the last one has started. */
static json_t *hold_until_last_started(ct_task_t *self, void *arg) {
  (void)self;
  overtaken_t *o = arg;
  WAIT_FOR(has_started(o->last));
  return NULL;
}

/* ... and start times follow the start order: a thread whose task ended
 * before another thread's, but that takes its next task after that
 * thread took one, does not stamp an earlier start than it. */
TEST(start_times_follow_the_start_order_across_threads) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  overtaken_t o = {.first_ended = false};
  gate_init(&o.gate);
  ct_task_opts_t held = CT_TASK_OPTS_INIT;
  held.on_done = hold_until_next_started;
  held.done_data = &o;
  ct_task_t *first, *second, *next, *last;
  CHECK_OK(ct_background_task(sup, gate_task, &o.gate, &held, &first));
  CHECK_OK(ct_background_task(sup, end_after_the_first, &o, NULL, &second));
  gate_wait_arrived(&o.gate, 2);
  /* Both threads are busy: these two are queued before either task ends. */
  CHECK_OK(ct_background_task(sup, hold_until_last_started, &o, NULL, &next));
  o.next = next; /* read by the tasks once the gate opens */
  CHECK_OK(ct_background_task(sup, empty_task, NULL, NULL, &last));
  o.last = last;
  gate_open(&o.gate);
  ct_task_t *all[] = {first, second, next, last};
  CHECK_OK(ct_wait_completed(all, 4, -1));
  CHECK(ct_task_time_completed(second) > ct_task_time_completed(first));
  CHECK(ct_task_time_started(next) <= ct_task_time_started(last));
  for (int i = 0; i < 4; i++)
    ct_task_unref(all[i]);
  gate_destroy(&o.gate);
  stop_and_free(sup);
}

/* Tasks submitted by two threads and run by two, many at a time: each
 * task's times are in order, queued <= started <= completed, although the
 * clock that stamps them (base/stamp-clock.c) runs in step across threads
 * only within some nanoseconds, and its three stamps of a task come from
 * two threads. A guard of the stamps' order (core/task-internal.h). */
enum { ORDER_TASKS = 50000, ORDER_BATCH = 500 };

static void *submit_and_check_order(void *arg) {
  ct_supervisor_t *sup = arg;
  static _Thread_local ct_task_t *batch[ORDER_BATCH];
  for (int done = 0; done < ORDER_TASKS; done += ORDER_BATCH) {
    for (int i = 0; i < ORDER_BATCH; i++)
      CHECK_OK(ct_background_task(sup, empty_task, NULL, NULL, &batch[i]));
    CHECK_OK(ct_wait_completed(batch, ORDER_BATCH, -1));
    for (int i = 0; i < ORDER_BATCH; i++) {
      double queued = ct_task_time_queued(batch[i]), started = ct_task_time_started(batch[i]);
      CHECK(queued > 0);
      CHECK(started >= queued);
      CHECK(ct_task_time_completed(batch[i]) >= started);
      ct_task_unref(batch[i]);
    }
  }
  return NULL;
}

TEST(each_task_s_times_are_in_order_across_threads) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  pthread_t other;
  CHECK_OK(pthread_create(&other, NULL, submit_and_check_order, sup));
  submit_and_check_order(sup);
  CHECK_OK(pthread_join(other, NULL));
  stop_and_free(sup);
}

int main(void) {
  /* The process pool first, while this thread is the only one (pool.h). */
  RUN(a_process_task_is_never_seen_started_without_its_start_time);
  RUN(a_pool_task_is_never_seen_started_without_its_start_time);
  RUN(a_loop_task_is_never_seen_started_without_its_start_time);
  RUN(a_thread_going_straight_to_the_next_task_starts_it_when_the_last_ended);
  RUN(a_task_queued_after_the_last_one_ended_starts_after_it_was_queued);
  RUN(start_times_follow_the_start_order_across_threads);
  RUN(each_task_s_times_are_in_order_across_threads);
  return check_done();
}
