/* Extra loops made while a supervisor's stop begins. The stop asks every
 * extra loop to end, then waits for them all; a loop made after it asked
 * (the state still RUNNING) would never be asked, and a waiting stop would
 * never return. Such a loop is refused instead, as once the state has
 * changed. (The broker makes a connection's loop when it needs one, on
 * another loop's thread, so it can meet this moment.)
 *
 * The moment is reached at will: the supervisor's call that asks the loops
 * to end, ct__loops_stop_all(), is routed through __wrap_ct__loops_stop_all()
 * by the linker (--wrap, see tests/meson.build), which makes a loop right
 * after it, on the stopping thread, while `armed`.
 */
#include <stdbool.h>

#include "gate.h"

void __real_ct__loops_stop_all(ct_supervisor_t *sup);
void __wrap_ct__loops_stop_all(ct_supervisor_t *sup);

static bool armed;
static int tried; /* loops the wrapper tried to make */

/* Checked here, so that a loop made now fails the test at once instead of
 * holding the stop. The test makes one stop call only: a second would ask
 * such a loop to end, and hide it. */
void __wrap_ct__loops_stop_all(ct_supervisor_t *sup) {
  __real_ct__loops_stop_all(sup);
  if (!armed)
    return;
  armed = false;
  tried++;
  ct_loop_t *made;
  CHECK_EQ_INT(ct_loop_create(sup, "made-as-the-stop-begins", &made), CT_ESHUTDOWN);
  CHECK(made == NULL);
}

static void note_ran(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  *(int *)data += 1;
}

/* The loop is refused, and the stop completes; a loop made before it ran
 * what it held and ended. */
TEST(a_loop_made_as_the_stop_begins_is_refused) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0);
  ct_loop_t *before;
  CHECK_OK(ct_loop_create(sup, "before", &before));
  int ran = 0;
  CHECK_OK(ct_loop_call(before, note_ran, &ran));
  armed = true;
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, 30)); /* bounded, generously */
  CHECK_EQ_INT(tried, 1);
  CHECK_EQ_INT(ran, 1);
  CHECK_EQ_INT(ct_loop_call(before, note_ran, &ran), CT_ESHUTDOWN);
  CHECK_OK(ct_supervisor_free(sup));
}

int main(void) {
  RUN(a_loop_made_as_the_stop_begins_is_refused);
  return check_done();
}
