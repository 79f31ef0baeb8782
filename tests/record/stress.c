/* Stress for the recorder: 16 threads allocate blocks of mixed sizes and hand them to each other
 * through a shared array of slots (so most blocks are freed by another thread than the one that
 * made them), realloc some, take signals whose handler allocates, and fork now and then (the child
 * allocates, and exits through exit() or _exit()). Main sends the process SIGUSR2 as it goes (the
 * --signal trigger; the program's own handler counts them). Prints one line; leaks nothing. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS 16
#define SLOTS 256
#define ROUNDS 20000

static _Atomic(void *) slots[SLOTS];
static atomic_long usr1_seen, usr2_seen;

static void on_usr1(int sig) {
    (void)sig;
    void *p = malloc(24); /* allocating inside a handler that may interrupt a hook */
    free(p);
    atomic_fetch_add(&usr1_seen, 1);
}

static void on_usr2(int sig) {
    (void)sig;
    atomic_fetch_add(&usr2_seen, 1);
}

static void child_work(int how) {
    void *p = malloc(100);
    memset(p, 1, 100);
    free(p);
    if (how == 0) exit(0); /* the child's own exit snapshot */
    _exit(0);
}

static void *worker(void *arg) {
    unsigned seed = (unsigned)(long)arg * 7919u + 1;
    for (int i = 0; i < ROUNDS; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t size = 8 + (seed >> 8) % 2000;
        void *p = (seed >> 4) % 8 == 0 ? calloc(1, size) : malloc(size);
        if (!p) abort();
        memset(p, (int)i, size < 64 ? size : 64);
        if ((seed >> 12) % 5 == 0) {
            void *q = realloc(p, size * 2);
            if (q) p = q;
        }
        void *old = atomic_exchange(&slots[(seed >> 16) % SLOTS], p);
        free(old); /* usually another thread's block */
        if (i % 2500 == 0) raise(SIGUSR1);
        if ((long)arg % 8 == 0 && i % 5000 == 1000) {
            pid_t pid = fork();
            if (pid == 0) child_work(i % 10000 == 1000 ? 0 : 1);
            if (pid > 0) waitpid(pid, NULL, 0);
        }
    }
    return NULL;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 5; i++) {
        kill(getpid(), SIGUSR2);
        struct timespec ms = {0, 20 * 1000000};
        while (nanosleep(&ms, &ms) != 0) {}
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < SLOTS; i++) free(atomic_exchange(&slots[i], NULL));
    printf("stress done: %d threads, %d rounds each, SIGUSR2 handled: %s\n", THREADS, ROUNDS,
           atomic_load(&usr2_seen) > 0 ? "yes" : "no");
    return 0;
}
