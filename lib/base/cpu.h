/* A hint to the CPU inside a spin-wait loop: it lets the sibling hardware
 * thread run and saves power, where the architecture has such a hint. */
#ifndef CT_LIB_CPU_H
#define CT_LIB_CPU_H

static inline void ct__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

#endif
