/* Frames: encode/decode round trips, chunking, limits and every error. */
#include <ctasker.h>

#include "check.h"
#include "process/frame.h"

typedef struct {
  json_t *frames[16];
  int n;
  int stop_at; /* return 7 from the callback at this frame, or -1 */
} sink_t;

static int collect(void *ctx, json_t *frame) {
  sink_t *s = ctx;
  CHECK(s->n < 16);
  s->frames[s->n++] = frame;
  return s->n - 1 == s->stop_at ? 7 : 0;
}

static void sink_free(sink_t *s) {
  for (int i = 0; i < s->n; i++)
    json_decref(s->frames[i]);
  s->n = 0;
}

static char *encode(const char *text, size_t *len) {
  json_t *j = json_loads(text, 0, NULL);
  CHECK(j);
  char *buf;
  CHECK_EQ_INT(ct__frame_encode(j, 1 << 20, &buf, len), 0);
  json_decref(j);
  return buf;
}

TEST(round_trip_in_every_chunk_size) {
  size_t l1, l2;
  char *a = encode("{\"id\":1,\"args\":[1,2,\"x\"]}", &l1);
  char *b = encode("[true,null,{\"k\":\"v\"}]", &l2);
  char both[256];
  memcpy(both, a, l1);
  memcpy(both + l1, b, l2);
  for (size_t chunk = 1; chunk <= l1 + l2; chunk++) {
    ct__frame_decoder_t d;
    sink_t s = {.stop_at = -1};
    ct__frame_decoder_init(&d, 1024);
    for (size_t off = 0; off < l1 + l2; off += chunk) {
      size_t k = l1 + l2 - off < chunk ? l1 + l2 - off : chunk;
      CHECK_EQ_INT(ct__frame_feed(&d, both + off, k, collect, &s), 0);
    }
    CHECK_EQ_INT(s.n, 2);
    CHECK_EQ_INT(json_integer_value(json_object_get(s.frames[0], "id")), 1);
    CHECK(json_is_array(s.frames[1]));
    CHECK_EQ_INT(ct__frame_eof(&d), 0);
    sink_free(&s);
    ct__frame_decoder_reset(&d);
  }
  free(a);
  free(b);
}

TEST(oversized_header_is_refused_before_the_payload) {
  ct__frame_decoder_t d;
  sink_t s = {.stop_at = -1};
  ct__frame_decoder_init(&d, 8);
  unsigned char hdr[4] = {0, 0, 0, 9};
  CHECK_EQ_INT(ct__frame_feed(&d, hdr, 4, collect, &s), CT__FRAME_TOO_BIG);
  CHECK_EQ_INT(ct__frame_feed(&d, "{}", 2, collect, &s), CT__FRAME_TOO_BIG); /* sticky */
  CHECK_EQ_INT(ct__frame_eof(&d), CT__FRAME_TOO_BIG);
  unsigned char huge[4] = {0xff, 0xff, 0xff, 0xff};
  ct__frame_decoder_reset(&d);
  CHECK_EQ_INT(ct__frame_feed(&d, huge, 4, collect, &s), CT__FRAME_TOO_BIG);
  CHECK_EQ_INT(s.n, 0);
  ct__frame_decoder_reset(&d);
}

TEST(malformed_and_zero_length) {
  ct__frame_decoder_t d;
  sink_t s = {.stop_at = -1};
  ct__frame_decoder_init(&d, 64);
  const char bad[] = "\0\0\0\3{x}";
  CHECK_EQ_INT(ct__frame_feed(&d, bad, 7, collect, &s), CT__FRAME_MALFORMED);
  ct__frame_decoder_reset(&d);
  const char scalar[] = "\0\0\0\0013";
  CHECK_EQ_INT(ct__frame_feed(&d, scalar, 5, collect, &s), CT__FRAME_MALFORMED);
  ct__frame_decoder_reset(&d);
  const char zero[] = "\0\0\0\0";
  CHECK_EQ_INT(ct__frame_feed(&d, zero, 4, collect, &s), CT__FRAME_MALFORMED);
  CHECK_EQ_INT(s.n, 0);
  ct__frame_decoder_reset(&d);
}

