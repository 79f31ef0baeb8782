/* A block referenced only from a register (r12) of a worker thread spinning when the process exits:
 * reachable (memcheck scans registers too). The stack holds only the pointer xor a key. */
#include "common.h"
#include <pthread.h>
#include <stdint.h>
volatile int ready;
static void *worker(void *arg) {
    (void)arg;
    void *block = malloc(72);
    memset(block, 2, 72);
    volatile uintptr_t hidden = (uintptr_t)block ^ 0x55555555u;
    block = NULL;
#if defined(__x86_64__)
    __asm__ volatile("mov %0, %%r12\n\t"
                     "xor $0x55555555, %%r12\n\t"
                     "movl $1, ready(%%rip)\n\t"
                     "1: pause\n\t"
                     "jmp 1b"
                     :
                     : "r"((uintptr_t)hidden)
                     : "r12", "memory");
#endif
    return NULL;
}
static NOINLINE void work(void) {
    void *dropped = malloc(24);
    dropped = NULL;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    while (!ready) {}
    work();
    scrub();
    return 0;
}
