/* UTF-8 checks for text that must become JSON or a Prometheus label.
 * jansson refuses a string that is not valid UTF-8 (json_string() returns
 * NULL), so text that comes from outside (a task name read from Redis, a
 * message a handler formats from its input) is checked or repaired first.
 */
#ifndef CT_LIB_UTF8_H
#define CT_LIB_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s[0..len) is valid UTF-8: no stray continuation byte, no
 * truncated or overlong sequence, no surrogate, nothing above U+10FFFF.
 * NUL bytes count as valid (callers that refuse them check for them). */
bool ct__utf8_valid(const char *s, size_t len);

/* A copy of the NUL-terminated `s` (malloc'd) in which every byte that does
 * not begin a valid sequence is replaced by U+FFFD; NULL if out of memory. */
char *ct__utf8_repair(const char *s);

#endif
