/* A worker thread that blocks every signal with a raw rt_sigprocmask system call (pthread_sigmask
 * would leave the recorder's suspend signal deliverable), alive at exit: the recorder cannot stop
 * it, must not hang, and says so. */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
static pthread_barrier_t ready;
static int never[2];
static void *worker(void *arg) {
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, 8); /* 8: the kernel's sigset size */
    pthread_barrier_wait(&ready);
    char c;
    while (read(never[0], &c, 1) != 0) {}
    return NULL;
}
int main(void) {
    pthread_t t;
    if (pipe(never) != 0) return 1;
    pthread_barrier_init(&ready, NULL, 2);
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&ready);
    return 0;
}
