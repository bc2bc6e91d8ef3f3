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

/* Pids whose parent is `ppid` (from /proc), at most max; returns how many. */
static inline int children_of(int ppid, int *pids, int max) {
  int n = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < max) {
    int pid = atoi(e->d_name);
    if (pid <= 0)
      continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *close_paren = strrchr(buf, ')');
    int parent = 0;
    char state;
    if (close_paren && sscanf(close_paren + 2, "%c %d", &state, &parent) == 2 && parent == ppid)
      pids[n++] = pid;
  }
  closedir(d);
  return n;
}

/* The state letter of pid from /proc/PID/stat ('R', 'S', 'Z', ...), or 0 if
 * there is no such process. */
static inline char proc_state(int pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  size_t len = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[len] = 0;
  char *close_paren = strrchr(buf, ')');
  char state = 0;
  if (!close_paren || sscanf(close_paren + 2, "%c", &state) != 1)
    return 0;
  return state;
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
