/* block.h - blocks, block operations, transforms and the tracker.
 *
 * A block is a JSON object with a header {"id", "type", "collection"} and
 * type-specific fields.  A block operation is [entity, index, deleteCount,
 * inserted]: when `inserted` is an array, splice deleteCount elements at
 * index of the array property `entity` and insert the elements of
 * `inserted`; otherwise set the property `entity` to `inserted` (null
 * removes it).  A transform is {"inserts": {id: block}, "updates": {id:
 * [op...]}, "deletes": [id...]}.
 *
 * Data structures read blocks from a source (struct opt_source) and change
 * them only through a tracker, which collects the changes over the source
 * without touching it, serves reads as if they were applied, and can be
 * reset (rollback).  Committing a transaction writes the tracker's changed
 * blocks.
 */
#ifndef OPT_BLOCK_H
#define OPT_BLOCK_H

#include <jansson.h>
#include <stddef.h>

/* The bytes of a stored block (its canonical JSON, not NUL-terminated),
 * held by owner until opt_bytes_release. */
struct opt_memo {
	void *p;                 /* what a reader derived from the bytes */
	void (*free)(void *p);
};

struct opt_bytes {
	const char *data;
	size_t len;
	void (*release)(void *owner);
	void *owner;
	/* When the source keeps these bytes for later reads (else NULL): a
	 * slot kept with them, where a reader may leave what it derived
	 * from them (an index) for the next reader; valid until the next
	 * read from the source. */
	struct opt_memo *memo;
};

/* Release b's bytes (fine on an empty one); b becomes empty. */
void opt_bytes_release(struct opt_bytes *b);

/* Read-only access to blocks by ID. */
struct opt_source {
	/* Get block id: 0 and *out (a new reference the caller must not
	 * modify) or OPT_ENOTFOUND, or another negative code on failure. */
	int (*get)(void *ctx, const char *id, json_t **out);
	void *ctx;
	/* Optional (may be NULL): get block id as stored, unparsed, when
	 * that is cheaper: 0 with either *out (parsed, as get gives it) or
	 * *raw (the canonical bytes of a tree leaf, which readers scan
	 * without building JSON values), the other left empty.  With *out,
	 * raw->memo alone may be set (no bytes): a slot kept with a block
	 * the source keeps for its life (an inner tree node), where a reader
	 * may leave what it derived from the block (valid while *out is). */
	int (*get_raw)(void *ctx, const char *id, json_t **out, struct opt_bytes *raw);
};

/* The block's header fields (borrowed; NULL when absent or not a string). */
const char *opt_block_id(const json_t *block);
const char *opt_block_type(const json_t *block);
const char *opt_block_collection(const json_t *block);

/* A new block {"header": {"id", "type", "collection"}} with a fresh random
 * ID when id is NULL. */
int opt_block_new(json_t **out, const char *id, const char *type, const char *collection);

/* Check a block read from outside: an object whose header has a valid id,
 * a non-empty string type, and a collection string; when collection is
 * not NULL the header's collection must equal it.  OPT_EINVAL with a
 * message naming what is wrong. */
int opt_block_check(const json_t *block, const char *collection);

/* Check the shape of an operation (no block needed).  OPT_EINVAL. */
int opt_op_check(const json_t *op);

/* Apply one operation to block, in place.  The inserted values are shared
 * with the op, not copied (blocks' values are never changed in place: only
 * ops change blocks, and an op replaces values): do not change them after.  OPT_EINVAL when the op is malformed, its entity is "header", the
 * property is not an array for a splice, or the index or count is out of
 * range; the block is unchanged then. */
int opt_op_apply(json_t *block, const json_t *op);

/* Check the shape of a transform {inserts, updates, deletes} (each part
 * optional).  OPT_EINVAL. */
int opt_transform_check(const json_t *transform);

/* The tracker. */
struct opt_tracker;

