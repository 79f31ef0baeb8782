/* dlopen/dlclose: a block kept only in a global of a dlopen'ed library (libstash.so, next to this
 * program) is reachable while the library is loaded (the --signal snapshot) and lost once it is
 * closed (at exit), as memcheck says. */
#include "common.h"
#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static void on_usr2(int sig) { (void)sig; }
static void wait_for_snapshot(void) {
    const char *list = getenv("HEAPSNAP_LIST");
    struct stat st;
    for (int i = 0; list && i < 10000; i++) {
        if (stat(list, &st) == 0 && st.st_size > 0) return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}
static NOINLINE void *load(void) {
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 16);
    if (n <= 0) exit(2);
    path[n] = 0;
    strcpy(strrchr(path, '/') + 1, "libstash.so");
    void *lib = dlopen(path, RTLD_NOW);
    if (!lib) exit(2);
    void **stash = dlsym(lib, "stash");
    *stash = malloc(77);
    memset(*stash, 7, 77);
    return lib;
}
int main(void) {
    signal(SIGUSR2, on_usr2);
    void *lib = load();
    scrub();
    raise(SIGUSR2);
    wait_for_snapshot();
    dlclose(lib);
    scrub();
    return 0;
}
