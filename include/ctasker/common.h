/** @file
 * ctasker — common definitions: export macro, error codes, priorities, time.
 *
 * Errors follow libuv's convention: a function returns 0 (or a non-negative
 * value where documented) on success and a negative CT_E* code on failure.
 * ct_strerror() turns a code into a message. If a function that takes a
 * callback returns an error, that callback is never called.
 */
#ifndef CTASKER_COMMON_H
#define CTASKER_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CT_BUILDING_LIBRARY) && defined(__GNUC__)
#define CT_EXPORT __attribute__((visibility("default")))
#else
#define CT_EXPORT
#endif

/** The error table: name, errno value it maps to, message. */
#define CT_ERRNO_MAP(XX)                                                       \
  XX(EINVAL, EINVAL, "invalid argument")                                       \
  XX(ENOMEM, ENOMEM, "out of memory")                                          \
  XX(ESHUTDOWN, ESHUTDOWN, "not running (not started, stopping or stopped)")  \
  XX(ETIMEDOUT, ETIMEDOUT, "timed out")                                        \
  XX(EBUSY, EBUSY, "running or in use")                                        \
  XX(ENOENT, ENOENT, "no such task, worker, loop, name or process pool")       \
  XX(EALREADY, EALREADY, "already finished")                                   \
  XX(ENOBUFS, ENOBUFS, "queue is full")                                        \
  XX(EDEADLK, EDEADLK, "the call would wait for itself")                       \
  XX(EAGAIN, EAGAIN, "resource temporarily unavailable")                       \
  XX(ENOTSUP, ENOTSUP, "not supported in this state or build")                 \
  XX(EMFILE, EMFILE, "out of file descriptors")

/** The CT_E* codes: each is the negative errno value of its table entry.
 * CT_OK (0) is success.
 *
 * A code says what kind of failure it was; the log callback says more. A
 * refusal because the supervisor was never started is CT_ESHUTDOWN, as for
 * one that stopped (callers that test for "not running" keep working), and
 * is logged as "not started"; a process task or process worker refused for
 * want of a process pool is CT_ENOENT, logged as such; every CT_EINVAL
 * caused by an options struct logs which field was wrong and why. */
enum ct_errno {
  CT_OK = 0,
#define CT__ERR_ENUM(name, val, msg) CT_##name = -(val),
  CT_ERRNO_MAP(CT__ERR_ENUM)
#undef CT__ERR_ENUM
};

/** Message for a CT_E* code ("success" for 0, "unknown error" for others).
 * Returns a static string. Thread-safety: any thread. */
CT_EXPORT const char *ct_strerror(int err);

/** Symbolic name of a CT_E* code ("CT_EINVAL"), "CT_OK" for 0, or "CT_UNKNOWN".
 * Thread-safety: any thread. */
CT_EXPORT const char *ct_err_name(int err);

/** Priorities: a lower number runs first; equal ones run in submission order.
 * Any integer from CT_PRIORITY_CRITICAL to CT_PRIORITY_MAX is valid. */
enum {
  CT_PRIORITY_CRITICAL = 0,
  CT_PRIORITY_HIGH = 50,
  CT_PRIORITY_NORMAL = 100,
  CT_PRIORITY_LOW = 200,
  CT_PRIORITY_MAX = 255
};

/** Log levels, as Python's logging numbers them. */
enum ct_log_level { CT_LOG_DEBUG = 10, CT_LOG_INFO = 20, CT_LOG_WARNING = 30, CT_LOG_ERROR = 40 };

/** Receives the library's log lines. The library never prints by itself.
 * Called from any of the supervisor's threads; must be thread-safe. */
typedef void (*ct_log_fn)(int level, const char *msg, void *data);

/** Seconds on the monotonic clock, the time base of every timestamp ctasker
 * reports. Thread-safety: any thread.
 *
 * Every seconds argument and option is a double: NaN is always CT_EINVAL.
 * A timeout or a limit (waits, stops, keepalive, timeout_warning and
 * timeout_critical, task_timeout) given as INFINITY, or any value from 1e9
 * seconds (over 30 years) on, has no bound: a wait waits until done, a
 * limit never expires. A delay or an interval (a task's delay, an interval
 * worker's interval, delay and delay_before) must be finite (INFINITY is
 * CT_EINVAL); a huge finite one is honoured: it lies beyond the life of
 * the process. */
CT_EXPORT double ct_now(void);

#ifdef __cplusplus
}
#endif
#endif
