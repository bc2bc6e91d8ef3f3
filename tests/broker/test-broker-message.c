/* The broker's codec without Redis: task messages to stream fields and
 * back, task records, ids, and Redis URLs. Malformed input of every kind
 * is refused with a reason, never read past or crashed on. */
#include <string.h>

#include "../check.h"
#include "message.h"
#include "url.h"

/* The codec is built alone here, without ct_strerror(). */
#undef CHECK_OK
#define CHECK_OK(expr) CHECK_EQ_INT(expr, 0)

#define F(n, v) {n, sizeof n - 1, v, sizeof v - 1}

static const char good_id[] = "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b";

TEST(new_ids_are_version_4_uuids_and_differ) {
  char a[CT_BROKER_ID_SIZE], b[CT_BROKER_ID_SIZE];
  CHECK_OK(ct__bmsg_new_id(a));
  CHECK_OK(ct__bmsg_new_id(b));
  CHECK(ct__bmsg_id_ok(a, strlen(a)));
  CHECK(ct__bmsg_id_ok(b, strlen(b)));
  CHECK_EQ_INT(a[14], '4');
  CHECK(strchr("89ab", a[19]) != NULL);
  CHECK(strcmp(a, b) != 0);
}

TEST(encoded_message_decodes_to_the_same) {
  ct__bmsg_t m = {.enqueued_ms = 1700000000123};
  strcpy(m.id, good_id);
  strcpy(m.name, "resize image");
  m.kwargs = json_pack("{s:i,s:s}", "w", 640, "path", "a\"b");
  ct__bmsg_wire_t w;
  CHECK_OK(ct__bmsg_encode(&m, &w));
  CHECK_EQ_INT(w.argc, 8); /* no deadline: four fields */
  ct__bfield_t f[CT__BMSG_FIELDS];
  for (size_t i = 0; i < w.argc / 2; i++)
    f[i] = (ct__bfield_t){w.argv[2 * i], w.argvlen[2 * i], w.argv[2 * i + 1],
                          w.argvlen[2 * i + 1]};
  ct__bmsg_t d;
  const char *reason = NULL;
  CHECK_OK(ct__bmsg_decode(f, w.argc / 2, 1024, &d, &reason));
  CHECK_EQ_STR(d.id, good_id);
  CHECK_EQ_STR(d.name, "resize image");
  CHECK_EQ_INT(d.enqueued_ms, 1700000000123);
  CHECK(json_equal(d.kwargs, m.kwargs));
  ct__bmsg_clear(&d);
  ct__bmsg_wire_free(&w);
  ct__bmsg_wire_free(&w); /* freeing twice is harmless */
  json_decref(m.kwargs);
}

/* Decode fields that must be refused with CT_EINVAL (or `want`) and a reason. */
static void refuse(const ct__bfield_t *f, size_t n, int want, const char *reason_part) {
  ct__bmsg_t d;
  const char *reason = NULL;
  CHECK_EQ_INT(ct__bmsg_decode(f, n, 64, &d, &reason), want);
  CHECK(reason != NULL);
  if (!strstr(reason, reason_part)) {
    fprintf(stderr, "reason \"%s\" does not say \"%s\"\n", reason, reason_part);
    CHECK(0);
  }
  CHECK(d.kwargs == NULL);
}

