/* btree.h - a B+tree stored in blocks.
 *
 * The tree is built only from block reads and block operations.  Its
 * blocks:
 *
 *   leaf   {"header": {"id", "type": "TL", "collection"},
 *           "entries": [[key, value], ...]}          sorted by key, unique
 *   branch {"header": {"id", "type": "TB", "collection"},
 *           "partitions": [key, ...], "nodes": [childId, ...]}
 *
 * with nodes.length == partitions.length + 1; partitions[i] separates
 * nodes[i] (keys < partitions[i]) from nodes[i+1] (keys >= partitions[i]).
 * Data lives only in leaves; there are no sibling links.  Keys are JSON
 * numbers, strings or arrays of keys, ordered by opt_key_cmp (json.h).
 *
 * The tree hangs off an existing "trunk" block, the header block, which
 * holds "rootId" (the root node's ID) and "capacity" (the fan-out: the most
 * entries in a leaf and children in a branch).  Every node but the root
 * holds at least capacity/2 (rounded down).  An empty tree is one empty
 * leaf root.
 *
 * Changes go through a tracker (block.h); each of opt_btree_put and
 * opt_btree_del is all or nothing: on error the tracker is as it was.
 * Queries read through a struct opt_source (use opt_tracker_source to read
 * a tracker's view) and hold only the blocks on the current root-to-leaf
 * path, so a scan of any size runs in bounded memory.
 */
#ifndef OPT_BTREE_H
#define OPT_BTREE_H

#include "block.h"

#include <jansson.h>
#include <stddef.h>

#define OPT_BTREE_DEFAULT_CAPACITY 64
#define OPT_BTREE_MIN_CAPACITY 4
#define OPT_BTREE_MAX_CAPACITY 4096

/* Create an empty tree: make an empty leaf root in collection, and set
 * "rootId" and "capacity" on the header block header_id, which must exist
 * in t (OPT_ENOTFOUND) and must not hold a tree already (OPT_EINVAL).
 * capacity must be 4..4096 (OPT_EINVAL); pass OPT_BTREE_DEFAULT_CAPACITY
 * for the default. */
int opt_btree_create(struct opt_tracker *t, const char *header_id, const char *collection, int capacity);

/* Look up key: 0 and *value (a new reference), or OPT_ENOTFOUND.
 * OPT_EINVAL when key is not a valid key; OPT_EINTEGRITY when the tree's
 * blocks are malformed or missing. */
int opt_btree_get(const struct opt_source *src, const char *header_id, const json_t *key, json_t **value);

/* The same, with the value as canonical JSON text: *text (malloc'd,
 * NUL-terminated) and *len.  Cheaper: a leaf is scanned, not parsed. */
int opt_btree_get_text(const struct opt_source *src, const char *header_id, const json_t *key, char **text,
		       size_t *len);

/* Insert key with value, or replace the entry when the key exists (the
 * stored key becomes key).  key and value are borrowed and copied.
 * *replaced (may be NULL) is set to 1 if the key existed, else 0. */
int opt_btree_put(struct opt_tracker *t, const char *header_id, const json_t *key, const json_t *value,
		  int *replaced);

/* Put n entries keys[i] -> values[i] (borrowed, copied) with the same
 * result as opt_btree_put of each in turn (of equal keys the last wins),
 * but faster for large batches in any order: the batch is sorted and
 * inserted along the tree, descending only when it leaves a leaf.  Invalid
 * keys fail the whole call with OPT_EINVAL before anything changes; after
 * a later failure (out of memory, a corrupt tree) the tracker holds a
 * valid tree with part of the batch in it: to make the call all or
 * nothing, wrap it in opt_tracker_mark / opt_tracker_rollback. */
int opt_btree_put_many(struct opt_tracker *t, const char *header_id, const json_t *const *keys,
		       const json_t *const *values, size_t n);

/* An entry as canonical JSON text: key k[0..kl), value v[0..vl). */
struct opt_kv_text {
	const char *k, *v;
	size_t kl, vl;
};

/* A bulk load into an empty tree (its root an empty leaf): the n entries
 * (canonical JSON text the caller vouches for; keys must be valid keys,
 * else OPT_EINVAL before anything changes) sorted, of equal keys the last
 * kept, written as full leaves (the last two evened out so that each holds
 * at least capacity/2) and full branches above them, as text blocks
 * (opt_tracker_insert_text), never parsed.  The same tree as
 * opt_btree_put_many would hold, laid out densely.  0 and *count (the
 * distinct keys); 1 when the tree is not empty (nothing changed: use
 * opt_btree_put_many); <0 on error (the tracker may hold part of it: wrap
 * it in a mark to undo). */
int opt_btree_load_text(struct opt_tracker *t, const char *header_id, const struct opt_kv_text *kv, size_t n,
			size_t *count);

/* Put the n entries (canonical JSON text the caller vouches for, as for
 * opt_btree_load_text) into the tree, with the result of
 * opt_btree_put_many (of equal keys the last wins), without building JSON
 * values for the entries: each leaf the batch touches is read as stored
 * text (through raw, the tracker's own source, when the tracker has not
 * changed it; raw may be NULL) and merged with its new entries as text; a
 * leaf that overflows is cut into pieces of at most capacity entries, each
 * at least capacity/2, the first keeping its ID.  0 and *added (the keys
 * that were not in the tree); 1 when a leaf's text is not as this code
 * writes it (use opt_btree_put_many); <0 on error.  After 1 or an error
 * the tracker may hold part of the batch: wrap it in a mark to undo. */