int opt_tracker_new(struct opt_tracker **out, const struct opt_source *src);
void opt_tracker_free(struct opt_tracker *t);

/* The block as changed so far: 0 and *out borrowed (valid until the next
 * change of that block, opt_tracker_reset or opt_tracker_free; do not
 * modify it), OPT_ENOTFOUND when absent or deleted. */
int opt_tracker_get(struct opt_tracker *t, const char *id, const json_t **out);

/* Insert block (a deep copy is kept).  Fails with OPT_EINVAL when the block
 * is malformed.  Inserting over an existing ID replaces it. */
int opt_tracker_insert(struct opt_tracker *t, const json_t *block);

/* Insert block, stealing the reference (no copy).  The caller must not
 * touch block afterwards. */
int opt_tracker_insert_new(struct opt_tracker *t, json_t *block);

/* Insert the block whose canonical JSON is text[0..len) (taken: malloc'd),
 * with ID id and header type `type` (under 16 bytes): the caller vouches
 * for the text (canonical, that ID and type).  It is kept as text and
 * parsed only if the block is read or changed in the tracker; a commit
 * stores the text as it is.  OPT_EINVAL for a bad ID. */
int opt_tracker_insert_text(struct opt_tracker *t, const char *id, const char *type, char *text, size_t len);

/* Apply op to block id (copy-on-write over the source).  OPT_ENOTFOUND
 * when there is no such block, OPT_EINVAL for a bad op (nothing changed). */
int opt_tracker_update(struct opt_tracker *t, const char *id, const json_t *op);

/* Delete block id.  OPT_ENOTFOUND when there is no such block. */
int opt_tracker_delete(struct opt_tracker *t, const char *id);

/* Apply a whole transform: deletes, then inserts, then updates.  All or
 * nothing: on error the tracker is as it was before the call. */
int opt_tracker_apply(struct opt_tracker *t, const json_t *transform);

/* Drop every change (rollback). */
void opt_tracker_reset(struct opt_tracker *t);

/* 1 if nothing was changed. */
int opt_tracker_empty(const struct opt_tracker *t);

/* Iterate over the changed blocks: for each, cb(id, block, arg) where block
 * is the new content (borrowed) or NULL for a deletion.  Stops early and
 * returns cb's value when it is non-zero.  Order: by ID. */
int opt_tracker_foreach(struct opt_tracker *t,
			int (*cb)(const char *id, const json_t *block, void *arg),
			void *arg);

/* The same, with blocks inserted as text handed out as such: cb(id, NULL,
 * text, arg) for those (never parsed), cb(id, block, NULL, arg) for the
 * others (block NULL for a deletion). */
struct opt_block_text {
	const char *text;
	size_t len;
	const char *type;
};
int opt_tracker_foreach_text(struct opt_tracker *t,
			     int (*cb)(const char *id, const json_t *block, const struct opt_block_text *text,
				       void *arg),
			     void *arg);

/* Number of changed (inserted, updated or deleted) blocks. */
size_t opt_tracker_count(const struct opt_tracker *t);

/* 1 if block id was changed (inserted, updated or deleted). */
int opt_tracker_changed(const struct opt_tracker *t, const char *id);

/* A savepoint: opt_tracker_mark returns a token; opt_tracker_rollback
 * undoes every change made after it (nested marks allowed, rolled back
 * innermost first); opt_tracker_release forgets the mark, keeping the
 * changes. */
int opt_tracker_mark(struct opt_tracker *t, size_t *token);
void opt_tracker_rollback(struct opt_tracker *t, size_t token);
void opt_tracker_release(struct opt_tracker *t, size_t token);

/* A source that reads through the tracker (what data structures stacked on
 * a tracker see).  The result is valid while t is. */
struct opt_source opt_tracker_source(struct opt_tracker *t);

/* An in-memory source over a JSON object {id: block} (borrowed), for tests
 * and tools. */
struct opt_source opt_source_object(json_t *blocks);

#endif