TEST(malformed_messages_are_refused_with_a_reason) {
  ct__bfield_t ok[] = {F("id", "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b"), F("name", "t"),
                       F("kwargs", "{}"), F("enqueued", "1")};
  ct__bmsg_t d;
  const char *reason = NULL;
  CHECK_OK(ct__bmsg_decode(ok, 4, 64, &d, &reason));
  ct__bmsg_clear(&d);
  refuse(ok, 3, CT_EINVAL, "enqueued");
  refuse(ok + 1, 3, CT_EINVAL, "id");
  ct__bfield_t twice[] = {ok[0], ok[1], ok[2], ok[3], F("name", "u")};
  refuse(twice, 5, CT_EINVAL, "twice");
  ct__bfield_t bad_id[] = {F("id", "0B8A0F9E-5C2D-4E3A-9F1B-2C3D4E5F6A7B"), ok[1], ok[2], ok[3]};
  refuse(bad_id, 4, CT_EINVAL, "id");
  ct__bfield_t short_id[] = {F("id", "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7"), ok[1], ok[2], ok[3]};
  refuse(short_id, 4, CT_EINVAL, "id");
  ct__bfield_t nul_name[] = {ok[0], F("name", "a\0b"), ok[2], ok[3]};
  refuse(nul_name, 4, CT_EINVAL, "name");
  ct__bfield_t empty_name[] = {ok[0], F("name", ""), ok[2], ok[3]};
  refuse(empty_name, 4, CT_EINVAL, "name");
  ct__bfield_t latin1_name[] = {ok[0], F("name", "caf\xe9"), ok[2], ok[3]};
  refuse(latin1_name, 4, CT_EINVAL, "name");
  ct__bfield_t array[] = {ok[0], ok[1], F("kwargs", "[1]"), ok[3]};
  refuse(array, 4, CT_EINVAL, "object");
  ct__bfield_t junk[] = {ok[0], ok[1], F("kwargs", "{\"a\":"), ok[3]};
  refuse(junk, 4, CT_EINVAL, "object");
  ct__bfield_t dup_key[] = {ok[0], ok[1], F("kwargs", "{\"a\":1,\"a\":2}"), ok[3]};
  refuse(dup_key, 4, CT_EINVAL, "object");
  ct__bfield_t nul_kwargs[] = {ok[0], ok[1], F("kwargs", "{\"a\":\"\0\"}"), ok[3]};
  refuse(nul_kwargs, 4, CT_EINVAL, "object");
  ct__bfield_t big[] = {ok[0], ok[1],
                        F("kwargs", "{\"a\":\"0123456789012345678901234567890123456789"
                                    "0123456789012345678901234567890123456789\"}"),
                        ok[3]};
  refuse(big, 4, CT_ENOBUFS, "limit");
  ct__bfield_t neg[] = {ok[0], ok[1], ok[2], F("enqueued", "-1")};
  refuse(neg, 4, CT_EINVAL, "enqueued");
  ct__bfield_t huge[] = {ok[0], ok[1], ok[2], F("enqueued", "9999999999999999999")};
  refuse(huge, 4, CT_EINVAL, "enqueued");
}

TEST(a_deadline_is_carried_when_there_is_one) {
  ct__bmsg_t m = {.enqueued_ms = 5, .deadline_ms = 1700000009000};
  strcpy(m.id, good_id);
  strcpy(m.name, "rpc");
  m.kwargs = json_object();
  ct__bmsg_wire_t w;
  CHECK_OK(ct__bmsg_encode(&m, &w));
  CHECK_EQ_INT(w.argc, 10);
  ct__bfield_t f[5];
  for (size_t i = 0; i < 5; i++)
    f[i] = (ct__bfield_t){w.argv[2 * i], w.argvlen[2 * i], w.argv[2 * i + 1],
                          w.argvlen[2 * i + 1]};
  ct__bmsg_t d;
  const char *reason = NULL;
  CHECK_OK(ct__bmsg_decode(f, 5, 64, &d, &reason));
  CHECK_EQ_INT(d.deadline_ms, 1700000009000);
  ct__bmsg_clear(&d);
  CHECK_OK(ct__bmsg_decode(f, 4, 64, &d, &reason)); /* none: 0 */
  CHECK_EQ_INT(d.deadline_ms, 0);
  ct__bmsg_clear(&d);
  ct__bmsg_wire_free(&w);
  json_decref(m.kwargs);
  ct__bfield_t zero[] = {f[0], f[1], f[2], f[3], F("deadline", "0")};
  refuse(zero, 5, CT_EINVAL, "deadline");
  ct__bfield_t word[] = {f[0], f[1], f[2], f[3], F("deadline", "soon")};
  refuse(word, 5, CT_EINVAL, "deadline");
}

TEST(unknown_message_fields_are_skipped) {
  ct__bfield_t f[] = {F("future", "x"), F("id", "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b"),
                      F("name", "t"), F("kwargs", "{\"k\":[1,2]}"), F("enqueued", "42"),
                      F("future", "y")};
  ct__bmsg_t d;
  const char *reason = NULL;
  CHECK_OK(ct__bmsg_decode(f, 6, 64, &d, &reason));
  CHECK_EQ_INT(d.enqueued_ms, 42);
  CHECK_EQ_INT(json_array_size(json_object_get(d.kwargs, "k")), 2);
  ct__bmsg_clear(&d);
}

TEST(the_attempt_field_names_a_run_from_1_to_a_billion) {
  ct__bfield_t f[] = {F("id", "x"), F("attempt", "7")};
  CHECK_EQ_INT(ct__bmsg_attempt(f, 1), 1); /* absent */
  CHECK_EQ_INT(ct__bmsg_attempt(f, 2), 7);
  const struct {
    const char *value;
    int64_t run;
  } cases[] = {{"1", 1},   {"1000000000", 1000000000}, {"1000000001", 1}, {"0", 1},
               {"", 1},    {"-2", 1},  {"2.0", 1}, {" 2", 1}, {"2 ", 1}, {"0x10", 1},
               {"1e3", 1}, {"0000000000000000002", 1}, {"000000000000000002", 2}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    ct__bfield_t g = {"attempt", 7, cases[i].value, strlen(cases[i].value)};
    CHECK_EQ_INT(ct__bmsg_attempt(&g, 1), cases[i].run);
  }
  ct__bfield_t twice[] = {F("attempt", "2"), F("attempt", "5")};
  CHECK_EQ_INT(ct__bmsg_attempt(twice, 2), 5); /* the last, as the fetch script reads it */
}

