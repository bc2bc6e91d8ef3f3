/* One fuzz input through the frame decoder: the bytes are split into chunks
 * whose sizes come from the input itself, then the stream is ended. Every
 * decoded frame is encoded again and must decode to an equal value. Shared
 * by the libFuzzer target and the corpus test. */
#ifndef CT_TESTS_FUZZ_FRAME_INPUT_H
#define CT_TESTS_FUZZ_FRAME_INPUT_H

#include <stdlib.h>

#include "process/frame.h"

static int fuzz_frame_check(void *ctx, json_t *frame) {
  (void)ctx;
  char *buf;
  size_t len;
  if (ct__frame_encode(frame, 4096, &buf, &len) == 0) {
    json_t *again = json_loadb(buf + CT__FRAME_HEADER, len - CT__FRAME_HEADER, 0, NULL);
    if (!json_equal(frame, again))
      abort();
    json_decref(again);
    free(buf);
  }
  json_decref(frame);
  return 0;
}

static void fuzz_frame_input(const unsigned char *data, size_t size) {
  ct__frame_decoder_t d;
  ct__frame_decoder_init(&d, 4096);
  size_t step = size > 0 ? (size_t)data[0] % 17 + 1 : 1;
  for (size_t off = 0; off < size; off += step) {
    size_t k = size - off < step ? size - off : step;
    if (ct__frame_feed(&d, data + off, k, fuzz_frame_check, NULL) != 0)
      break;
  }
  (void)ct__frame_eof(&d);
  ct__frame_decoder_reset(&d);
}

#endif
