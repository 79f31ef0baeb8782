/* Shared by the recorder's test programs. The work happens in a function that does not return
 * its pointers; main then overwrites the stack below it, so that no stale pointer survives in a
 * dead stack slot that one tool scans and the other does not (as valgrind's own tests do). */
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

static NOINLINE void scrub(void) {
    volatile char junk[16384];
    memset((char *)junk, 0, sizeof junk);
}

#define RUN(work) \
    int main(void) { work(); scrub(); return 0; }
