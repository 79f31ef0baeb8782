/* signal_stack.c, with the signal sent to `heapsnap record`, which forwards it. */
#define VIA_PARENT
#include "signal_stack.c"
