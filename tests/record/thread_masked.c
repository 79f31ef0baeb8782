#define MASKED
#include "thread_stack.c"
