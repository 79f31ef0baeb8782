/* realloc(p, 0) frees p and returns NULL (glibc): nothing leaks from it. One block leaks on purpose. */
#include "common.h"
void *volatile kept;
static NOINLINE void work(void) {
    void *p = malloc(50);
    kept = realloc(p, 0);
    p = NULL;
    void *q = realloc(NULL, 30);
    q = NULL;
}
RUN(work)
