#include <stdio.h>
#include <stdlib.h>
#include "vec.h"

static const char *USAGE = "usage: vec [n]\n"
                           "  prints the first n squares\n";

struct vec {
    int *data;
    size_t len;
    size_t cap;
};

struct vec *vec_new(size_t cap) {
    struct vec *v = malloc(sizeof *v);
    v->data = malloc(cap * sizeof(int));
    v->len = 0;
    v->cap = cap;
    return v;
}

int vec_push(struct vec *v, int x) {
    if (v->len == v->cap) {
        size_t cap = v->cap * 2 + 1;
        int *data = realloc(v->data, cap * sizeof(int));
        if (!data) {
            return -1;
        }
        v->data = data;
        v->cap = cap;
    }
    v->data[v->len++] = x;
    return 0;
}

void vec_free(struct vec *v) {
    free(v->data);
    free(v);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 1;
    }
    int n = atoi(argv[1]);
    struct vec *v = vec_new(4);
    for (int i = 0; i < n; i++) {
        vec_push(v, i * i);
    }
    printf("%zu\n", v->len);
    vec_free(v);
    return 0;
}
