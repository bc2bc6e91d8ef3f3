/* What this process holds, read from /proc: open descriptors, child
 * processes and their states (the process-pool tests check that nothing is
 * left behind, not even a zombie). */
#ifndef CT_TESTS_PROC_H
#define CT_TESTS_PROC_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* The fields of /proc/PID/stat after the command name (field 3, the state
 * letter, first), read into buf; NULL if there is no such process. A
 * zombie still has an entry. */
static inline const char *proc_stat_fields(int pid, char *buf, size_t size) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  size_t len = fread(buf, 1, size - 1, f);
  fclose(f);
  buf[len] = 0;
  char *close_paren = strrchr(buf, ')');
  return close_paren && close_paren[1] == ' ' ? close_paren + 2 : NULL;
}

/* Pids whose parent is `ppid` (from /proc), at most max; returns how many. */
static inline int children_of(int ppid, int *pids, int max) {
  int n = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < max) {
    int pid = atoi(e->d_name);
    char buf[512];
    const char *fields = pid > 0 ? proc_stat_fields(pid, buf, sizeof buf) : NULL;
    int parent = 0;
    char state;
    if (fields && sscanf(fields, "%c %d", &state, &parent) == 2 && parent == ppid)
      pids[n++] = pid;
  }
  closedir(d);
  return n;
}

/* The state letter of pid from /proc/PID/stat ('R', 'S', 'Z', ...), or 0 if
 * there is no such process. */
static inline char proc_state(int pid) {
  char buf[512];
  const char *fields = proc_stat_fields(pid, buf, sizeof buf);
  return fields ? fields[0] : 0;
}

/* How many children of `ppid` are zombies (ended, not reaped). */
static inline int zombies_of(int ppid) {
  int pids[256], z = 0;
  int n = children_of(ppid, pids, 256);
  for (int i = 0; i < n; i++)
    z += proc_state(pids[i]) == 'Z';
  return z;
}

/* How many sockets pid has open, or -1 if its descriptors cannot be read. */
static inline int sockets_of(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", pid);
  DIR *d = opendir(path);
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char link[384], target[64];
    snprintf(link, sizeof link, "%s/%s", path, e->d_name);
    ssize_t len = readlink(link, target, sizeof target - 1);
    n += len > 7 && strncmp(target, "socket:", 7) == 0;
  }
  closedir(d);
  return n;
}

#endif
