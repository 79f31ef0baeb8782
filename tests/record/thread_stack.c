/* A block referenced only from a local variable of a worker thread that is still running (blocked)
 * when the process exits: reachable, as memcheck says. A block dropped by main stays definitely lost.
 * With -DMASKED the worker first blocks every signal with pthread_sigmask, as servers that take
 * signals with sigwait in one thread do: it must be stopped and scanned all the same. */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
static pthread_barrier_t ready;
static int never[2];
static void *worker(void *arg) {
    (void)arg;
#ifdef MASKED
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
#endif
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
