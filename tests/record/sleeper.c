/* Runs for about 300 ms holding one block in a global and having dropped another: what --every
 * snapshots see. Sleeps through signals (the recorder's suspend signal interrupts nanosleep). */
#include "common.h"
#include <time.h>
void *kept;
static NOINLINE void work(void) {
    kept = malloc(200);
    void *dropped = malloc(20);
    dropped = NULL;
}
int main(void) {
    work();
    scrub();
    struct timespec left = {0, 300 * 1000000};
    while (nanosleep(&left, &left) != 0) {}
    return 0;
}
