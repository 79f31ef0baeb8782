/* Signals that arrive inside the allocator: a 50 µs profiling timer whose handler calls malloc and
 * free, while main allocates and frees in a loop. Nothing may deadlock or be lost; the one block
 * main drops is definitely lost. */
#include "common.h"
#include <signal.h>
#include <sys/time.h>
static volatile long ticks;
static void on_tick(int sig) {
    (void)sig;
    void *p = malloc(32);
    memset(p, 1, 32);
    free(p);
    ticks++;
}
static NOINLINE void work(void) {
    for (int i = 0; i < 300000; i++) {
        void *p = malloc(16 + i % 200);
        free(p);
    }
    void *dropped = malloc(48);
    dropped = NULL;
}
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_tick;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval every = {{0, 50}, {0, 50}};
    setitimer(ITIMER_PROF, &every, NULL);
    work();
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_PROF, &off, NULL);
    scrub();
    return 0;
}
