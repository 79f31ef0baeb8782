/* A singly linked list of 10 nodes, dropped: the head is definitely lost, the rest indirectly. */
#include "common.h"
struct node { struct node *next; long value; };
static NOINLINE void work(void) {
    struct node *head = NULL;
    for (int i = 0; i < 10; i++) {
        struct node *n = malloc(sizeof *n);
        n->next = head;
        n->value = i;
        head = n;
    }
    head = NULL;
}
RUN(work)
