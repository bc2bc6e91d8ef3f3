/* Worker groups: start and stop together, the JSON snapshot, one-for-all,
 * a member freed while in a group, stop from a member's run, bad input. */
#include <ctasker.h>
#include <stdatomic.h>

#include "check.h"
#include "gate.h"

/* What a member's runs record and do. */
typedef struct {
  atomic_int runs;
  int stop_after;               /* > 0: return CT_WORKER_STOP on that run */
  ct_worker_group_t *stop_group; /* set: the first run stops this group */
  int group_stop_rc;
} member_t;

static int member_run(ct_worker_run_t *run) {
  member_t *m = run->data;
  int n = atomic_fetch_add(&m->runs, 1) + 1;
  if (m->stop_group && n == 1)
    m->group_stop_rc = ct_worker_group_stop(m->stop_group, CT_WORKER_DROP, -1);
  if (m->stop_after > 0 && n >= m->stop_after)
    return CT_WORKER_STOP;
  check_sleep(0.001); /* a background member must not spin a core */
  return CT_WORKER_CONTINUE;
}

static ct_worker_t *make(ct_supervisor_t *sup, ct_worker_kind_t kind, const char *name,
                         member_t *m) {
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = name;
  o.data = m;
  if (kind == CT_WORKER_INTERVAL)
    o.interval = 0.005;
  ct_worker_t *w;
  CHECK_OK(ct_worker_new(sup, kind, member_run, &o, &w));
  return w;
}

static ct_worker_group_t *make_group(const char *name, bool one_for_all) {
  ct_worker_group_opts_t o = CT_WORKER_GROUP_OPTS_INIT;
  o.name = name;
  o.one_for_all = one_for_all;
  ct_worker_group_t *g;
  CHECK_OK(ct_worker_group_new(&o, &g));
  return g;
}

static bool all_stopped(ct_worker_t **ws, int n) {
  for (int i = 0; i < n; i++)
    if (ct_worker_state(ws[i]) != CT_WORKER_STOPPED)
      return false;
  return true;
}

TEST(start_stop_together) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  member_t m[3] = {0};
  ct_worker_t *ws[3] = {make(sup, CT_WORKER_BACKGROUND, "bg", &m[0]),
                        make(sup, CT_WORKER_QUEUE, "queue", &m[1]),
                        make(sup, CT_WORKER_INTERVAL, "tick", &m[2])};
  ct_worker_group_t *g = make_group("trio", false);
  for (int i = 0; i < 3; i++)
    CHECK_OK(ct_worker_group_add(g, ws[i]));
  CHECK_EQ_INT(ct_worker_group_size(g), 3);
  CHECK_OK(ct_worker_group_start(g, NULL));
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(ct_worker_state(ws[i]), CT_WORKER_RUNNING);
  CHECK_OK(ct_queue_worker_put(ws[1], NULL, CT_PRIORITY_NORMAL));
  WAIT_FOR(atomic_load(&m[0].runs) > 0 && atomic_load(&m[1].runs) > 0 &&
           atomic_load(&m[2].runs) > 0);
  CHECK_OK(ct_worker_group_stop(g, CT_WORKER_DROP, -1));
  CHECK(all_stopped(ws, 3));
  /* Stopped members stay stopped: no run starts after the stop returned. */
  int after[3];
  for (int i = 0; i < 3; i++)
    after[i] = atomic_load(&m[i].runs);
  check_sleep(0.03);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(atomic_load(&m[i].runs), after[i]);
  /* A stopped group starts again. */
  CHECK_OK(ct_worker_group_start(g, NULL));
  CHECK_EQ_INT(ct_worker_state(ws[0]), CT_WORKER_RUNNING);
  CHECK_OK(ct_worker_group_stop(g, CT_WORKER_DROP, -1));
  CHECK_OK(ct_worker_group_free(g));
  for (int i = 0; i < 3; i++)
    CHECK_OK(ct_worker_free(ws[i]));
  stop_and_free(sup);
}

static json_t *member_json(json_t *status, size_t i) {
  return json_array_get(json_object_get(status, "workers"), i);
}

