/* An open-addressing hash map from byte strings to pointers, keyed with
 * SipHash (libsodium crypto_shorthash) under a per-map random key, so
 * identifiers chosen by clients cannot be used to degrade lookups.
 *
 * The map does not copy keys: a key must stay valid and unchanged while
 * its entry is in the map (normally it lives inside the value). */
#ifndef PN_MAP_H
#define PN_MAP_H

#include <stddef.h>
#include <stdint.h>

struct pn_map;

/* New empty map, room for about `hint` entries before it grows.  NULL on
 * allocation failure. */
struct pn_map *pn_map_new(size_t hint);
/* Frees the map, not the keys or values. */
void pn_map_free(struct pn_map *m);

void *pn_map_get(const struct pn_map *m, const void *key, size_t klen);
/* Inserts or replaces; returns the previous value (or NULL).  *err is set
 * to -1 on allocation failure (the map is then unchanged). */
void *pn_map_put(struct pn_map *m, const void *key, size_t klen, void *val, int *err);
/* Removes; returns the removed value or NULL. */
void *pn_map_del(struct pn_map *m, const void *key, size_t klen);
size_t pn_map_count(const struct pn_map *m);

/* Iteration: for (size_t i = 0; pn_map_next(m, &i, &k, &kl, &v);) ...
 * Do not insert while iterating; deleting the current entry is allowed
 * only through the returned key after the loop moved on (collect first). */
int pn_map_next(const struct pn_map *m, size_t *pos, const void **key, size_t *klen,
                void **val);

/* Bytes used by the table itself (not keys or values), for benchmarks. */
size_t pn_map_bytes(const struct pn_map *m);

#endif
