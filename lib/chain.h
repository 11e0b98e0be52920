/* chain.h - a chain: a doubly linked list of data blocks of entries.
 *
 * The chain hangs off a header block, any existing block (the "merged
 * header" pattern: a collection header carries the chain), which holds
 * "headId" (the oldest data block) and "tailId" (the newest).  A data block
 * is
 *
 *	{"header": {"id", "type", "collection"}, "entries": [...],
 *	 "priorId": ID (absent on the head), "nextId": ID (absent on the tail)}
 *
 * with at most OPT_CHAIN_ENTRIES entries.  A fresh chain has exactly one
 * empty data block (headId == tailId); the last block is never deleted, so
 * an empty chain is one empty block.  Only the head and the tail may hold
 * fewer than OPT_CHAIN_ENTRIES entries.  A link field that is null counts
 * as absent.
 *
 * Changes go through a tracker (struct opt_tracker); each changing call is
 * all or nothing (on error the tracker is as it was).  Reads go through a
 * source (struct opt_source) and hold at most one data block at a time, so
 * a chain of any length is iterated in bounded memory.  Readers check the
 * links as they go (a block's priorId must name the block before it, and
 * the other way round) and report a broken or cyclic chain, or a missing
 * data block, as OPT_EINTEGRITY.
 *
 * Entries handed out through `json_t **out` are copies the caller owns;
 * entries handed out by the iterator are borrowed.
 */
#ifndef OPT_CHAIN_H
#define OPT_CHAIN_H

#include "block.h"
#include "util.h"

#include <jansson.h>
#include <stddef.h>

#define OPT_CHAIN_ENTRIES 32

/* A position in a chain: entry `index` (0-based) of data block `block_id`. */
struct opt_chain_pos {
	char block_id[OPT_ID_MAX + 1];
	long index;
};

/* Make block header_id (which must exist) the header of a new, empty
 * chain: insert one data block {"header": {fresh id, data_type,
 * collection}, "entries": []} and set the header's headId and tailId to
 * it.  collection NULL means the header's own collection.  OPT_ENOTFOUND
 * when there is no such header block, OPT_EINVAL when it already holds a
 * chain or data_type is empty. */
int opt_chain_create(struct opt_tracker *t, const char *header_id,
		     const char *collection, const char *data_type);

/* 1 if block header_id holds a chain (has a headId or a tailId), 0 if it
 * does not, OPT_ENOTFOUND (with a message) when there is no such block. */
int opt_chain_has(const struct opt_source *src, const char *header_id);

/* Append the elements of entries (a JSON array, borrowed; the elements are
 * deep copied) at the tail: fill the tail block up to OPT_CHAIN_ENTRIES,
 * then create new data blocks (of the tail's type and collection) linked
 * both ways, and move tailId.  An empty array changes nothing. */
int opt_chain_add(struct opt_tracker *t, const char *header_id, const json_t *entries);

/* The same, but the entries start a new block even when the tail has room
 * (unless the tail is empty): keeps big entries from being rewritten with
 * every later addition. */
int opt_chain_add_new_block(struct opt_tracker *t, const char *header_id, const json_t *entries);
/* The same, and then an empty block after them (the new tail): later
 * appends go there and never read or rewrite the blocks of these entries
 * (a big log entry stays as it was written). */
int opt_chain_add_sealed(struct opt_tracker *t, const char *header_id, const json_t *entries);

/* Remove up to n entries from the tail.  *out gets a new array of the
 * removed entries in chain order (oldest first: popping 2 from [a,b,c]
 * gives [b,c]).  A tail block left empty is deleted unless it is the last
 * block.  n larger than the chain empties it; n == 0 gives []. */
int opt_chain_pop(struct opt_tracker *t, const char *header_id, size_t n, json_t **out);

/* Remove up to n entries from the head: the mirror of opt_chain_pop.
 * *out gets them oldest first (dequeueing 2 from [a,b,c] gives [a,b]). */
int opt_chain_dequeue(struct opt_tracker *t, const char *header_id, size_t n, json_t **out);

/* The newest entry: 0 and *entry (a new reference to a copy),
 * OPT_ENOTFOUND when the chain is empty or header_id holds no chain. */
int opt_chain_last(const struct opt_source *src, const char *header_id, json_t **entry);

/* The oldest entry, like opt_chain_last. */
int opt_chain_first(const struct opt_source *src, const char *header_id, json_t **entry);

/* The number of entries (reads every data block, one at a time). */
int opt_chain_count(const struct opt_source *src, const char *header_id, size_t *n);

/* An iterator over the entries, forward (oldest first, from the head) or
 * backward (newest first, from the tail); empty blocks are skipped.  It
 * copies the source (the struct, not what it points to), which must stay
 * valid while the iterator is in use.  Reading through a tracker's source
 * while changing the same chain through the tracker gives undefined
 * results. */
struct opt_chain_iter;

/* Open an iterator over the chain of header_id.  forward: nonzero for
 * oldest first.  OPT_ENOTFOUND when there is no such block or it holds no
 * chain. */
int opt_chain_iter_open(struct opt_chain_iter **out, const struct opt_source *src,
			const char *header_id, int forward);

/* Open an iterator that starts at pos (inclusive) and goes forward or
 * backward from there.  OPT_ENOTFOUND when pos names no block, OPT_EINVAL
 * when pos->index is not an entry of that block. */
int opt_chain_iter_open_at(struct opt_chain_iter **out, const struct opt_source *src,
			   const struct opt_chain_pos *pos, int forward);

/* The next entry: 1 and *entry (borrowed, valid until the next call or
 * opt_chain_iter_free), 0 at the end, or a negative code (the iterator is
 * at its end afterwards). */
int opt_chain_iter_next(struct opt_chain_iter *it, const json_t **entry);

/* The position of the entry the last opt_chain_iter_next returned.
 * OPT_EINVAL when it returned none. */
int opt_chain_iter_pos(const struct opt_chain_iter *it, struct opt_chain_pos *pos);

/* Free the iterator (accepts NULL). */
void opt_chain_iter_free(struct opt_chain_iter *it);

#endif
