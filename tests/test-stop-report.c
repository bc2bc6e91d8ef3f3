/* A stop that takes long says what it waits for, through the log, 10 s
 * after it began (then at doubling intervals); a report that finds nothing
 * left to wait for means a wake-up of the stop was missed, and ends it.
 *
 * The missed wake-up is made at will: the stop's look at the extra loops,
 * ct__loops_ended(), is routed through __wrap_ct__loops_ended() by the
 * linker (--wrap, see tests/meson.build), which answers "not ended" for
 * the first 8 s of the stop, so every poke (the extra loop's as it ends)
 * comes too early, and no other comes; the first report, 10 s after the
 * stop began, sees the truth.
 */
#include <stdatomic.h>

#include "gate.h"
#include "logcap.h"

bool __real_ct__loops_ended(ct_supervisor_t *sup);
bool __wrap_ct__loops_ended(ct_supervisor_t *sup);

static _Atomic double hide_end_until;
static atomic_int ends_hidden;

bool __wrap_ct__loops_ended(ct_supervisor_t *sup) {
  bool ended = __real_ct__loops_ended(sup);
  if (ended && ct_now() < atomic_load(&hide_end_until)) {
    atomic_fetch_add(&ends_hidden, 1);
    return false;
  }
  return ended;
}

static logcap_t cap;

static ct_supervisor_t *start_logged(void) {
  ct_supervisor_opts_t o = CT_SUPERVISOR_OPTS_INIT;
  o.pool_size = 1;
  o.log = logcap_fn;
  o.log_data = &cap;
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(&o, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  return sup;
}

/* Waits for a line with both substrings, 60 s at most (the first report
 * comes 10 s after the stop began). */
static bool log_line_comes(const char *a, const char *b) {
  for (int i = 0; i < 600; i++) {
    if (logcap_has(&cap, a, b))
      return true;
    check_sleep(0.1);
  }
  return false;
}

/* A DRAIN stop waits for a running task: the report names it; then the
 * stop completes, and no missed wake-up was seen. */
TEST(a_long_stop_says_what_it_waits_for) {
  logcap_clear(&cap);
  ct_supervisor_t *sup = start_logged();
  gate_t gate;
  gate_init(&gate);
  CHECK_OK(ct_background_task(sup, gate_task, &gate, NULL, NULL));
  gate_wait_arrived(&gate, 1);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 0));
  CHECK(log_line_comes("the stop has waited 10 s for",
                       "the thread pool (0 queued, 1 running, 1 threads)"));
  gate_open(&gate);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 60));
  CHECK(!logcap_has(&cap, "missed wake-up", NULL));
  CHECK_OK(ct_supervisor_free(sup));
  gate_destroy(&gate);
}

/* The extra loop's end is hidden from every poke of the stop; the report
 * finds nothing left to wait for, says so and ends the stop. */
TEST(a_missed_wake_up_of_a_stop_is_reported_and_the_stop_ends) {
  logcap_clear(&cap);
  ct_supervisor_t *sup = start_logged();
  ct_loop_t *extra;
  CHECK_OK(ct_loop_create(sup, "extra", &extra));
  atomic_store(&hide_end_until, ct_now() + 8);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 60));
  CHECK(atomic_load(&ends_hidden) > 0);
  CHECK(logcap_has(&cap, "missed wake-up", "ending it now"));
  CHECK_OK(ct_supervisor_free(sup));
}

int main(void) {
  logcap_init(&cap);
  RUN(a_long_stop_says_what_it_waits_for);
  RUN(a_missed_wake_up_of_a_stop_is_reported_and_the_stop_ends);
  return check_done();
}
