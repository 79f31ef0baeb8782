/* A leaked 32-byte block that points at a 3-block cycle: one leader, four blocks lost through it.
 * A 3-block cycle reached by nothing else leaks as its own group. */
#include "common.h"
struct node { struct node *next; long pad[3]; };
static struct node *cycle(int n) {
    struct node *first = calloc(1, sizeof *first), *last = first;
    for (int i = 1; i < n; i++) {
        last->next = calloc(1, sizeof *last);
        last = last->next;
    }
    last->next = first;
    return first;
}
static NOINLINE void work(void) {
    struct node *holder = calloc(1, sizeof *holder);
    holder->next = cycle(3);
    holder = NULL;
    struct node *alone = cycle(3);
    alone = NULL;
}
RUN(work)
