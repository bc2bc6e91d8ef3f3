/* Length-prefixed JSON frames (see frame.h for the format).
 *
 * The decoder is a two-state machine: collect the 4 header bytes, then
 * collect the payload into a buffer of exactly its announced length, parse
 * it, hand it out and start over. Nothing is shared: one decoder per stream,
 * used by one thread.
 */
#include "process/frame.h"

#include <stdlib.h>
#include <string.h>

void ct__frame_decoder_init(ct__frame_decoder_t *d, size_t max) {
  memset(d, 0, sizeof *d);
  d->max = max;
}

void ct__frame_decoder_reset(ct__frame_decoder_t *d) {
  free(d->payload);
  ct__frame_decoder_init(d, d->max);
}

static size_t header_length(const unsigned char *h) {
  return (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | (size_t)h[3];
}

/* The header is complete: check the length and allocate the payload. */
static int start_payload(ct__frame_decoder_t *d) {
  size_t len = header_length(d->header);
  if (len == 0)
    return CT__FRAME_MALFORMED;
  if (len > d->max)
    return CT__FRAME_TOO_BIG;
  d->payload = malloc(len);
  if (!d->payload)
    return CT__FRAME_NOMEM;
  d->payload_len = len;
  d->payload_have = 0;
  return 0;
}

/* The payload is complete: parse it and start the next frame. Strings may
 * hold U+0000, as ct__frame_encode() writes them. */
static int finish_payload(ct__frame_decoder_t *d, json_t **out) {
  json_error_t err;
  *out = json_loadb(d->payload, d->payload_len, JSON_ALLOW_NUL, &err);
  free(d->payload);
  d->payload = NULL;
  d->header_have = 0;
  return *out ? 0 : CT__FRAME_MALFORMED;
}

/* Take bytes into the current frame; *frame is set when one is complete. */
static int take(ct__frame_decoder_t *d, const unsigned char **p, size_t *n, json_t **frame) {
  *frame = NULL;
  if (d->header_have < CT__FRAME_HEADER) {
    size_t k = CT__FRAME_HEADER - d->header_have;
    k = k < *n ? k : *n;
    memcpy(d->header + d->header_have, *p, k);
    d->header_have += k;
    *p += k;
    *n -= k;
    return d->header_have == CT__FRAME_HEADER ? start_payload(d) : 0;
  }
  size_t k = d->payload_len - d->payload_have;
  k = k < *n ? k : *n;
  memcpy(d->payload + d->payload_have, *p, k);
  d->payload_have += k;
  *p += k;
  *n -= k;
  return d->payload_have == d->payload_len ? finish_payload(d, frame) : 0;
}

int ct__frame_feed(ct__frame_decoder_t *d, const void *data, size_t n, ct__frame_fn fn,
                   void *ctx) {
  const unsigned char *p = data;
  if (d->error)
    return d->error;
  while (n > 0) {
    json_t *frame;
    int rc = take(d, &p, &n, &frame);
    if (rc != 0)
      return d->error = rc;
    if (frame && (rc = fn(ctx, frame)) != 0) {
      d->error = CT__FRAME_MALFORMED;
      return rc;
    }
  }
  return 0;
}

int ct__frame_eof(const ct__frame_decoder_t *d) {
  if (d->error)
    return d->error;
  return d->header_have > 0 ? CT__FRAME_TRUNCATED : 0;
}

int ct__frame_encode(const json_t *value, size_t max, char **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  if (!json_is_object(value) && !json_is_array(value))
    return CT__FRAME_UNENCODABLE;
  size_t len = json_dumpb(value, NULL, 0, JSON_COMPACT);
  if (len == 0)
    return CT__FRAME_UNENCODABLE;
  if (len > max || len > UINT32_MAX)
    return CT__FRAME_TOO_BIG;
  char *buf = malloc(CT__FRAME_HEADER + len);
  if (!buf)
    return CT__FRAME_NOMEM;
  if (json_dumpb(value, buf + CT__FRAME_HEADER, len, JSON_COMPACT) != len) {
    free(buf);
    return CT__FRAME_UNENCODABLE;
  }
  buf[0] = (char)(len >> 24);
  buf[1] = (char)(len >> 16);
  buf[2] = (char)(len >> 8);
  buf[3] = (char)len;
  *out = buf;
  *out_len = CT__FRAME_HEADER + len;
  return 0;
}

const char *ct__frame_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
  case CT__FRAME_TOO_BIG:
    return "frame larger than the limit";
  case CT__FRAME_MALFORMED:
    return "malformed frame";
  case CT__FRAME_TRUNCATED:
    return "truncated frame";
  case CT__FRAME_UNENCODABLE:
    return "value cannot be encoded as JSON";
  case CT__FRAME_NOMEM:
    return "out of memory";
  default:
    return "unknown frame error";
  }
}
