/* The library dlopen.c loads: one writable global. */
void *stash;
