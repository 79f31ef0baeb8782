/* Leaks made in worker threads: each of four workers builds a 5-node list and drops it, then
 * exits; main joins them. Four heads definitely lost, the rest indirectly. */
#include "common.h"
#include <pthread.h>
struct node { struct node *next; long value; };
static NOINLINE void build(void) {
    struct node *head = NULL;
    for (int i = 0; i < 5; i++) {
        struct node *n = malloc(sizeof *n);
        n->next = head;
        n->value = i;
        head = n;
    }
    head = NULL;
}
static void *worker(void *arg) {
    (void)arg;
    build();
    scrub();
    return NULL;
}
int main(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    scrub();
    return 0;
}
