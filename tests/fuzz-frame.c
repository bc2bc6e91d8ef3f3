/* libFuzzer target for the frame decoder (built with clang only). */
#include <stddef.h>
#include <stdint.h>

#include "fuzz-frame-input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_frame_input(data, size);
  return 0;
}