int opt_btree_merge_text(struct opt_tracker *t, const struct opt_source *raw, const char *header_id,
			 const struct opt_kv_text *kv, size_t n, size_t *added);

/* Delete key: 0, or OPT_ENOTFOUND when it is absent. */
int opt_btree_del(struct opt_tracker *t, const char *header_id, const json_t *key);

/* The number of entries (reads every leaf once, one path at a time). */
int opt_btree_count(const struct opt_source *src, const char *header_id, size_t *count);

/* A key range for a cursor.  lo and hi are optional (NULL: open at that
 * end); lo_incl and hi_incl make the bound inclusive.  Iteration is from
 * lo up to hi, or with reverse from hi down to lo.  Bounds need not be keys
 * of the tree; lo > hi gives an empty range.  The keys are copied by
 * opt_btree_cursor_open. */
struct opt_btree_range {
	const json_t *lo;
	int lo_incl;
	const json_t *hi;
	int hi_incl;
	int reverse;
};

/* A cursor over a range of entries. */
struct opt_btree_cursor;

/* Open a cursor on the tree at header_id; range may be NULL (everything,
 * ascending).  *out is the caller's; free it with opt_btree_cursor_free.
 * The cursor reads through src as it goes: a cursor reading a tracker's
 * view must not be used after that tracker changes (put, del, any
 * update); open a new one. */
int opt_btree_cursor_open(struct opt_btree_cursor **out, const struct opt_source *src,
			  const char *header_id, const struct opt_btree_range *range);

/* The next entry: 1 and *key, *value (borrowed, valid until the next call
 * on the cursor or its free), 0 at the end of the range, or a negative code
 * on error (the same code again on later calls). */
int opt_btree_cursor_next(struct opt_btree_cursor *c, const json_t **key, const json_t **value);

/* The next entry as canonical JSON text: 1 and *key, *value (not
 * NUL-terminated; *klen, *vlen bytes; valid until the next call on the
 * cursor or its free), 0 at the end, or a negative code.  The fast way to
 * print a range: leaves are scanned, not parsed. */
int opt_btree_cursor_next_text(struct opt_btree_cursor *c, const char **key, size_t *klen, const char **value,
			       size_t *vlen);

/* Free a cursor (NULL is fine). */
void opt_btree_cursor_free(struct opt_btree_cursor *c);

/* The stored bytes of block id: 0 and *out (the caller releases it with
 * opt_bytes_release); OPT_ENOTFOUND when absent. */
typedef int (*opt_btree_bytes_fn)(void *ctx, const char *id, struct opt_bytes *out);

/* How opt_btree_check reads and judges a tree.  Set it up with
 * OPT_BTREE_CHECK_OPTS_INIT (every member zero: the whole tree, parsed),
 * then set what you need:
 *
 *   struct opt_btree_check_opts o = OPT_BTREE_CHECK_OPTS_INIT;
 *   o.bytes = my_bytes;
 *   o.bctx = ctx;
 *   rc = opt_btree_check(src, header_id, &o, &count);
 */
struct opt_btree_check_opts {
	/* Read the nodes as stored text through bytes(bctx, ...) (the header
	 * through src) and check them without parsing them: the same checks
	 * and messages, and each node must be stored as canonical JSON
	 * ("btree block 'ID' is not stored as canonical JSON").  NULL: the
	 * nodes are read through src and parsed. */
	opt_btree_bytes_fn bytes;
	void *bctx;
	/* With bytes: called with every node's bytes as read, before they
	 * are checked; a negative return stops the check and is returned.
	 * NULL: not called. */
	int (*seen)(void *sarg, const char *id, const char *text, size_t len);
	void *sarg;
	/* Since a base (NULL: judge the whole tree).  The tree at src was
	 * made at base (a state that passed opt_btree_check with base_count
	 * entries) and only the blocks of changed ({id: anything}) differ.
	 * When only leaves changed, in place (the root and every branch as
	 * at base), each is checked where its first key routes from the
	 * root, with the bounds and depth found there, and *count is
	 * base_count plus what each holds now less what it held at base: a
	 * few blocks read, whatever the tree's size.  Any other change (a
	 * branch, a leaf added or dropped, a leaf not where its keys route)
	 * is judged by a check of the whole tree, as the members above say. */
	const struct opt_source *base;
	const json_t *changed;
	size_t base_count;
};

#define OPT_BTREE_CHECK_OPTS_INIT { 0 }

/* Check the tree's structure: valid header fields; every block present,
 * reached once, of type TL or TB, with the ID it is reached by and the
 * same collection as the root; entries sorted with unique valid keys;
 * nodes.length == partitions.length + 1 and partitions sorted; separators
 * route every key (each key lies within the bounds its ancestors'
 * partitions give it); fill bounds (non-root nodes >= capacity/2, all
 * <= capacity, a branch root has >= 2 children); all leaves at one depth.
 * opts (NULL: OPT_BTREE_CHECK_OPTS_INIT) says how to read the nodes and
 * whether only what changed since a base is judged.  0 and *count (may be
 * NULL) the number of entries, or OPT_EINTEGRITY with a message naming
 * the block.  Holds a set of visited block IDs. */
int opt_btree_check(const struct opt_source *src, const char *header_id, const struct opt_btree_check_opts *opts,
		    size_t *count);

#endif
