/* A block referenced only from a local variable of a worker thread that is still running (blocked)
 * when the process exits: reachable, as memcheck says. A block dropped by main stays definitely lost. */
#include "common.h"
#include <pthread.h>
#include <unistd.h>
static pthread_barrier_t ready;
static int never[2];
static void *worker(void *arg) {
    (void)arg;
    void *volatile kept = malloc(100);
    memset(kept, 1, 100);
    pthread_barrier_wait(&ready);
    char c;
    while (read(never[0], &c, 1) != 0) {} /* blocks until exit */
    return kept;
}
static NOINLINE void work(void) {
    void *dropped = malloc(40);
    dropped = NULL;
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