TEST(status_json) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  member_t m[2] = {0};
  ct_worker_t *a = make(sup, CT_WORKER_EVENT, "alpha", &m[0]);
  ct_worker_t *b = make(sup, CT_WORKER_QUEUE, "beta", &m[1]);
  ct_worker_group_t *g = make_group("pair", true);
  CHECK_OK(ct_worker_group_add(g, a));
  CHECK_OK(ct_worker_group_add(g, b));

  json_t *s = ct_worker_group_status_json(g);
  CHECK(s);
  CHECK_EQ_STR(json_string_value(json_object_get(s, "name")), "pair");
  CHECK(json_is_true(json_object_get(s, "one_for_all")));
  CHECK_EQ_INT(json_integer_value(json_object_get(s, "running")), 0);
  CHECK_EQ_INT(json_array_size(json_object_get(s, "workers")), 2);
  CHECK_EQ_STR(json_string_value(json_object_get(member_json(s, 0), "state")), "init");
  json_decref(s);

  CHECK_OK(ct_worker_group_start(g, NULL));
  CHECK_OK(ct_event_worker_trigger(a, false));
  WAIT_FOR(atomic_load(&m[0].runs) == 1);
  s = ct_worker_group_status_json(g);
  CHECK(s);
  CHECK_EQ_INT(json_integer_value(json_object_get(s, "running")), 2);
  json_t *first = member_json(s, 0), *second = member_json(s, 1);
  CHECK_EQ_STR(json_string_value(json_object_get(first, "name")), "alpha");
  CHECK_EQ_STR(json_string_value(json_object_get(first, "kind")), "event");
  CHECK_EQ_STR(json_string_value(json_object_get(first, "state")), "running");
  CHECK_EQ_INT(json_integer_value(json_object_get(first, "runs")), 1);
  CHECK_EQ_STR(json_string_value(json_object_get(second, "name")), "beta");
  CHECK_EQ_STR(json_string_value(json_object_get(second, "kind")), "queue");
  CHECK_EQ_INT(json_integer_value(json_object_get(second, "runs")), 0);
  json_decref(s);

  CHECK_OK(ct_worker_group_stop(g, CT_WORKER_DROP, -1));
  s = ct_worker_group_status_json(g);
  CHECK_EQ_INT(json_integer_value(json_object_get(s, "running")), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(member_json(s, 1), "state")), "stopped");
  json_decref(s);
  CHECK_OK(ct_worker_group_free(g));
  CHECK_OK(ct_worker_free(a));
  CHECK_OK(ct_worker_free(b));
  stop_and_free(sup);
}

/* One member returns CT_WORKER_STOP on its third run; with one-for-all the
 * others stop too, and the group can be started again. */
TEST(one_for_all_stops_all) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  for (int round = 0; round < 20; round++) {
    member_t m[3] = {{.stop_after = 3}, {0}, {0}};
    ct_worker_t *ws[3] = {make(sup, CT_WORKER_BACKGROUND, "quitter", &m[0]),
                          make(sup, CT_WORKER_BACKGROUND, "stayer", &m[1]),
                          make(sup, CT_WORKER_INTERVAL, "ticker", &m[2])};
    ct_worker_group_t *g = make_group(NULL, true);
    for (int i = 0; i < 3; i++)
      CHECK_OK(ct_worker_group_add(g, ws[i]));
    CHECK_OK(ct_worker_group_start(g, NULL));
    WAIT_FOR(all_stopped(ws, 3));
    CHECK_EQ_INT(atomic_load(&m[0].runs), 3);
    if (round == 0) { /* restart: the quitter stops at once, the rest follow */
      CHECK_OK(ct_worker_group_start(g, NULL));
      WAIT_FOR(all_stopped(ws, 3));
      CHECK_EQ_INT(atomic_load(&m[0].runs), 4);
    }
    CHECK_OK(ct_worker_group_free(g));
    for (int i = 0; i < 3; i++)
      CHECK_OK(ct_worker_free(ws[i]));
  }
  stop_and_free(sup);
}

