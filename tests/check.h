/* A small assertion header shared by the test binaries.
 *
 * CHECK(cond) and the CHECK_* forms print the failing expression with its
 * file and line and abort the test binary (a failed test). TEST(name)
 * declares a test function; RUN(name) runs it and prints its name. Each
 * binary's main() calls RUN for its tests and returns check_done().
 */
#ifndef CT_TESTS_CHECK_H
#define CT_TESTS_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
  do {                                                                         \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);            \
    if (check_a_ != check_b_) {                                                \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n",        \
              __FILE__, __LINE__, #a, #b, check_a_, check_b_);                 \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define CHECK_EQ_STR(a, b)                                                     \
  do {                                                                         \
    const char *check_a_ = (a), *check_b_ = (b);                               \
    if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {          \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n",    \
              __FILE__, __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",      \
              check_b_ ? check_b_ : "(null)");                                 \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* A return code that must be 0; prints ct_strerror() otherwise. */
#define CHECK_OK(expr)                                                         \
  do {                                                                         \
    int check_rc_ = (expr);                                                    \
    if (check_rc_ != 0) {                                                      \
      fprintf(stderr, "%s:%d: %s returned %d (%s)\n", __FILE__, __LINE__,      \
              #expr, check_rc_, ct_strerror(check_rc_));                       \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static int check_tests_run;

#define TEST(name) static void test_##name(void)
#define RUN(name)                                                              \
  do {                                                                         \
    fprintf(stderr, "-- %s\n", #name);                                         \
    test_##name();                                                             \
    check_tests_run++;                                                         \
  } while (0)

static inline int check_done(void) {
  fprintf(stderr, "%d tests passed\n", check_tests_run);
  return check_tests_run > 0 ? 0 : 1;
}

/* Sleep for `seconds` (tests use it only to let something happen, never to
 * assert a duration). */
static inline void check_sleep(double seconds) {
  struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* Poll until cond holds, for at most about 20 s (a generous bound; tests
 * never assert durations). */
#define WAIT_FOR(cond)                                                         \
  do {                                                                         \
    for (int wait_i_ = 0; !(cond); wait_i_++) {                                \
      CHECK(wait_i_ < 20000);                                                  \
      check_sleep(0.001);                                                      \
    }                                                                          \
  } while (0)

#endif