TEST(task_names_are_checked) {
  CHECK(ct__bmsg_name_ok("a.b:c d", 7));
  CHECK(!ct__bmsg_name_ok("", 0));
  CHECK(!ct__bmsg_name_ok("a\nb", 3));
  CHECK(!ct__bmsg_name_ok("a\x7f", 2));
  CHECK(ct__bmsg_name_ok("caf\xc3\xa9", 5));  /* UTF-8 */
  CHECK(!ct__bmsg_name_ok("caf\xe9", 4));      /* Latin-1: not UTF-8 */
  CHECK(!ct__bmsg_name_ok("\xc3\xa9", 1));    /* a sequence cut by the length */
  char longest[CT__BMSG_NAME_MAX + 2];
  memset(longest, 'n', sizeof longest);
  CHECK(ct__bmsg_name_ok(longest, CT__BMSG_NAME_MAX));
  CHECK(!ct__bmsg_name_ok(longest, CT__BMSG_NAME_MAX + 1));
}

TEST(records_decode_status_times_and_result) {
  ct__bfield_t queued[] = {F("status", "queued"), F("name", "t"), F("created", "1500"),
                           F("attempts", "0")};
  ct_broker_info_t info;
  const char *reason = NULL;
  CHECK_OK(ct__brecord_decode(queued, 4, &info, &reason));
  CHECK_EQ_INT(info.status, CT_BROKER_QUEUED);
  CHECK(info.created == 1.5);
  CHECK(info.result == NULL);
  ct__bfield_t failed[] = {
      F("status", "failed"), F("created", "1000"), F("started", "2000"), F("finished", "3000"),
      F("attempts", "2"), F("result", "{\"exception\":{\"class\":\"E\",\"args\":[],\"str\":\"\"}}")};
  CHECK_OK(ct__brecord_decode(failed, 6, &info, &reason));
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK_EQ_INT(info.attempts, 2);
  CHECK(info.started == 2.0 && info.finished == 3.0);
  CHECK(json_is_object(json_object_get(info.result, "exception")));
  json_decref(info.result);
  ct__bfield_t scalar[] = {F("status", "completed"), F("created", "1"), F("result", "7")};
  CHECK_OK(ct__brecord_decode(scalar, 3, &info, &reason));
  CHECK_EQ_INT(json_integer_value(info.result), 7);
  json_decref(info.result);
}

TEST(malformed_records_are_refused_with_a_reason) {
  ct_broker_info_t info;
  const char *reason = NULL;
  ct__bfield_t no_status[] = {F("created", "1")};
  CHECK_EQ_INT(ct__brecord_decode(no_status, 1, &info, &reason), CT_EINVAL);
  CHECK(strstr(reason, "status"));
  ct__bfield_t odd_status[] = {F("status", "done"), F("created", "1")};
  CHECK_EQ_INT(ct__brecord_decode(odd_status, 2, &info, &reason), CT_EINVAL);
  ct__bfield_t no_result[] = {F("status", "completed"), F("created", "1")};
  CHECK_EQ_INT(ct__brecord_decode(no_result, 2, &info, &reason), CT_EINVAL);
  CHECK(strstr(reason, "result"));
  ct__bfield_t bad_result[] = {F("status", "dead"), F("created", "1"), F("result", "{")};
  CHECK_EQ_INT(ct__brecord_decode(bad_result, 3, &info, &reason), CT_EINVAL);
  ct__bfield_t bad_time[] = {F("status", "queued"), F("created", "1.5")};
  CHECK_EQ_INT(ct__brecord_decode(bad_time, 2, &info, &reason), CT_EINVAL);
  ct__bfield_t bad_attempts[] = {F("status", "queued"), F("created", "1"),
                                 F("attempts", "99999999999")};
  CHECK_EQ_INT(ct__brecord_decode(bad_attempts, 3, &info, &reason), CT_EINVAL);
  CHECK(info.result == NULL);
}

TEST(redis_urls_parse) {
  ct__redis_url_t u;
  CHECK_OK(ct__redis_url_parse("redis://localhost", &u));
  CHECK_EQ_STR(u.host, "localhost");
  CHECK_EQ_INT(u.port, 6379);
  CHECK(!u.path && !u.user && !u.password && u.db == 0);
  ct__redis_url_free(&u);
  CHECK_OK(ct__redis_url_parse("redis://ann:p%40ss%2Fw@10.0.0.1:6380/3", &u));
  CHECK_EQ_STR(u.user, "ann");
  CHECK_EQ_STR(u.password, "p@ss/w");
  CHECK_EQ_STR(u.host, "10.0.0.1");
  CHECK_EQ_INT(u.port, 6380);
  CHECK_EQ_INT(u.db, 3);
  char *shown = ct__redis_url_display(&u);
  CHECK_EQ_STR(shown, "redis://ann:***@10.0.0.1:6380/3");
  free(shown);
  ct__redis_url_free(&u);
  CHECK_OK(ct__redis_url_parse("redis://:secret@[::1]:7000/", &u));
  CHECK(!u.user);
  CHECK_EQ_STR(u.password, "secret");
  CHECK_EQ_STR(u.host, "::1");
  CHECK_EQ_INT(u.port, 7000);
  ct__redis_url_free(&u);
  CHECK_OK(ct__redis_url_parse("unix:///run/redis/redis.sock?db=2", &u));
  CHECK_EQ_STR(u.path, "/run/redis/redis.sock");
  CHECK(!u.host);
  CHECK_EQ_INT(u.db, 2);
  ct__redis_url_free(&u);
  CHECK_OK(ct__redis_url_parse("unix://u:p@/tmp/a@b.sock", &u));
  CHECK_EQ_STR(u.user, "u");
  CHECK_EQ_STR(u.path, "/tmp/a@b.sock");
  ct__redis_url_free(&u);
  CHECK_OK(ct__redis_url_parse("unix:///tmp/x@y", &u));
  CHECK_EQ_STR(u.path, "/tmp/x@y");
  CHECK(!u.password);
  ct__redis_url_free(&u);
}

TEST(bad_redis_urls_are_refused) {
  static const char *const bad[] = {
      NULL, "", "redis://", "redis://:6379", "redis://host:0", "redis://host:65536",
      "redis://host:12ab", "redis://host:", "redis://host/x", "redis://host/-1",
      "redis://host/1000001", "redis://ho st", "redis://a@b@host", "redis://[::1",
      "redis://[::1]x", "redis://p%zz@host", "redis://p%00@host", "redis://p%4@host",
      "rediss://host", "http://host", "unix://", "unix://relative.sock",
      "unix:///x.sock?db=", "unix:///x.sock?db=a", "unix:///x.sock?password=p",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    ct__redis_url_t u;
    if (ct__redis_url_parse(bad[i], &u) != CT_EINVAL) {
      fprintf(stderr, "accepted: %s\n", bad[i] ? bad[i] : "(null)");
      CHECK(0);
    }
    CHECK(!u.host && !u.path && !u.user && !u.password);
  }
}

/* A done list's entry is the answer only as [terminal status, result];
 * anything else sends the caller to the record. */
TEST(done_entries_carry_the_answer_or_send_to_the_record) {
  ct_broker_info_t info;
  const char *ok = "[\"failed\",{\"exception\":{\"class\":\"E\",\"args\":[],\"str\":\"\"}}]";
  CHECK_OK(ct__bdone_decode(ok, strlen(ok), &info));
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK(json_is_object(json_object_get(info.result, "exception")));
  json_decref(info.result);
  CHECK_OK(ct__bdone_decode("[\"completed\",null]", 18, &info));
  CHECK(json_is_null(info.result));
  json_decref(info.result);
  const char *other[] = {"completed", "dead", "", "[", "[\"completed\"]",
                         "[\"running\",1]", "[\"completed\",1,2]", "[1,2]",
                         "[\"completed\",1", "{\"status\":\"completed\"}"};
  for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
    CHECK_EQ_INT(ct__bdone_decode(other[i], strlen(other[i]), &info), CT_EAGAIN);
    CHECK(info.result == NULL);
  }
}

int main(void) {
  RUN(new_ids_are_version_4_uuids_and_differ);
  RUN(encoded_message_decodes_to_the_same);
  RUN(malformed_messages_are_refused_with_a_reason);
  RUN(a_deadline_is_carried_when_there_is_one);
  RUN(unknown_message_fields_are_skipped);
  RUN(the_attempt_field_names_a_run_from_1_to_a_billion);
  RUN(task_names_are_checked);
  RUN(records_decode_status_times_and_result);
  RUN(malformed_records_are_refused_with_a_reason);
  RUN(done_entries_carry_the_answer_or_send_to_the_record);
  RUN(redis_urls_parse);
  RUN(bad_redis_urls_are_refused);
  return check_done();
}
