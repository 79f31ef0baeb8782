/* Loads LIB (argv[1]) with dlopen, leaks a block allocated inside it, and unloads it: the block's
 * stack must name the library's functions although the object is gone by the snapshot. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))
#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

void *volatile sink;

NOINLINE static void *call_into(const char *path) {
    void *lib = dlopen(path, RTLD_NOW);
    if (lib == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        exit(1);
    }
    void *(*leak)(void) = (void *(*)(void))dlsym(lib, "lib_leak");
    void *p = leak();
    KEEP(p);
    dlclose(lib);
    return p;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    sink = call_into(argv[1]);
    sink = NULL;
    return 0;
}
