/* Seven thousand distinct allocation stacks, 16 frames deep: block i (of 16 + i bytes) is
 * allocated at the bottom of a chain of `zero` and `one` calls that spells i in binary, bit 0
 * innermost. Enough trie nodes to make the stack trie grow its index and its node segments. */
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))
#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")
#define LEVELS 14

NOINLINE void *zero(int d, unsigned i);
NOINLINE void *one(int d, unsigned i);

NOINLINE void *zero(int d, unsigned i) {
    void *p = d == 0 ? malloc(16 + i) : (((i >> (d - 1)) & 1) ? one : zero)(d - 1, i);
    KEEP(p);
    return p;
}

NOINLINE void *one(int d, unsigned i) {
    void *p = d == 0 ? malloc(16 + i) : (((i >> (d - 1)) & 1) ? one : zero)(d - 1, i);
    KEEP(p);
    return p;
}

int main(void) {
    for (unsigned i = 0; i < 7000; i++) {
        void *p = zero(LEVELS, i);
        KEEP(p);
    }
    return 0;
}
