/* Length-prefixed JSON frames: the wire format between the parent, the fork
 * server and the pool's children.
 *
 * A frame is a 4-byte big-endian payload length followed by that many bytes
 * of compact JSON text whose top level is an object or an array. A decoder
 * is fed byte chunks of any size and hands out whole frames; it never holds
 * more than one partial frame and refuses a length above its limit as soon
 * as the header is complete, so a peer cannot make it allocate at will.
 * Errors are sticky: after one, every later feed returns the same error.
 */
#ifndef CT_LIB_FRAME_H
#define CT_LIB_FRAME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define CT__FRAME_HEADER 4

enum ct__frame_err {
  CT__FRAME_TOO_BIG = -1000, /* a length above the limit (or 0 on encode) */
  CT__FRAME_MALFORMED,       /* zero length, or a payload that is not JSON */
  CT__FRAME_TRUNCATED,       /* end of stream inside a frame */
  CT__FRAME_UNENCODABLE,     /* a value jansson cannot dump (invalid UTF-8) */
  CT__FRAME_NOMEM,
};

typedef struct ct__frame_decoder {
  size_t max;                /* largest accepted payload length */
  unsigned char header[CT__FRAME_HEADER];
  size_t header_have;
  char *payload;             /* allocated once the header is complete */
  size_t payload_len, payload_have;
  int error;                 /* 0 or the sticky ct__frame_err */
} ct__frame_decoder_t;

/* Receives one decoded frame (a new reference it must release). Returns 0
 * to go on; anything else stops ct__frame_feed(), which returns it. */
typedef int (*ct__frame_fn)(void *ctx, json_t *frame);

/* Prepare a decoder accepting payloads of at most `max` bytes (> 0). */
void ct__frame_decoder_init(ct__frame_decoder_t *d, size_t max);

/* Free what a decoder holds; it may be initialized again. */
void ct__frame_decoder_reset(ct__frame_decoder_t *d);

/* Consume n bytes, calling fn for each whole frame in order. Returns 0, a
 * ct__frame_err (the decoder is then in error for good), or the first
 * non-zero value fn returned (bytes after that frame are not consumed and
 * the decoder is left in error CT__FRAME_MALFORMED: the caller stopped it). */
int ct__frame_feed(ct__frame_decoder_t *d, const void *data, size_t n, ct__frame_fn fn,
                   void *ctx);

/* At end of stream: 0 if no partial frame is pending, CT__FRAME_TRUNCATED
 * if one is, or the sticky error. */
int ct__frame_eof(const ct__frame_decoder_t *d);

/* Encode `value` (an object or array) as one frame in a new malloc'd buffer
 * (*out, *out_len). Returns 0, CT__FRAME_TOO_BIG if the payload would exceed
 * `max`, CT__FRAME_UNENCODABLE if jansson cannot dump it (or it is not an
 * object or array), CT__FRAME_NOMEM. On error *out is NULL. */
int ct__frame_encode(const json_t *value, size_t max, char **out, size_t *out_len);

/* A short message for a ct__frame_err. */
const char *ct__frame_strerror(int err);

#endif
