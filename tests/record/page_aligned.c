/* valloc (page-aligned) leaks one block; a failed realloc leaves its block allocated, which then
 * leaks too. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include "common.h"
static NOINLINE void work(void) {
    void *a = valloc(300);          /* 300 */
    char *c = malloc(70);           /* 70 */
    size_t huge = SIZE_MAX / 2;
    char *d = realloc(c, huge);     /* fails: NULL, and c stays allocated */
    if (d != NULL) abort();
    a = NULL; c = NULL;
}
RUN(work)
