/* The worker's log (see log.h). One lock serializes the lines, so lines
 * from the library's threads and the worker's never interleave, and a
 * reopen never races a write. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <ctasker.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;      /* lock */
static char *path;     /* NULL: stderr */
static int min_level = CT_LOG_INFO;
static bool json;

static const char *level_name(int level) {
  return level >= CT_LOG_ERROR     ? "error"
         : level >= CT_LOG_WARNING ? "warning"
         : level >= CT_LOG_INFO    ? "info"
                                   : "debug";
}

int dlog_level(const char *name) {
  static const char *const names[] = {"debug", "info", "warning", "error"};
  for (int i = 0; i < 4; i++)
    if (strcasecmp(name, names[i]) == 0)
      return (i + 1) * 10;
  return -1;
}

int dlog_init(int level, bool as_json, const char *file) {
  min_level = level;
  json = as_json;
  out = stderr;
  if (!file)
    return 0;
  path = strdup(file);
  out = path ? fopen(path, "a") : NULL;
  if (!out) {
    int err = path ? errno : ENOMEM;
    out = stderr;
    return err;
  }
  setvbuf(out, NULL, _IOLBF, 0);
  return 0;
}

int dlog_reopen(void) {
  if (!path)
    return 0;
  FILE *f = fopen(path, "a");
  if (!f)
    return errno;
  setvbuf(f, NULL, _IOLBF, 0);
  pthread_mutex_lock(&lock);
  FILE *old = out;
  out = f;
  pthread_mutex_unlock(&lock);
  fclose(old);
  return 0;
}

/* The length of the well-formed UTF-8 sequence at s (of n bytes left), or
 * 0 if there is none there (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF). */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
  if (s[0] < 0x80)
    return 1;
  size_t len = s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
               : s[0] >= 0xf0 && s[0] <= 0xf4                                 ? 4
                                                                               : 0;
  if (len == 0 || len > n)
    return 0;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
      (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
    return 0;
  return len;
}

/* msg with every byte that is not part of well-formed UTF-8 replaced by
 * U+FFFD, so that a JSON line can hold it (a plugin's path, data from
 * Redis); NULL out of memory. */
static char *utf8_clean(const char *msg) {
  size_t n = strlen(msg);
  char *clean = malloc(3 * n + 1), *o = clean;
  for (size_t i = 0; clean && i < n;) {
    size_t len = utf8_sequence((const unsigned char *)msg + i, n - i);
    if (len == 0) {
      memcpy(o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    } else {
      memcpy(o, msg + i, len);
      o += len;
      i += len;
    }
  }
  if (clean)
    *o = '\0';
  return clean;
}

void dlog_line(int level, const char *msg, void *data) {
  (void)data;
  if (level < min_level)
    return;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
  char *line = NULL;
  if (json) {
    char *clean = utf8_clean(msg);
    json_t *j = clean ? json_pack("{s:s,s:s,s:s}", "ts", ts, "level", level_name(level), "msg",
                                  clean)
                      : NULL;
    line = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    free(clean);
  }
  pthread_mutex_lock(&lock);
  if (line)
    fprintf(out, "%s\n", line);
  else
    fprintf(out, "%s %-7s %s\n", ts, level_name(level), msg);
  fflush(out);
  pthread_mutex_unlock(&lock);
  free(line);
}

void dlog(int level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  dlog_line(level, msg, NULL);
}
