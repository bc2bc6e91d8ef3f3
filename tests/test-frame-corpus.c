/* Feed every file of the frame fuzz corpus (a directory given as argv[1])
 * through the decoder, so that builds without libFuzzer exercise it too. */
#include <dirent.h>
#include <ctasker.h>

#include "check.h"
#include "fuzz-frame-input.h"

static void run_file(const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  CHECK(f);
  unsigned char buf[65536];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  fuzz_frame_input(buf, n);
}

int main(int argc, char **argv) {
  CHECK(argc == 2);
  DIR *dir = opendir(argv[1]);
  CHECK(dir);
  int files = 0;
  struct dirent *e;
  while ((e = readdir(dir)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    run_file(argv[1], e->d_name);
    files++;
  }
  closedir(dir);
  fprintf(stderr, "%d corpus files decoded\n", files);
  return files > 0 ? 0 : 1;
}