/* A member stopped from outside also stops the rest with one-for-all. */
TEST(one_for_all_on_outside_stop) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  member_t m[2] = {0};
  ct_worker_t *ws[2] = {make(sup, CT_WORKER_EVENT, "e", &m[0]),
                        make(sup, CT_WORKER_BACKGROUND, "b", &m[1])};
  ct_worker_group_t *g = make_group(NULL, true);
  CHECK_OK(ct_worker_group_add(g, ws[0]));
  CHECK_OK(ct_worker_group_add(g, ws[1]));
  CHECK_OK(ct_worker_group_start(g, NULL));
  CHECK_OK(ct_worker_stop(ws[0], CT_WORKER_DROP, -1));
  WAIT_FOR(all_stopped(ws, 2));
  CHECK_OK(ct_worker_group_free(g));
  CHECK_OK(ct_worker_free(ws[0]));
  CHECK_OK(ct_worker_free(ws[1]));
  stop_and_free(sup);
}

TEST(without_one_for_all_others_keep_running) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  member_t m[2] = {{.stop_after = 2}, {0}};
  ct_worker_t *ws[2] = {make(sup, CT_WORKER_BACKGROUND, "quitter", &m[0]),
                        make(sup, CT_WORKER_BACKGROUND, "stayer", &m[1])};
  ct_worker_group_t *g = make_group(NULL, false);
  CHECK_OK(ct_worker_group_add(g, ws[0]));
  CHECK_OK(ct_worker_group_add(g, ws[1]));
  CHECK_OK(ct_worker_group_start(g, NULL));
  WAIT_FOR(ct_worker_state(ws[0]) == CT_WORKER_STOPPED);
  int seen = atomic_load(&m[1].runs);
  WAIT_FOR(atomic_load(&m[1].runs) > seen + 5);
  CHECK_EQ_INT(ct_worker_state(ws[1]), CT_WORKER_RUNNING);
  CHECK_EQ_INT(atomic_load(&m[0].runs), 2);
  CHECK_EQ_INT(ct_worker_group_free(g), CT_EBUSY);
  CHECK_OK(ct_worker_group_stop(g, CT_WORKER_DROP, -1));
  CHECK(all_stopped(ws, 2));
  CHECK_OK(ct_worker_group_free(g));
  CHECK_OK(ct_worker_free(ws[0]));
  CHECK_OK(ct_worker_free(ws[1]));
  stop_and_free(sup);
}

/* A member's run stops its own group, waiting: every stop is under way, the
 * call returns CT_EDEADLK instead of waiting for itself, all end stopped. */
TEST(stop_from_member_run) {
  ct_supervisor_t *sup = start_supervisor(1, 0, 0); /* one thread: waiting would hang */
  member_t m[2] = {0};
  ct_worker_t *ws[2] = {make(sup, CT_WORKER_EVENT, "stopper", &m[0]),
                        make(sup, CT_WORKER_QUEUE, "other", &m[1])};
  ct_worker_group_t *g = make_group(NULL, false);
  m[0].stop_group = g;
  CHECK_OK(ct_worker_group_add(g, ws[0]));
  CHECK_OK(ct_worker_group_add(g, ws[1]));
  CHECK_OK(ct_worker_group_start(g, NULL));
  CHECK_OK(ct_event_worker_trigger(ws[0], false));
  WAIT_FOR(all_stopped(ws, 2));
  CHECK_EQ_INT(m[0].group_stop_rc, CT_EDEADLK);
  CHECK_OK(ct_worker_group_free(g));
  CHECK_OK(ct_worker_free(ws[0]));
  CHECK_OK(ct_worker_free(ws[1]));
  stop_and_free(sup);
}

/* A member freed by its owner leaves the group; the rest works on. */
TEST(member_freed_while_in_group) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  member_t m[2] = {0};
  ct_worker_t *a = make(sup, CT_WORKER_EVENT, "gone", &m[0]);
  ct_worker_t *b = make(sup, CT_WORKER_EVENT, "kept", &m[1]);
  ct_worker_group_t *g = make_group(NULL, true);
  CHECK_OK(ct_worker_group_add(g, a));
  CHECK_OK(ct_worker_group_add(g, b));
  CHECK_OK(ct_worker_free(a));
  CHECK_EQ_INT(ct_worker_group_size(g), 1);
  json_t *s = ct_worker_group_status_json(g);
  CHECK_EQ_INT(json_array_size(json_object_get(s, "workers")), 1);
  CHECK_EQ_STR(json_string_value(json_object_get(member_json(s, 0), "name")), "kept");
  json_decref(s);
  CHECK_OK(ct_worker_group_start(g, NULL));
  CHECK_EQ_INT(ct_worker_free(b), CT_EBUSY); /* running: stays a member */
  CHECK_EQ_INT(ct_worker_group_size(g), 1);
  CHECK_OK(ct_worker_group_stop(g, CT_WORKER_DROP, -1));
  CHECK_OK(ct_worker_free(b));
  CHECK_EQ_INT(ct_worker_group_size(g), 0);
  CHECK_OK(ct_worker_group_free(g));
  stop_and_free(sup);
}

