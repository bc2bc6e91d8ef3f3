/* UTF-8 validation and repair (utf8.h). One decoder serves both: it says
 * how long the valid sequence at a position is, or 0 if none starts there.
 * The rules are RFC 3629's table of well-formed sequences: the second byte's
 * range depends on the first so that overlong forms, surrogates and code
 * points past U+10FFFF are refused.
 */
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"

static bool in(unsigned char c, unsigned char lo, unsigned char hi) { return c >= lo && c <= hi; }

/* Bytes of the valid sequence at s (at most `left` bytes there), or 0. */
static size_t sequence_length(const unsigned char *s, size_t left) {
  unsigned char c = s[0];
  if (c < 0x80)
    return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
  if (in(c, 0xc2, 0xdf))
    n = 2;
  else if (in(c, 0xe0, 0xef)) {
    n = 3;
    lo = c == 0xe0 ? 0xa0 : 0x80; /* not overlong */
    hi = c == 0xed ? 0x9f : 0xbf; /* not a surrogate */
  } else if (in(c, 0xf0, 0xf4)) {
    n = 4;
    lo = c == 0xf0 ? 0x90 : 0x80; /* not overlong */
    hi = c == 0xf4 ? 0x8f : 0xbf; /* not past U+10FFFF */
  } else
    return 0;
  if (left < n || !in(s[1], lo, hi))
    return 0;
  for (size_t i = 2; i < n; i++)
    if (!in(s[i], 0x80, 0xbf))
      return 0;
  return n;
}

bool ct__utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t n = sequence_length(p + i, len - i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD, three bytes */

char *ct__utf8_repair(const char *s) {
  size_t len = strlen(s);
  char *out = malloc(len * 3 + 1); /* each byte may become three */
  if (!out)
    return NULL;
  const unsigned char *p = (const unsigned char *)s;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    size_t n = sequence_length(p + i, len - i);
    if (n == 0) {
      memcpy(out + o, REPLACEMENT, 3);
      o += 3;
      i++;
    } else {
      memcpy(out + o, p + i, n);
      o += n;
      i += n;
    }
  }
  out[o] = '\0';
  return out;
}
