/* Frees that arrive after a thread's TLS destructors ran: each of four workers parks a block in a
 * pthread key whose destructor frees it (and allocates and frees again) as the thread exits. None of
 * those is lost; the one block main drops is. */
#include "common.h"
#include <pthread.h>
static pthread_key_t key;
static void release(void *p) {
    free(p);
    void *late = malloc(16);
    free(late);
}
static void *worker(void *arg) {
    (void)arg;
    pthread_setspecific(key, malloc(40));
    return NULL;
}
static NOINLINE void work(void) {
    void *dropped = malloc(12);
    dropped = NULL;
}
int main(void) {
    pthread_key_create(&key, release);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    work();
    scrub();
    return 0;
}