TEST(bad_input) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  member_t m[3] = {0};
  ct_worker_t *a = make(sup, CT_WORKER_EVENT, "a", &m[0]);
  ct_worker_t *b = make(sup, CT_WORKER_EVENT, "b", &m[1]);
  ct_worker_group_t *g, *h = make_group(NULL, false), *other = make_group(NULL, false);
  ct_worker_group_opts_t o = CT_WORKER_GROUP_OPTS_INIT;

  CHECK_EQ_INT(ct_worker_group_new(NULL, NULL), CT_EINVAL);
  o.size = 1;
  CHECK_EQ_INT(ct_worker_group_new(&o, &g), CT_EINVAL);
  CHECK(g == NULL);
  CHECK_EQ_INT(ct_worker_group_add(NULL, a), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_group_add(h, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_group_start(NULL, NULL), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_group_start(h, NULL), CT_EINVAL); /* empty */
  CHECK_EQ_INT(ct_worker_group_stop(NULL, CT_WORKER_DROP, 0), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_group_stop(h, 7, 0), CT_EINVAL);
  CHECK(ct_worker_group_status_json(NULL) == NULL);
  CHECK_EQ_INT(ct_worker_group_size(NULL), 0);
  CHECK_OK(ct_worker_group_free(NULL));

  CHECK_OK(ct_worker_group_add(h, a));
  CHECK_EQ_INT(ct_worker_group_add(h, a), CT_EBUSY);     /* twice */
  CHECK_EQ_INT(ct_worker_group_add(other, a), CT_EBUSY); /* another group's */
  CHECK_EQ_INT(ct_worker_group_size(other), 0);
  CHECK_OK(ct_worker_group_add(h, b));

  /* A member already running: nothing is started. */
  CHECK_OK(ct_worker_start(b, NULL));
  CHECK_EQ_INT(ct_worker_group_start(h, NULL), CT_EBUSY);
  CHECK_EQ_INT(ct_worker_state(a), CT_WORKER_INIT);
  CHECK_EQ_INT(ct_worker_group_free(h), CT_EBUSY); /* b runs */
  CHECK_OK(ct_worker_stop(b, CT_WORKER_DROP, -1));

  /* Bad start options: all or nothing. */
  ct_worker_start_opts_t so = CT_WORKER_START_OPTS_INIT;
  so.size = 1;
  CHECK_EQ_INT(ct_worker_group_start(h, &so), CT_EINVAL);
  CHECK_EQ_INT(ct_worker_state(a), CT_WORKER_INIT);
  CHECK_EQ_INT(ct_worker_state(b), CT_WORKER_STOPPED);

  CHECK_OK(ct_worker_group_free(h));
  CHECK_OK(ct_worker_group_add(other, a)); /* free released it */
  CHECK_OK(ct_worker_group_free(other));
  CHECK_OK(ct_worker_free(a));
  CHECK_OK(ct_worker_free(b));
  stop_and_free(sup);
}

/* A member that cannot start makes the start fail and stops the others. */
TEST(start_all_or_nothing) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  ct_supervisor_t *stopped = start_supervisor(1, 0, 0);
  member_t m[2] = {0};
  ct_worker_t *a = make(sup, CT_WORKER_EVENT, "ok", &m[0]);
  ct_worker_t *b = make(stopped, CT_WORKER_EVENT, "late", &m[1]);
  CHECK_OK(ct_supervisor_stop(stopped, CT_STOP_DRAIN, -1));
  ct_worker_group_t *g = make_group(NULL, false);
  CHECK_OK(ct_worker_group_add(g, a));
  CHECK_OK(ct_worker_group_add(g, b));
  CHECK_EQ_INT(ct_worker_group_start(g, NULL), CT_ESHUTDOWN);
  WAIT_FOR(ct_worker_state(a) == CT_WORKER_STOPPED);
  CHECK_OK(ct_worker_group_free(g));
  CHECK_OK(ct_worker_free(a));
  CHECK_OK(ct_worker_free(b));
  CHECK_OK(ct_supervisor_free(stopped));
  stop_and_free(sup);
}

