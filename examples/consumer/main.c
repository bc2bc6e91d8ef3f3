/* A program that uses ctasker as an outside project does: built by CI once
 * against the installed library with pkg-config and once with ctasker as a
 * meson subproject (see meson.build here). It runs a task, attaches a libev
 * timer on the supervisor's loop (so it needs -lev from ctasker's
 * dependency), checks the library's version against the headers' and prints
 * "ok <version>". Exits non-zero on any failure. */
#include <ctasker.h>
#include <ev.h>
#include <stdio.h>
#include <string.h>

static json_t *answer(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return json_integer(42);
}

static void timer_fired(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)revents;
  ev_timer_stop(ev, w);
}

static void attach_timer(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  ev_timer *timer = data;
  ev_timer_init(timer, timer_fired, 0.001, 0);
  ev_timer_start(ev, timer);
}

int main(void) {
  if (ct_version() != CT_VERSION_HEX || strcmp(ct_version_string(), CT_VERSION_STRING) != 0) {
    fprintf(stderr, "library %s, headers %s\n", ct_version_string(), CT_VERSION_STRING);
    return 1;
  }
  ct_supervisor_t *sup;
  if (ct_supervisor_new(NULL, &sup) != 0 || ct_supervisor_start(sup) != 0)
    return 1;
  static ev_timer timer; /* lives until the loop has ended */
  ct_task_t *t;
  int rc = ct_loop_call(ct_supervisor_loop(sup), attach_timer, &timer);
  if (rc == 0)
    rc = ct_background_task(sup, answer, NULL, NULL, &t);
  if (rc == 0)
    rc = ct_wait_completed(&t, 1, 60);
  long long got = rc == 0 ? json_integer_value(ct_task_result(t)) : -1;
  if (rc == 0)
    ct_task_unref(t);
  if (ct_supervisor_stop(sup, CT_STOP_DRAIN, -1) != 0 || ct_supervisor_free(sup) != 0 || rc != 0 ||
      got != 42) {
    fprintf(stderr, "failed: %s, result %lld\n", ct_strerror(rc), got);
    return 1;
  }
  printf("ok %s\n", ct_version_string());
  return 0;
}
