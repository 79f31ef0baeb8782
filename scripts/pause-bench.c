/* For the snapshot-pause benchmark (scripts/pause-bench.sh): holds BLOCKS blocks of SIZE bytes
 * (default 1M x 1 KiB = 1 GiB), each pointing at the previous one, then sends itself SIGUSR2 and
 * waits until the recorder lists the snapshot in $HEAPSNAP_LIST. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int main(int argc, char **argv) {
    long blocks = argc > 1 ? atol(argv[1]) : 1000000;
    long size = argc > 2 ? atol(argv[2]) : 1024;
    void **list = malloc(sizeof(void *) * blocks);
    void *previous = NULL;
    for (long i = 0; i < blocks; i++) {
        void **b = malloc(size);
        memset(b, 0, size);
        b[0] = previous;
        previous = b;
        list[i] = b;
    }
    raise(SIGUSR2);
    const char *listed = getenv("HEAPSNAP_LIST");
    struct stat st;
    for (int i = 0; listed && i < 600000; i++) {
        if (stat(listed, &st) == 0 && st.st_size > 0) break;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    printf("%ld blocks of %ld bytes\n", blocks, size);
    return list[blocks - 1] == previous ? 0 : 1;
}
