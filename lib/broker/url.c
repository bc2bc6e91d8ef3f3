/* Redis URL parsing (see url.h). A URL comes from configuration, so every
 * part is checked and a bad one is CT_EINVAL rather than a guess: a typo
 * in a port or database must not connect somewhere else. */
#include "url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctasker/common.h"

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* A new string of s[0..len) with %XX escapes decoded; *err set on failure. */
static char *decode(const char *s, size_t len, int *err) {
  char *out = malloc(len + 1);
  size_t o = 0;
  if (!out) {
    *err = CT_ENOMEM;
    return NULL;
  }
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (s[i] != '%') {
      out[o++] = s[i];
    } else if (i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
               (lo = hexval(s[i + 2])) >= 0 && (hi | lo) != 0) {
      out[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      free(out);
      *err = CT_EINVAL;
      return NULL;
    }
  }
  out[o] = '\0';
  return out;
}

/* A decimal number in s[0..len) from lo to hi. */
static bool parse_int(const char *s, size_t len, long lo, long hi, int *out) {
  long v = 0;
  if (len == 0 || len > 7)
    return false;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return false;
    v = v * 10 + (s[i] - '0');
  }
  if (v < lo || v > hi)
    return false;
  *out = (int)v;
  return true;
}

/* `user:password@` or `password@` (redis-py reads a lone part as the
 * password) at the start of *s: decoded into u, *s moved past it. */
static int parse_userinfo(const char **s, const char *end, ct__redis_url_t *u) {
  const char *at = memchr(*s, '@', (size_t)(end - *s));
  if (!at)
    return 0;
  const char *colon = memchr(*s, ':', (size_t)(at - *s));
  int err = 0;
  if (colon) {
    if (colon > *s && !(u->user = decode(*s, (size_t)(colon - *s), &err)))
      return err;
    if (!(u->password = decode(colon + 1, (size_t)(at - colon - 1), &err)))
      return err;
  } else if (!(u->password = decode(*s, (size_t)(at - *s), &err))) {
    return err;
  }
  *s = at + 1;
  return 0;
}

/* A host name or IPv4 address, or (in brackets) an IPv6 address: nothing
 * that could be a misplaced part of the URL. */
static bool host_ok(const char *s, size_t len, bool bracketed) {
  if (len == 0)
    return false;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '.' || c == '-' || (bracketed ? c == ':' : c == '_');
    if (!ok)
      return false;
  }
  return true;
}

/* host[:port] (an IPv6 host in brackets) in s[0..len). */
static int parse_hostport(const char *s, size_t len, ct__redis_url_t *u) {
  const char *end = s + len, *host = s, *host_end;
  if (len > 0 && *s == '[') {
    host = s + 1;
    host_end = memchr(host, ']', len - 1);
    if (!host_end || (host_end + 1 != end && host_end[1] != ':'))
      return CT_EINVAL;
  } else {
    host_end = memchr(s, ':', len);
    if (!host_end)
      host_end = end;
  }
  const char *port = host_end < end && *host_end == ']' ? host_end + 1 : host_end;
  if (!host_ok(host, (size_t)(host_end - host), host != s))
    return CT_EINVAL;
  if (port < end && !parse_int(port + 1, (size_t)(end - port - 1), 1, 65535, &u->port))
    return CT_EINVAL;
  u->host = strndup(host, (size_t)(host_end - host));
  return u->host ? 0 : CT_ENOMEM;
}

static int parse_tcp(const char *s, ct__redis_url_t *u) {
  const char *end = s + strlen(s);
  const char *slash = memchr(s, '/', (size_t)(end - s));
  const char *auth_end = slash ? slash : end;
  int rc = parse_userinfo(&s, auth_end, u);
  if (rc == 0)
    rc = parse_hostport(s, (size_t)(auth_end - s), u);
  if (rc == 0 && slash && slash + 1 < end &&
      !parse_int(slash + 1, (size_t)(end - slash - 1), 0, 1000000, &u->db))
    rc = CT_EINVAL;
  return rc;
}

static int parse_unix(const char *s, ct__redis_url_t *u) {
  const char *end = s + strlen(s);
  const char *query = memchr(s, '?', (size_t)(end - s));
  const char *path_end = query ? query : end;
  /* A path starts with '/': only then is an '@' part of it. */
  int rc = *s == '/' ? 0 : parse_userinfo(&s, path_end, u);
  if (rc != 0)
    return rc;
  if (s == path_end || *s != '/')
    return CT_EINVAL;
  if (query && (strncmp(query, "?db=", 4) != 0 ||
                !parse_int(query + 4, (size_t)(end - query - 4), 0, 1000000, &u->db)))
    return CT_EINVAL;
  int err = 0;
  u->path = decode(s, (size_t)(path_end - s), &err);
  return u->path ? 0 : err;
}

int ct__redis_url_parse(const char *url, ct__redis_url_t *u) {
  memset(u, 0, sizeof *u);
  u->port = 6379;
  if (!url)
    return CT_EINVAL;
  int rc = CT_EINVAL;
  if (strncmp(url, "redis://", 8) == 0)
    rc = parse_tcp(url + 8, u);
  else if (strncmp(url, "unix://", 7) == 0)
    rc = parse_unix(url + 7, u);
  if (rc != 0)
    ct__redis_url_free(u);
  return rc;
}

void ct__redis_url_free(ct__redis_url_t *u) {
  free(u->host);
  free(u->path);
  free(u->user);
  free(u->password);
  memset(u, 0, sizeof *u);
}

char *ct__redis_url_display(const ct__redis_url_t *u) {
  char *s = NULL;
  const char *user = u->user ? u->user : "";
  const char *at = u->user || u->password ? "@" : "";
  const char *pw = u->password ? ":***" : "";
  int n = u->path ? asprintf(&s, "unix://%s%s%s%s?db=%d", user, pw, at, u->path, u->db)
                  : asprintf(&s, "redis://%s%s%s%s%s%s:%d/%d", user, pw, at,
                             strchr(u->host, ':') ? "[" : "", u->host,
                             strchr(u->host, ':') ? "]" : "", u->port, u->db);
  return n < 0 ? NULL : s;
}
