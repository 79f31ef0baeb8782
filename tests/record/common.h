/* Shared by the recorder's test programs. The work happens in a function that does not return
 * its pointers; main then overwrites the stack below it, so that no stale pointer survives in a
 * dead stack slot that one tool scans and the other does not (as valgrind's own tests do), and
 * zeroes the registers a call may clobber, where a stale copy would make a dropped block look
 * reachable to a snapshot taken while the program is stopped. */
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

static NOINLINE void scrub(void) {
    volatile char junk[16384];
    memset((char *)junk, 0, sizeof junk);
#if defined(__x86_64__)
    __asm__ volatile("xor %%eax, %%eax\n\txor %%ecx, %%ecx\n\txor %%edx, %%edx\n\t"
                     "xor %%esi, %%esi\n\txor %%edi, %%edi\n\txor %%r8d, %%r8d\n\t"
                     "xor %%r9d, %%r9d\n\txor %%r10d, %%r10d\n\txor %%r11d, %%r11d"
                     ::: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory");
#endif
}

#define RUN(work) \
    int main(void) { work(); scrub(); return 0; }
