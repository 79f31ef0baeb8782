/* fork: the child records on under its own name. The parent keeps one block in a global and, after
 * the fork, drops 32 bytes; the child drops 64 bytes and exits through exit(). */
#include "common.h"
#include <sys/wait.h>
#include <unistd.h>
void *kept;
static NOINLINE void drop(size_t size) {
    void *p = malloc(size);
    memset(p, 0, size);
    p = NULL;
}
int main(void) {
    kept = malloc(100);
    pid_t pid = fork();
    if (pid == 0) {
        drop(64);
        scrub();
        exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    drop(32);
    scrub();
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
