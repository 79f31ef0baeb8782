/* Allocation stacks: every block is leaked from a known chain of functions and has a size of its
 * own, so that a test can find it in the snapshot and check each frame of its stack against the
 * symbol table. Built with and without frame pointers. The calls are kept from being inlined or
 * turned into tail calls (the `sink` after each), so that each function has a frame of its own. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

void *volatile sink;

/* malloc, three frames deep: leaf_malloc <- middle <- outer <- main. */
NOINLINE void *leaf_malloc(size_t n) { void *p = malloc(n); KEEP(p); return p; }
NOINLINE void *middle(size_t n) { void *p = leaf_malloc(n); KEEP(p); return p; }
NOINLINE void *outer(size_t n) { void *p = middle(n); KEEP(p); return p; }

/* calloc, and a block moved by realloc, and one made by libc's strdup. */
NOINLINE void *leaf_calloc(void) { void *p = calloc(7, 19); KEEP(p); return p; }
NOINLINE void *grow_it(void) {
    char *p = malloc(3);
    KEEP(p);
    p = realloc(p, 4001);
    KEEP(p);
    return p;
}
NOINLINE char *dup_it(void) { char *p = strdup("a string of 27 bytes + NUL"); KEEP(p); return p; }

/* A deep chain: recurse(d) calls itself d times, then allocates. */
NOINLINE void *recurse(int d) {
    void *p = d == 0 ? malloc(333) : recurse(d - 1);
    KEEP(p);
    return p;
}

/* The same call path ten times (one stack), and a sibling path from the same parent. */
NOINLINE void *same_site(void) { void *p = malloc(55); KEEP(p); return p; }
NOINLINE void *other_site(void) { void *p = malloc(66); KEEP(p); return p; }
NOINLINE void shared_parent(void) {
    for (int i = 0; i < 10; i++) {
        void *p = same_site();
        KEEP(p);
    }
    void *q = other_site();
    KEEP(q);
}

int main(void) {
    sink = outer(101);
    sink = leaf_calloc();
    sink = grow_it();
    sink = dup_it();
    sink = recurse(20);
    shared_parent();
    sink = NULL;
    return 0;
}
