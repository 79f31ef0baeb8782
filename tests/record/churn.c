/* Threads that start and end all the time while snapshots are taken (--every): 1500 short-lived
 * threads, four at a time, some joined, some detached, each allocating into a shared array of
 * slots and freeing what it replaces. Nothing leaks. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 64
static _Atomic(void *) slots[SLOTS];
static atomic_int running;

static void *worker(void *arg) {
    unsigned seed = (unsigned)(long)arg;
    for (int i = 0; i < 50; i++) {
        seed = seed * 1103515245u + 12345u;
        void *p = malloc(16 + (seed >> 8) % 500);
        memset(p, 1, 16);
        free(atomic_exchange(&slots[(seed >> 16) % SLOTS], p));
    }
    atomic_fetch_sub(&running, 1);
    return NULL;
}

int main(void) {
    for (long i = 0; i < 1500; i += 4) {
        pthread_t t[4];
        for (int j = 0; j < 4; j++) {
            atomic_fetch_add(&running, 1);
            pthread_create(&t[j], NULL, worker, (void *)(i + j));
        }
        pthread_detach(t[3]);
        for (int j = 0; j < 3; j++) pthread_join(t[j], NULL);
    }
    while (atomic_load(&running) > 0) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    for (int i = 0; i < SLOTS; i++) free(atomic_exchange(&slots[i], NULL));
    printf("churn done\n");
    return 0;
}
