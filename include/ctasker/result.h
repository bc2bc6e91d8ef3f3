/** @file
 * ctasker — task results as JSON.
 *
 * A task returns a jansson json_t. A failure is a result of the shape
 *   {"exception": {"class": "ValueError", "args": ["bad input"], "str": "bad input"}}
 * so that it crosses thread, process and machine boundaries unchanged.
 * The library itself uses the classes TimeoutError, CancelledError,
 * ProcessCrashed, NotSerializable and UnknownTask.
 *
 * Ownership follows jansson: "new reference" means the caller owns the
 * returned value and must json_decref() it.
 */
#ifndef CTASKER_RESULT_H
#define CTASKER_RESULT_H

#include <jansson.h>
#include <stdarg.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A new error result of class `cls` whose message is printf-formatted.
 * Bytes of the class or the message that are not valid UTF-8 (JSON text
 * must be) are each replaced by U+FFFD, so a message made from any input
 * still gives an error. Returns a new reference, or NULL if out of memory
 * or cls is NULL.
 * Thread-safety: any thread. */
CT_EXPORT json_t *ct_error_new(const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
CT_EXPORT json_t *ct_error_newv(const char *cls, const char *fmt, va_list ap); /**< with a va_list */

/** True if `result` has the error shape above. NULL is not an error.
 * Thread-safety: any thread (results are immutable once published). */
CT_EXPORT bool ct_result_is_error(const json_t *result);

/** The class / message of an error result (borrowed strings, valid as long
 * as the result), or NULL if `result` is not an error. */
CT_EXPORT const char *ct_result_error_class(const json_t *result);
CT_EXPORT const char *ct_result_error_str(const json_t *result); /**< see ct_result_error_class() */

/** True if `result` is an error of class `cls` (for a NULL cls: any error,
 * as ct_result_is_error()); false for NULL, a result that is not an error,
 * or another class. So
 * ct_result_is_error_class(ct_task_result(t), "TimeoutError") is safe for
 * any task, NULL or not yet terminal included. Thread-safety: any thread. */
CT_EXPORT bool ct_result_is_error_class(const json_t *result, const char *cls);

#ifdef __cplusplus
}
#endif
#endif
