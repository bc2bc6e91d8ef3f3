/* Capturing the library's log lines in a test: a log callback that keeps
 * every line (thread-safe), and a look-up by substring. */
#ifndef CT_TESTS_LOGCAP_H
#define CT_TESTS_LOGCAP_H

#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  pthread_mutex_t lock;
  char text[16384]; /* every line, each ending in '\n' */
  size_t len;
  int lines;
} logcap_t;

static inline void logcap_init(logcap_t *c) {
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->lock, NULL);
}

static inline void logcap_clear(logcap_t *c) {
  pthread_mutex_lock(&c->lock);
  c->len = 0;
  c->text[0] = '\0';
  c->lines = 0;
  pthread_mutex_unlock(&c->lock);
}

/* A ct_log_fn: data is the logcap_t. */
static inline void logcap_fn(int level, const char *msg, void *data) {
  (void)level;
  logcap_t *c = data;
  pthread_mutex_lock(&c->lock);
  int n = snprintf(c->text + c->len, sizeof c->text - c->len, "%s\n", msg);
  if (n > 0 && (size_t)n < sizeof c->text - c->len)
    c->len += (size_t)n;
  c->lines++;
  pthread_mutex_unlock(&c->lock);
}

/* Whether some line holds every one of the two substrings (b may be NULL). */
static inline bool logcap_has(logcap_t *c, const char *a, const char *b) {
  bool found = false;
  pthread_mutex_lock(&c->lock);
  for (char *line = c->text; *line && !found;) {
    char *end = strchr(line, '\n');
    *end = '\0';
    found = strstr(line, a) && (!b || strstr(line, b));
    *end = '\n';
    line = end + 1;
  }
  pthread_mutex_unlock(&c->lock);
  return found;
}

static inline int logcap_lines(logcap_t *c) {
  pthread_mutex_lock(&c->lock);
  int n = c->lines;
  pthread_mutex_unlock(&c->lock);
  return n;
}

#endif
