/* pvalloc rounds the size up to whole pages: the leaked block is one page. (valgrind 3.19's
 * memcheck aborts the program at pvalloc, so this one is checked against its expected figures.) */
#define _GNU_SOURCE
#include <malloc.h>
#include <unistd.h>
#include "common.h"
static NOINLINE void work(void) {
    void *b = pvalloc(100);
    void *e = pvalloc(0);           /* glibc: one page as well */
    b = NULL; e = NULL;
}
RUN(work)
