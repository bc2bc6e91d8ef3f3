/* Results: the exception-shaped error object and questions about it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "ctasker/result.h"

/* `text` as valid UTF-8: itself, or else a repaired copy put in *copy
 * (NULL if out of memory). */
static const char *valid_text(const char *text, char **copy) {
  *copy = NULL;
  if (ct__utf8_valid(text, strlen(text)))
    return text;
  return *copy = ct__utf8_repair(text);
}

/* A message is often made from outside input (a name, a path, a peer's
 * bytes): jansson would refuse it if it were not UTF-8, and a NULL from a
 * task function means a null result, so a failure would pass for a
 * success. The message and the class are repaired instead. */
json_t *ct_error_newv(const char *cls, const char *fmt, va_list ap) {
  if (!cls)
    return NULL;
  char *msg = NULL;
  if (vasprintf(&msg, fmt ? fmt : "", ap) < 0)
    return NULL;
  char *msg_copy, *cls_copy;
  const char *m = valid_text(msg, &msg_copy), *c = valid_text(cls, &cls_copy);
  json_t *result = m && c ? json_pack("{s:{s:s, s:[s], s:s}}", "exception", "class", c, "args",
                                      m, "str", m)
                          : NULL;
  free(msg);
  free(msg_copy);
  free(cls_copy);
  return result;
}

json_t *ct_error_new(const char *cls, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  json_t *result = ct_error_newv(cls, fmt, ap);
  va_end(ap);
  return result;
}

static const json_t *exception_of(const json_t *result) {
  if (!json_is_object(result))
    return NULL;
  json_t *exc = json_object_get(result, "exception");
  return json_is_object(exc) ? exc : NULL;
}

bool ct_result_is_error(const json_t *result) { return exception_of(result) != NULL; }

const char *ct_result_error_class(const json_t *result) {
  const json_t *exc = exception_of(result);
  return exc ? json_string_value(json_object_get(exc, "class")) : NULL;
}

const char *ct_result_error_str(const json_t *result) {
  const json_t *exc = exception_of(result);
  return exc ? json_string_value(json_object_get(exc, "str")) : NULL;
}

bool ct_result_is_error_class(const json_t *result, const char *cls) {
  if (!cls)
    return ct_result_is_error(result);
  const char *own = ct_result_error_class(result);
  return own && strcmp(own, cls) == 0;
}
