/* A block referenced only from a callee-saved register (r15) of the thread that calls exit():
 * reachable, as memcheck says. The stack holds only the pointer xor a key. (glibc's exit path saves
 * r15 on the stack above the recorder's frame, so the stack scan finds it even without the
 * recorder's copy of the exiting thread's callee-saved registers.) */
#include "common.h"
#include <stdint.h>
static NOINLINE uintptr_t make(void) {
    void *block = malloc(56);
    memset(block, 9, 56);
    return (uintptr_t)block ^ 0x55555555u;
}
static NOINLINE void drop(void) {
    void *dropped = malloc(16);
    dropped = NULL;
}
int main(void) {
    volatile uintptr_t hidden = make();
    drop();
    scrub();
#if defined(__x86_64__)
    __asm__ volatile("mov %0, %%r15\n\t"
                     "xor $0x55555555, %%r15\n\t"
                     "movq $0, %0\n\t"
                     "xor %%edi, %%edi\n\t"
                     "call exit@PLT"
                     : "+m"(hidden)
                     :
                     : "r15", "rdi", "memory");
#endif
    return 0;
}
