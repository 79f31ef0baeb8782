/* A block referenced only from a stack variable when a --signal snapshot is taken: reachable in
 * that snapshot, lost at exit (the variable is cleared after). The program's own SIGUSR2 handler
 * must still run (exit status 3 if not). Under the recorder it waits for the snapshot by watching
 * $HEAPSNAP_LIST; under memcheck it does not wait. */
#include "common.h"
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static volatile sig_atomic_t handled;
static void on_usr2(int sig) { (void)sig; handled = 1; }
static void wait_for_snapshot(void) {
    const char *list = getenv("HEAPSNAP_LIST");
    struct stat st;
    for (int i = 0; list && i < 10000; i++) {
        if (stat(list, &st) == 0 && st.st_size > 0) return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}
static NOINLINE void drop(void) {
    void *dropped = malloc(40);
    dropped = NULL;
}
static NOINLINE void work(void) {
    drop();
    scrub();
    char *volatile held = malloc(1234);
    memset(held, 5, 1234);
#ifdef VIA_PARENT
    /* Under `heapsnap record`, ask it (the parent), which passes the signal on. */
    if (getenv("HEAPSNAP_LIST"))
        kill(getppid(), SIGUSR2);
    else
        raise(SIGUSR2);
#else
    raise(SIGUSR2);
#endif
    wait_for_snapshot();
    held = NULL;
}
int main(void) {
    signal(SIGUSR2, on_usr2);
    work();
    scrub();
    return handled ? 0 : 3;
}
