/* A library that the dlopen test loads after start-up, built without frame pointers: a stack
 * through it is only right when the recorder has learned its unwind tables. */
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))
#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

NOINLINE void *lib_inner(void) { void *p = malloc(777); KEEP(p); return p; }
NOINLINE void *lib_leak(void) { void *p = lib_inner(); KEEP(p); return p; }
