/* The worker's metrics (tools/ctasker/prom.c), seen from inside: the file
 * is compiled into this test, which counts events and reads the series.
 * Once MAX_SERIES series exist, a name without one of its own counts under
 * "_other", and a name that has one goes on counting there: it was counted
 * under "_other" too, and its own series froze. */
#include "prom.c"

#include "check.h"

static void end(prom_queue_t *q, const char *name) {
  ct_broker_event_t e = {0};
  e.kind = CT_BROKER_EVENT_END;
  e.status = CT_BROKER_COMPLETED;
  e.name = name;
  prom_observe(&e, q);
}

static unsigned long long completed(prom_t *p, const char *name) {
  for (series_t *s = p->series; s; s = s->next)
    if (strcmp(s->name, name) == 0)
      return s->counts[0];
  return 0;
}

TEST(a_name_with_a_series_keeps_counting_there_once_the_series_are_full) {
  prom_queue_t q = {NULL, "default", NULL};
  prom_t *p = prom_new(NULL, &q, 1);
  CHECK(p != NULL);
  q.prom = p;
  end(&q, "add");
  char name[32];
  for (int i = 0; i < MAX_SERIES; i++) {
    snprintf(name, sizeof name, "junk-%d", i);
    end(&q, name);
  }
  end(&q, "add");
  end(&q, "add");
  end(&q, "never-seen");
  CHECK_EQ_INT(completed(p, "add"), 3);
  CHECK_EQ_INT(completed(p, "_other"), 2); /* junk-999 and never-seen */
  CHECK_EQ_INT(p->nseries, MAX_SERIES + 1); /* "_other" is one more */
  prom_free(p);
}

int main(void) {
  RUN(a_name_with_a_series_keeps_counting_there_once_the_series_are_full);
  return check_done();
}
