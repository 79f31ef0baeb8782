/* A binary tree of 15 nodes kept by a global, plus a detached subtree of 3 nodes that leaks. */
#include "common.h"
struct tree { struct tree *left, *right; int key; };
struct tree *root;
static struct tree *build(int depth, int *key) {
    if (depth == 0) return NULL;
    struct tree *t = malloc(sizeof *t);
    t->left = build(depth - 1, key);
    t->key = (*key)++;
    t->right = build(depth - 1, key);
    return t;
}
static NOINLINE void work(void) {
    int key = 0;
    root = build(4, &key);
    struct tree *lost = build(2, &key);
    lost = NULL;
}
RUN(work)
