/* exec: the new image is recorded from scratch (what the old one dropped is gone with it). */
#include "common.h"
#include <unistd.h>
static NOINLINE void drop(size_t size) {
    void *p = malloc(size);
    memset(p, 0, size);
    p = NULL;
}
int main(int argc, char **argv) {
    if (argc == 1) {
        drop(16);
        execl(argv[0], argv[0], "again", (char *)NULL);
        return 1;
    }
    drop(48);
    scrub();
    return 0;
}
