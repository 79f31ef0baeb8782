/* Eight call paths taken in turn, six rounds, three blocks per visit: block n (of 16 + n bytes)
 * is allocated at the bottom of a chain of LEVELS + 1 calls of `zero` and `one`, where only the
 * three outermost levels differ between paths (bit 2 of the path outermost), so the eight stacks
 * share their innermost frames, slot for slot. The recorder keeps its recent stacks per thread
 * and recognises one again by its return addresses: each revisit must still be told apart by
 * its outer frames. */
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))
#define KEEP(x) __asm__ volatile("" : : "r"(x) : "memory")
#define LEVELS 12
#define PATHS 8
#define ROUNDS 6
#define PER_VISIT 3

static void *kept[ROUNDS * PATHS * PER_VISIT];
static unsigned next_block;

NOINLINE int zero(int d, unsigned path);
NOINLINE int one(int d, unsigned path);

/* The function that level d - 1 runs in: bit (d - 1) - (LEVELS - 3) of the path at the three
 * outermost levels, `zero` below. */
static int (*below(int d, unsigned path))(int, unsigned) {
    int bit = d - 1 - (LEVELS - 3);
    return bit >= 0 && ((path >> bit) & 1) ? one : zero;
}

static int bottom(void) {
    for (int k = 0; k < PER_VISIT; k++) {
        kept[next_block] = malloc(16 + next_block);
        next_block++;
    }
    return 1;
}

NOINLINE int zero(int d, unsigned path) {
    int r = d == 0 ? bottom() : below(d, path)(d - 1, path);
    KEEP(r);
    return r + 1;
}

NOINLINE int one(int d, unsigned path) {
    int r = d == 0 ? bottom() : below(d, path)(d - 1, path);
    KEEP(r);
    return r + 2;
}

int main(void) {
    int sum = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (unsigned path = 0; path < PATHS; path++) sum += zero(LEVELS, path);
    }
    KEEP(sum);
    KEEP(kept);
    return 0;
}
