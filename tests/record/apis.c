/* One block leaked through each allocation function but malloc. */
#define _GNU_SOURCE
#include <malloc.h>
#include "common.h"
static NOINLINE void work(void) {
    char *a = malloc(10);
    a = realloc(a, 100);           /* 100 bytes */
    int *b = calloc(5, 8);         /* 40 */
    char *c = strdup("0123456789"); /* 11 */
    void *d = NULL;
    if (posix_memalign(&d, 64, 200) != 0) abort(); /* 200 */
    void *e = memalign(32, 48);    /* 48 */
    void *f = aligned_alloc(128, 256); /* 256 */
    long *g = reallocarray(NULL, 7, sizeof(long)); /* 56 */
    g = reallocarray(g, 9, sizeof(long));          /* 72 */
    a = NULL; b = NULL; c = NULL; d = NULL; e = NULL; f = NULL; g = NULL;
}
RUN(work)