TEST(truncated_at_eof) {
  size_t len;
  char *a = encode("{\"a\":1}", &len);
  for (size_t cut = 1; cut < len; cut++) {
    ct__frame_decoder_t d;
    sink_t s = {.stop_at = -1};
    ct__frame_decoder_init(&d, 64);
    CHECK_EQ_INT(ct__frame_feed(&d, a, cut, collect, &s), 0);
    CHECK_EQ_INT(s.n, 0);
    CHECK_EQ_INT(ct__frame_eof(&d), CT__FRAME_TRUNCATED);
    ct__frame_decoder_reset(&d);
  }
  free(a);
}

TEST(callback_can_stop_the_feed) {
  size_t len;
  char *a = encode("{}", &len);
  char two[32];
  memcpy(two, a, len);
  memcpy(two + len, a, len);
  ct__frame_decoder_t d;
  sink_t s = {.stop_at = 0};
  ct__frame_decoder_init(&d, 64);
  CHECK_EQ_INT(ct__frame_feed(&d, two, 2 * len, collect, &s), 7);
  CHECK_EQ_INT(s.n, 1);
  CHECK(ct__frame_feed(&d, two, 1, collect, &s) != 0);
  sink_free(&s);
  ct__frame_decoder_reset(&d);
  free(a);
}

TEST(encoder_limits_and_bad_values) {
  char *buf;
  size_t len;
  json_t *big = json_pack("{s:s}", "k", "0123456789");
  CHECK_EQ_INT(ct__frame_encode(big, 8, &buf, &len), CT__FRAME_TOO_BIG);
  CHECK(buf == NULL);
  CHECK_EQ_INT(ct__frame_encode(big, 64, &buf, &len), 0);
  CHECK_EQ_INT(len, 4 + strlen("{\"k\":\"0123456789\"}"));
  CHECK_EQ_INT((unsigned char)buf[3], len - 4);
  free(buf);
  json_decref(big);
  json_t *bad = json_pack("{s:o}", "s", json_stringn_nocheck("\xff\xfe", 2));
  CHECK_EQ_INT(ct__frame_encode(bad, 64, &buf, &len), CT__FRAME_UNENCODABLE);
  json_decref(bad);
  json_t *scalar = json_integer(3);
  CHECK_EQ_INT(ct__frame_encode(scalar, 64, &buf, &len), CT__FRAME_UNENCODABLE);
  json_decref(scalar);
  CHECK(strcmp(ct__frame_strerror(CT__FRAME_TRUNCATED), "truncated frame") == 0);
}

/* Whatever the encoder writes, the decoder reads: a string may hold U+0000
 * (jansson writes it as \u0000). */
TEST(nul_in_a_string_round_trips) {
  json_t *v = json_pack("{s:o}", "s", json_stringn("a\0b", 3));
  char *buf;
  size_t len;
  CHECK_EQ_INT(ct__frame_encode(v, 64, &buf, &len), 0);
  ct__frame_decoder_t d;
  sink_t s = {.stop_at = -1};
  ct__frame_decoder_init(&d, 64);
  CHECK_EQ_INT(ct__frame_feed(&d, buf, len, collect, &s), 0);
  CHECK_EQ_INT(s.n, 1);
  CHECK(json_equal(s.frames[0], v));
  sink_free(&s);
  ct__frame_decoder_reset(&d);
  free(buf);
  json_decref(v);
}

int main(void) {
  RUN(round_trip_in_every_chunk_size);
  RUN(nul_in_a_string_round_trips);
  RUN(oversized_header_is_refused_before_the_payload);
  RUN(malformed_and_zero_length);
  RUN(truncated_at_eof);
  RUN(callback_can_stop_the_feed);
  RUN(encoder_limits_and_bad_values);
  return check_done();
}
