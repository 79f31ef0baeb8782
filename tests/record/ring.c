/* A doubly linked ring of 5 nodes of 24 bytes, dropped: a pure cycle. memcheck still names one
 * leader (definitely lost) and counts the other four as indirectly lost. */
#include "common.h"
struct node { struct node *next, *prev; long value; };
static NOINLINE void work(void) {
    struct node *first = malloc(sizeof *first);
    first->next = first->prev = first;
    for (int i = 1; i < 5; i++) {
        struct node *n = malloc(sizeof *n);
        n->value = i;
        n->prev = first->prev;
        n->next = first;
        first->prev->next = n;
        first->prev = n;
    }
    first = NULL;
}
RUN(work)
