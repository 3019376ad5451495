/* SPDX-License-Identifier: Apache-2.0 */
/* lib/map: the plugin's hash map (keys live inside the values).  Checked
 * against a plain array as the reference model through random puts,
 * replacements, deletes, growth and tombstone purges. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <sodium.h>

#include "check.h"
#include "map.h"

struct item {
    int live; /* in the map, per the model */
    size_t klen;
    char key[24];
};

static const void *item_key(const void *v, size_t *n)
{
    const struct item *it = v;
    *n = it->klen;
    return it->key;
}

#define N 20000

static struct item items[N], twins[N]; /* twins: same keys, other objects */

static void test_basics(void)
{
    struct pn_map *m = pn_map_new(0, item_key);
    int err = 1;
    struct item a = {0, 3, "abc"}, b = {0, 3, "abc"}, c = {0, 4, "abcd"}, e = {0, 0, ""};

    CHECK(m != NULL);
    CHECK(pn_map_count(m) == 0);
    CHECK(pn_map_get(m, "abc", 3) == NULL);
    CHECK(pn_map_put(m, &a, &err) == NULL && err == 0);
    CHECK(pn_map_get(m, "abc", 3) == &a);
    CHECK(pn_map_get(m, "ab", 2) == NULL);   /* a prefix is another key */
    CHECK(pn_map_get(m, "abcd", 4) == NULL); /* and so is a longer one */
    CHECK(pn_map_put(m, &c, &err) == NULL && err == 0);
    CHECK(pn_map_get(m, "abcd", 4) == &c);
    CHECK(pn_map_put(m, &b, &err) == &a); /* same key: replaced, old value returned */
    CHECK(pn_map_get(m, "abc", 3) == &b);
    CHECK(pn_map_count(m) == 2);
    CHECK(pn_map_put(m, &e, NULL) == NULL); /* the empty key is a key */
    CHECK(pn_map_get(m, "", 0) == &e);
    CHECK(pn_map_del(m, "abc", 3) == &b);
    CHECK(pn_map_del(m, "abc", 3) == NULL);
    CHECK(pn_map_get(m, "abc", 3) == NULL);
    CHECK(pn_map_get(m, "abcd", 4) == &c);
    CHECK(pn_map_count(m) == 2);

    size_t i = 0, seen = 0;
    void *v;
    while (pn_map_next(m, &i, &v))
        seen += (v == &c || v == &e);
    CHECK(seen == 2);
    pn_map_free(m);
    pn_map_free(NULL);
}

static void test_against_model(void)
{
    struct pn_map *m = pn_map_new(16, item_key); /* small: must grow many times */
    size_t live = 0;
    int err;

    for (int i = 0; i < N; i++) {
        items[i].klen = (size_t)snprintf(items[i].key, sizeof(items[i].key), "k%d", i);
        twins[i] = items[i];
    }
    /* Random operations, also on keys not in the map. */
    for (int round = 0; round < 6 * N; round++) {
        int i = (int)randombytes_uniform(N);
        switch (randombytes_uniform(4)) {
        case 0:
        case 1: {
            struct item *want = randombytes_uniform(2) ? &items[i] : &twins[i];
            void *prev = pn_map_put(m, want, &err);
            CHECK(err == 0);
            if (items[i].live) {
                CHECK(prev == &items[i] || prev == &twins[i]);
            } else {
                CHECK(prev == NULL);
                live++;
            }
            items[i].live = 1;
            twins[i].live = want == &twins[i]; /* which object is stored */
            break;
        }
        case 2: {
            void *gone = pn_map_del(m, items[i].key, items[i].klen);
            CHECK(items[i].live ? gone == (twins[i].live ? (void *)&twins[i] : (void *)&items[i])
                                : gone == NULL);
            if (items[i].live)
                live--;
            items[i].live = twins[i].live = 0;
            break;
        }
        default: {
            void *got = pn_map_get(m, items[i].key, items[i].klen);
            CHECK(items[i].live ? got == (twins[i].live ? (void *)&twins[i] : (void *)&items[i])
                                : got == NULL);
        }
        }
    }
    CHECK(pn_map_count(m) == live);

    /* Every key agrees with the model, and iteration visits each live value once. */
    size_t bad = 0, visited = 0, pos = 0;
    for (int i = 0; i < N; i++) {
        void *got = pn_map_get(m, items[i].key, items[i].klen);
        void *want = !items[i].live ? NULL : twins[i].live ? (void *)&twins[i] : (void *)&items[i];
        bad += got != want;
    }
    CHECK(bad == 0);
    void *v;
    while (pn_map_next(m, &pos, &v)) {
        struct item *it = v;
        int idx = (int)(it - (it >= twins && it < twins + N ? twins : items));
        visited++;
        bad += !items[idx].live || (it == &twins[idx]) != twins[idx].live;
    }
    CHECK(bad == 0);
    CHECK(visited == live);

    /* Delete everything, then the table is empty but still usable. */
    for (int i = 0; i < N; i++)
        pn_map_del(m, items[i].key, items[i].klen);
    CHECK(pn_map_count(m) == 0);
    pos = 0;
    CHECK(!pn_map_next(m, &pos, &v));
    items[7].live = 0;
    CHECK(pn_map_put(m, &items[7], &err) == NULL && err == 0);
    CHECK(pn_map_get(m, "k7", 2) == &items[7]);
    /* 12 bytes a slot, at most 3/4 full: bounded memory for the entries. */
    CHECK(pn_map_bytes(m) < 200 + (size_t)N * 2 * 12 * 2);
    pn_map_free(m);
}

/* Issue 13: a map sized for a million entries, holding them, takes at most
 * 16 bytes (and a little) per entry: the plugin keeps three such maps for
 * a million pinned devices within 200 bytes per device. */
static void test_memory_per_entry(void)
{
    enum { M = 1000000 };
    struct item *many = calloc(M, sizeof(*many));
    struct pn_map *m = pn_map_new(M, item_key);
    int err = 0;
    CHECK(many && m);
    if (!many || !m)
        return;
    for (int i = 0; i < M && !err; i++) {
        many[i].klen = (size_t)snprintf(many[i].key, sizeof(many[i].key), "dev-%08d", i);
        pn_map_put(m, &many[i], &err);
    }
    CHECK(err == 0 && pn_map_count(m) == M);
    CHECK(pn_map_get(m, "dev-00999999", 12) == &many[M - 1]);
    CHECK(pn_map_bytes(m) <= (size_t)M * 161 / 10);
    pn_map_free(m);
    free(many);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_basics();
    test_against_model();
    test_memory_per_entry();
    return check_done("test_map");
}
