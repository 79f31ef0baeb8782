/* Blocks referenced only from __thread variables: one of a worker thread blocked at exit, one of
 * the main thread. Both reachable; the block a worker drops is definitely lost. */
#include "common.h"
#include <pthread.h>
#include <unistd.h>
static __thread void *mine;
static pthread_barrier_t ready;
static int never[2];
static void *worker(void *arg) {
    (void)arg;
    mine = malloc(56);
    memset(mine, 3, 56);
    void *dropped = malloc(8);
    dropped = NULL;
    scrub();
    pthread_barrier_wait(&ready);
    char c;
    while (read(never[0], &c, 1) != 0) {}
    return NULL;
}
static NOINLINE void work(void) {
    mine = malloc(88);
    memset(mine, 4, 88);
}
int main(void) {
    pthread_t t;
    if (pipe(never) != 0) return 1;
    pthread_barrier_init(&ready, NULL, 2);
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&ready);
    work();
    scrub();
    return 0;
}
