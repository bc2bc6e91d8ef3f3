/* Allocation failure on demand ("chaos"), shared by the tests that make
 * the 1st, 2nd, 3rd... allocation of a call fail in turn (test-chaos,
 * broker/test-broker-async-chaos).
 *
 * The library's allocations reach the __wrap_ functions below through the
 * linker's --wrap (chaos_link_args in tests/meson.build), so include this
 * header in exactly one file of a binary linked with them. Only the armed
 * thread's allocations are counted, so the library's other threads are not
 * disturbed. Works under ASan and TSan: the real allocator is reached
 * through the __real_ symbols, which the sanitizers intercept.
 *
 * chaos_arm(k) makes the k-th allocation (from 0) on this thread fail;
 * chaos_disarm() stops failing and says whether that allocation was made.
 */
#ifndef CT_TESTS_CHAOS_H
#define CT_TESTS_CHAOS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_aligned_alloc(size_t align, size_t size);
char *__real_strdup(const char *s);
int __real_vasprintf(char **out, const char *fmt, va_list ap);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_aligned_alloc(size_t align, size_t size);
char *__wrap_strdup(const char *s);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);

/* The index of the allocation to fail on this thread, or -1; how many
 * have been made since chaos_arm(); whether the armed one was reached. */
static _Thread_local long chaos_fail_at = -1;
static _Thread_local long chaos_allocs;
static _Thread_local bool chaos_failed;

static inline void chaos_arm(long k) {
  chaos_fail_at = k;
  chaos_allocs = 0;
  chaos_failed = false;
}

/* Stop failing; returns whether the armed allocation was reached. */
static inline bool chaos_disarm(void) {
  chaos_fail_at = -1;
  return chaos_failed;
}

static inline bool chaos_should_fail(void) {
  if (chaos_fail_at < 0 || chaos_allocs++ != chaos_fail_at)
    return false;
  chaos_failed = true;
  return true;
}

void *__wrap_malloc(size_t size) { return chaos_should_fail() ? NULL : __real_malloc(size); }
void *__wrap_calloc(size_t n, size_t size) {
  return chaos_should_fail() ? NULL : __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t size) {
  return chaos_should_fail() ? NULL : __real_realloc(p, size);
}
void *__wrap_aligned_alloc(size_t align, size_t size) {
  return chaos_should_fail() ? NULL : __real_aligned_alloc(align, size);
}
char *__wrap_strdup(const char *s) { return chaos_should_fail() ? NULL : __real_strdup(s); }
int __wrap_vasprintf(char **out, const char *fmt, va_list ap) {
  if (chaos_should_fail()) {
    *out = NULL;
    return -1;
  }
  return __real_vasprintf(out, fmt, ap);
}

#endif
