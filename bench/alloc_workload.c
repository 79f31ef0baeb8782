/* The allocation-heavy workload of `heapsnap bench-capture`: OPS malloc/free (and some realloc)
 * of mixed sizes over a ring of live blocks, each block touched at both ends.
 *
 *   alloc_workload shallow OPS   allocates from a function called by main
 *   alloc_workload deep OPS      allocates 30 frames down a recursion, 32 operations per descent;
 *                                the recursion alternates between two functions along 8 paths,
 *                                so there are several distinct deep stacks
 *
 * Prints a checksum, so that the work cannot be optimised away. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
#define KEEP(x) __asm__ volatile("" : : "r"(x) : "memory")
#define SLOTS 4096
#define DEPTH 30
#define BATCH 32

static void *slot[SLOTS];
static unsigned long long rng = 88172645463325252ull;

static unsigned long long next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* 78% small (8-127 bytes), 20% medium (128-2047), 2% large (2 KiB-32 KiB). */
static size_t pick_size(unsigned long long r) {
    unsigned k = r & 255;
    if (k < 200) return 8 + (r >> 8) % 120;
    if (k < 251) return 128 + (r >> 8) % 1920;
    return 2048 + (r >> 8) % 30720;
}

NOINLINE static unsigned long long churn(long n) {
    unsigned long long sum = 0;
    for (long i = 0; i < n; i++) {
        unsigned long long r = next();
        unsigned s = (r >> 40) % SLOTS;
        size_t size = pick_size(r);
        char *p;
        if ((r >> 20) % 16 == 0 && slot[s] != NULL) {
            p = realloc(slot[s], size);
            if (p == NULL) abort();
        } else {
            free(slot[s]);
            p = malloc(size);
            if (p == NULL) abort();
        }
        p[0] = (char)i;
        p[size - 1] = (char)r;
        sum += (unsigned char)p[0];
        slot[s] = p;
    }
    return sum;
}

NOINLINE static unsigned long long deep_b(int depth, unsigned path, long n);

NOINLINE static unsigned long long deep_a(int depth, unsigned path, long n) {
    if (depth == 0) return churn(n);
    unsigned long long r = ((path >> (depth % 3)) & 1) ? deep_b(depth - 1, path, n) : deep_a(depth - 1, path, n);
    KEEP(r);
    return r + 1;
}

NOINLINE static unsigned long long deep_b(int depth, unsigned path, long n) {
    if (depth == 0) return churn(n);
    unsigned long long r = ((path >> (depth % 3)) & 1) ? deep_a(depth - 1, path, n) : deep_b(depth - 1, path, n);
    KEEP(r);
    return r + 3;
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "shallow") != 0 && strcmp(argv[1], "deep") != 0)) {
        fprintf(stderr, "usage: %s shallow|deep OPS\n", argv[0]);
        return 2;
    }
    long ops = atol(argv[2]);
    unsigned long long sum = 0;
    if (strcmp(argv[1], "shallow") == 0) {
        sum = churn(ops);
    } else {
        for (long done = 0, path = 0; done < ops; done += BATCH, path++) sum += deep_a(DEPTH - 2, (unsigned)path & 7, BATCH);
    }
    for (int i = 0; i < SLOTS; i++) free(slot[i]);
    printf("%llu\n", sum);
    return 0;
}
