/* Redis URLs: `redis://[user:password@]host[:port][/db]` and
 * `unix://[user:password@]/path[?db=N]`. Knows nothing of connections. */
#ifndef CT_BROKER_URL_H
#define CT_BROKER_URL_H

typedef struct ct__redis_url {
  char *host;     /* TCP host (brackets of an IPv6 address removed), or NULL */
  int port;       /* TCP port, 6379 by default */
  char *path;     /* Unix socket path, or NULL */
  char *user;     /* percent-decoded; NULL: none (AUTH with the password alone) */
  char *password; /* percent-decoded; NULL: no AUTH */
  int db;         /* SELECT this database if not 0 */
} ct__redis_url_t;

/* Parse url into *u (strings owned: ct__redis_url_free()). Returns 0;
 * CT_EINVAL for anything else than the forms above (an empty host or path,
 * a port outside 1..65535, a database that is not a number from 0 to
 * 1000000, an unknown scheme or query parameter, a bad %-escape or one
 * that decodes to a NUL); CT_ENOMEM. On error *u holds nothing to free. */
int ct__redis_url_parse(const char *url, ct__redis_url_t *u);
void ct__redis_url_free(ct__redis_url_t *u);

/* The URL without its password, for log lines: a new string or NULL. */
char *ct__redis_url_display(const ct__redis_url_t *u);

#endif