/* A queue member whose first run and first dropped item wait at gates. */
typedef struct {
  gate_t run_gate, drop_gate;
  atomic_int runs, drops;
} held_t;

static int held_run(ct_worker_run_t *run) {
  held_t *h = run->data;
  if (atomic_fetch_add(&h->runs, 1) == 0)
    gate_pass(&h->run_gate);
  return CT_WORKER_CONTINUE;
}

static void held_drop(ct_worker_t *w, void *item, void *data) {
  (void)w;
  (void)item;
  held_t *h = data;
  if (atomic_fetch_add(&h->drops, 1) == 0)
    gate_pass(&h->drop_gate);
}

/* A one-for-all stop still under way (held in a member's on_drop) when
 * every member has stopped and the group is started again: the new start
 * is not the stale stop's to undo. */
TEST(one_for_all_spares_a_later_start) {
  ct_supervisor_t *sup = start_supervisor(4, 0, 0);
  member_t ma = {.stop_after = 1};
  held_t h = {0};
  gate_init(&h.run_gate);
  gate_init(&h.drop_gate);
  ct_worker_t *a = make(sup, CT_WORKER_EVENT, "a", &ma), *b;
  ct_worker_opts_t o = CT_WORKER_OPTS_INIT;
  o.name = "b";
  o.data = &h;
  o.on_drop = held_drop;
  o.drop_data = &h;
  CHECK_OK(ct_worker_new(sup, CT_WORKER_QUEUE, held_run, &o, &b));
  ct_worker_group_t *g = make_group("pair", true);
  CHECK_OK(ct_worker_group_add(g, a));
  CHECK_OK(ct_worker_group_add(g, b));
  CHECK_OK(ct_worker_group_start(g, NULL));
  for (intptr_t i = 0; i < 3; i++)
    CHECK_OK(ct_queue_worker_put(b, (void *)i, CT_PRIORITY_NORMAL));
  gate_wait_arrived(&h.run_gate, 1); /* b's first run holds, 2 items wait */
  CHECK_OK(ct_event_worker_trigger(a, false)); /* a stops: one-for-all */
  gate_wait_arrived(&h.drop_gate, 1);          /* ... held in b's on_drop */
  gate_open(&h.run_gate);
  WAIT_FOR(ct_worker_state(a) == CT_WORKER_STOPPED && ct_worker_state(b) == CT_WORKER_STOPPED &&
           atomic_load(&h.drops) == 2);
  CHECK_OK(ct_worker_group_start(g, NULL));
  gate_open(&h.drop_gate); /* the old stop goes on */
  ct_stats_t s = CT_STATS_INIT;
  WAIT_FOR(ct_supervisor_stats(sup, &s) == 0 && s.running == 0);
  CHECK_EQ_INT(ct_worker_state(a), CT_WORKER_RUNNING);
  CHECK_EQ_INT(ct_worker_state(b), CT_WORKER_RUNNING);
  CHECK_OK(ct_worker_group_stop(g, CT_WORKER_DROP, -1));
  CHECK_EQ_INT(atomic_load(&h.runs), 1);
  CHECK_EQ_INT(atomic_load(&h.drops), 2);
  CHECK_OK(ct_worker_group_free(g));
  CHECK_OK(ct_worker_free(a));
  CHECK_OK(ct_worker_free(b));
  gate_destroy(&h.run_gate);
  gate_destroy(&h.drop_gate);
  stop_and_free(sup);
}

int main(void) {
  RUN(start_stop_together);
  RUN(status_json);
  RUN(one_for_all_stops_all);
  RUN(one_for_all_on_outside_stop);
  RUN(without_one_for_all_others_keep_running);
  RUN(stop_from_member_run);
  RUN(member_freed_while_in_group);
  RUN(bad_input);
  RUN(start_all_or_nothing);
  RUN(one_for_all_spares_a_later_start);
  return check_done();
}
