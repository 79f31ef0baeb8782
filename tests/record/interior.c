/* A 64-byte block kept only by a global that points 20 bytes into it: possibly lost. The block it
 * points to (by its start) is possibly lost too; a block it does not reach stays definitely lost. */
#include "common.h"
char *middle;
static NOINLINE void work(void) {
    char *block = malloc(64);
    memset(block, 0, 64);
    void *child = malloc(24);
    memset(child, 0, 24);
    memcpy(block + 32, &child, sizeof child);
    middle = block + 20;
    block = NULL;
    child = NULL;
    void *dropped = malloc(8);
    dropped = NULL;
}
RUN(work)
