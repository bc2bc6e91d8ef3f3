/* The stamp clock (base/stamp-clock.c), linked with the base layer only:
 * its reads follow CLOCK_MONOTONIC, in step across threads, and never go
 * back within a thread. The bounds (a microsecond) are far beyond its
 * error (tens of nanoseconds) and assert no duration: each read is
 * compared with clock_gettime() read around it. */
#include <ctasker/common.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "base/clock.h"
#include "base/stamp-clock.h"
#include "check.h"

#define SLACK 1e-6

/* Long past the rate's calibration (10 ms after the first read), so that
 * the reads that extrapolate are checked too. */
#define RUN_FOR 0.05

TEST(each_read_lies_between_the_clock_reads_around_it) {
  double end = ct__now() + RUN_FOR, last = 0;
  long n = 0;
  for (double before; (before = ct__now()) < end; n++) {
    double stamp = ct__stamp_now(), after = ct__now();
    CHECK(stamp >= before - SLACK);
    CHECK(stamp <= after + SLACK);
    CHECK(stamp >= last);
    last = stamp;
  }
  CHECK(n > 0);
}

/* One thread stamps, then hands a token over; the other stamps once it
 * holds the token: its stamp is not earlier, whichever CPUs they run on. */
typedef struct {
  atomic_long turn; /* even: the first thread's, odd: the second's */
  double stamp[2];  /* each thread's last, read by the other after the handover */
  double end;
} relay_t;

enum { HANDOVERS = 20000 };

static void relay(relay_t *r, int me) {
  for (long k = me; k < 2 * HANDOVERS; k += 2) {
    while (atomic_load_explicit(&r->turn, memory_order_acquire) != k)
      sched_yield(); /* to the other thread, should they share a CPU */
    double now = ct__stamp_now();
    CHECK(now >= r->stamp[!me] - SLACK);
    r->stamp[me] = now;
    atomic_store_explicit(&r->turn, k + 1, memory_order_release);
  }
}

static void *second_thread(void *arg) {
  relay((relay_t *)arg, 1);
  return NULL;
}

TEST(a_read_after_another_thread_s_is_not_earlier) {
  static relay_t r;
  double warm = ct__now() + RUN_FOR; /* calibrated: both threads extrapolate */
  while (ct__now() < warm)
    (void)ct__stamp_now();
  pthread_t th;
  CHECK_OK(pthread_create(&th, NULL, second_thread, &r));
  relay(&r, 0);
  CHECK_OK(pthread_join(th, NULL));
  CHECK_EQ_INT(atomic_load(&r.turn), 2 * HANDOVERS);
}

int main(void) {
  RUN(each_read_lies_between_the_clock_reads_around_it);
  RUN(a_read_after_another_thread_s_is_not_earlier);
  return check_done();
}
