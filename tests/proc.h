/* What this process holds, read from /proc: open descriptors and child
 * processes (the process-pool tests check that nothing is left behind). */
#ifndef CT_TESTS_PROC_H
#define CT_TESTS_PROC_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif
