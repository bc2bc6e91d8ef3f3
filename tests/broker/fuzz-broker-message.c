/* libFuzzer target for the broker's decoders (built with clang only): the
 * input is split at NUL bytes into field names and values, then decoded
 * as a stream entry (and its attempt field) and as a task record; whole,
 * it is decoded as a done list's entry. */
#include <stdint.h>
#include <string.h>

#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ct__bfield_t f[16];
  const char *p = (const char *)data, *end = p + size;
  size_t n = 0;
  while (p < end && n < 16) {
    const char *a = p, *a_end = memchr(a, '\0', (size_t)(end - a));
    if (!a_end)
      a_end = end;
    const char *b = a_end < end ? a_end + 1 : end, *b_end = memchr(b, '\0', (size_t)(end - b));
    if (!b_end)
      b_end = end;
    f[n++] = (ct__bfield_t){a, (size_t)(a_end - a), b, (size_t)(b_end - b)};
    p = b_end < end ? b_end + 1 : end;
  }
  ct__bmsg_t m;
  const char *reason = NULL;
  if (ct__bmsg_decode(f, n, 4096, &m, &reason) == 0)
    ct__bmsg_clear(&m);
  int64_t run = ct__bmsg_attempt(f, n);
  if (run < 1 || run > CT__BMSG_ATTEMPT_MAX)
    __builtin_trap();
  ct_broker_info_t info;
  if (ct__brecord_decode(f, n, &info, &reason) == 0)
    json_decref(info.result);
  if (ct__bdone_decode((const char *)data, size, &info) == 0)
    json_decref(info.result);
  return 0;
}
