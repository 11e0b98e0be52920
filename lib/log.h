/* log.h - the transaction log of a collection: a hash-chained chain.
 *
 * The log is a chain (chain.h) of "LGD" data blocks whose header is the
 * collection header block.  It holds one entry per transaction:
 *
 *	{"rev": N,               collection revision: 1, 2, 3, ... consecutive
 *	 "trx": ID,              the transaction ID
 *	 "time": MS,             milliseconds since the epoch (metadata only)
 *	 "actions": [...],       the logical actions (may be pruned later)
 *	 "actionsHash": HEX,     SHA-256 of the canonical JSON of "actions"
 *	 "blocks": {ID: HEX or null, ...},
 *	                         the blocks the transaction wrote (the SHA-256 of
 *	                         each block's canonical JSON, null when deleted),
 *	                         never the log's own blocks nor the header
 *	 "collections": [...],   optional: every collection of a multi-collection
 *	                         transaction
 *	 "prior": HEX,           the hash of the previous entry, "" for rev 1
 *	 "hash": HEX}            SHA-256 of the canonical JSON of the entry
 *	                         without "hash", "sig" and "actions"
 *
 * Other members (e.g. "author", "status", "checkpoint") may be present; the
 * hash covers every member but "hash", "sig" and "actions", so a signature
 * over the hash covers them, and dropping "actions" after a checkpoint
 * keeps the chain intact ("actionsHash" stays).
 *
 * Iterate over the entries with a log iterator (opt_log_iter_open).
 */
#ifndef OPT_LOG_H
#define OPT_LOG_H

#include "block.h"

#include <jansson.h>

#define OPT_LOG_DATA_TYPE "LGD"

/* An entry with more actions than this gets a log block of its own. */
#define OPT_LOG_BIG_ACTIONS 64

/* The levels of a log block above an entry's "actions" array (the block,
 * its "entries", the entry): an action is OPT_LOG_ACTIONS_ABOVE + 2 levels
 * down, its members one more.  Appending refuses an entry whose block
 * would nest deeper than OPT_JSON_MAX_DEPTH (json.h), which could not be
 * read back. */
#define OPT_LOG_ACTIONS_ABOVE 3

/* The header fields the log itself keeps up to date: the chain links and
 * the last entry (logRev, logHash, logBig).  Hashes of the header leave
 * them out. */

/* Append an entry to the log of header_id (an existing block; the log's
 * chain is created on the first append).  fields (borrowed; deep copied)
 * is an object holding at least "trx" (an ID), "actions" (an array) and
 * "blocks" (an object {ID: hash or null}), optionally "collections" (an
 * array of strings), "time" (an integer), any other members, and "rev":
 * when given it must be the revision the entry gets, else OPT_ECONFLICT
 * (the log moved on).  The log fills "rev" (the previous entry's + 1, or
 * 1), "time" (now, when absent), "actionsHash", "prior" and "hash";
 * OPT_EINVAL when fields holds one of the last three or is malformed,
 * OPT_EINTEGRITY when the last entry is malformed.  *out (out may be NULL)
 * gets a new reference to the entry as stored.  All or nothing. */
int opt_log_append(struct opt_tracker *t, const char *header_id, const json_t *fields, json_t **out);

/* The same, and when sign is not NULL the entry gets "sig": sign(ctx,
 * hash) of its hash (fields should then carry "author", the signer's
 * public key, which the hash covers). */
int opt_log_append_signed(struct opt_tracker *t, const char *header_id, const json_t *fields,
			  int (*sign)(void *ctx, const char *hash, char sig[129]), void *ctx, json_t **out);

/* The same (signed when sign is not NULL), with the entry's actions given
 * as text: at->text is the canonical JSON array of at->n actions (the
 * caller vouches for it, and that it nests at most OPT_JSON_MAX_DEPTH -
 * OPT_LOG_ACTIONS_ABOVE levels), hashed and stored as it is, never parsed.
 * fields' "actions" is ignored. */
struct opt_log_actions_text {
	const char *text;
	size_t len, n;
};
int opt_log_append_text(struct opt_tracker *t, const char *header_id, const json_t *fields,
			const struct opt_log_actions_text *at,
			int (*sign)(void *ctx, const char *hash, char sig[129]), void *ctx);

/* The newest entry: 0 and *entry (a new reference to a copy), OPT_ENOTFOUND
 * when the log is empty or header_id has no log yet (or does not exist). */
int opt_log_last(const struct opt_source *src, const char *header_id, json_t **entry);

/* The revision of the newest entry into *rev, 0 for an empty or absent
 * log (the header block must exist: OPT_ENOTFOUND otherwise). */
int opt_log_rev(const struct opt_source *src, const char *header_id, long *rev);

/* An iterator over the entries of a log, oldest or newest first.  It
 * copies the source (the struct), which must stay valid while it is used.
 * Entries are borrowed, valid until the next call. */
struct opt_log_iter;

/* Prepare to iterate over the log of header_id: 0 and *out, or 0 and
 * *out NULL when the header holds no log (nothing to iterate);
 * OPT_ENOTFOUND (with a message) when there is no such header block. */
int opt_log_iter_open(struct opt_log_iter **out, const struct opt_source *src, const char *header_id);

/* The revision of the newest entry, -1 when it cannot be told (a
 * malformed last entry: the iterator does not verify). */
long opt_log_iter_last(const struct opt_log_iter *it);

/* Start the walk (forward: oldest first) for a range that begins at
 * revision start: a range near the tail of a long log costs what the
 * range costs, not the whole log.  When the end of the log the walk
 * starts from (the oldest entry going forward) is the nearer to start,
 * the walk starts there, and the caller skips the entries before its
 * range; else it starts at the entry of revision start, found from the
 * nearer end (or, when it is not there, at the end of the log). */
int opt_log_iter_start(struct opt_log_iter *it, int forward, long start);

/* The next entry: 1 and *entry (borrowed), 0 at the end, or a negative
 * code (the iterator is at its end afterwards). */
int opt_log_iter_next(struct opt_log_iter *it, const json_t **entry);

/* Free the iterator (accepts NULL). */
void opt_log_iter_free(struct opt_log_iter *it);

/* The hash of an entry (an object): the SHA-256 (hex) of the canonical JSON
 * of entry without its members "hash", "sig" and "actions".  OPT_EINVAL
 * when entry is not an object. */
int opt_log_entry_hash(const json_t *entry, char out[65]);

/* Read the stored bytes of block id: 0 and *out (the caller releases it
 * with opt_bytes_release). */
typedef int (*opt_log_bytes_fn)(void *ctx, const char *id, struct opt_bytes *out);

/* How opt_log_verify reads the log and what it checks.  Set it up with
 * OPT_LOG_VERIFY_OPTS_INIT (every member zero: the whole log, parsed, no
 * callback), then set what you need:
 *
 *   struct opt_log_verify_opts o = OPT_LOG_VERIFY_OPTS_INIT;
 *   o.cb = check_more;
 *   o.arg = ctx;
 *   rc = opt_log_verify(src, header_id, &o, &entries);
 */
struct opt_log_verify_opts {
	/* Called with every entry that checks out (borrowed, valid during
	 * the call) to check more (block hashes, signatures); a non-zero
	 * return stops verification and is returned.  NULL: not called. */
	int (*cb)(const json_t *entry, void *arg);
	void *arg;
	/* Read the log's blocks as stored text through bytes(bctx, ...):
	 * each must be canonical JSON (else OPT_EINTEGRITY, "log block 'ID'
	 * is not stored as canonical JSON"), the actions of each entry are
	 * hashed as they stand in it, and cb gets the entries without their
	 * "actions" (everything else as stored).  Costs a pass over the text
	 * instead of building every action as JSON.  NULL: the blocks are
	 * read through src and parsed. */
	opt_log_bytes_fn bytes;
	void *bctx;
	/* Gets the IDs of the log's blocks read (may be NULL).  Of the whole
	 * log, only when read through bytes: from its head to its tail (the
	 * walk checks the links both ways and that it ends at the tail). */
	json_t *visited;
	/* Since a base (NULL: verify the whole log).  Verify only the entries
	 * after revision `after` (0: all), given that the log at base (a
	 * state that passed opt_log_verify) ends with entry `after`, which
	 * hashes to after_hash, and that only the blocks in recheck (a set
	 * {block ID: anything}: the blocks that differ from base) changed
	 * since.  The log is read from its tail back, block by block, for as
	 * long as the blocks changed: the new entries, then entry `after`
	 * (which must hash to after_hash: else the log was rewritten) and the
	 * older entries of changed blocks, each of which must hash to what
	 * the next names as "prior".  The first unchanged block ends the walk
	 * without being read: it and all before it are base's, and the last
	 * block read must have followed it at base too.  The new entries are
	 * then checked oldest first as the whole log is, the first continuing
	 * from after_hash, and cb is called with each; the header's note must
	 * name the last.  *entries counts the new entries that checked out. */
	const struct opt_source *base;
	long after;
	const char *after_hash;
	const json_t *recheck;
};

#define OPT_LOG_VERIFY_OPTS_INIT { 0 }

/* Verify the log of header_id, oldest entry first, holding one log block at
 * a time: revisions consecutive from 1, "hash" recomputed, "prior" equal to
 * the previous entry's hash ("" for rev 1), "actionsHash" recomputed when
 * "actions" is present, "trx" a string and "blocks" an object.  The first
 * break gives OPT_EINTEGRITY with a message naming the revision and what is
 * wrong ("log entry rev 7: hash mismatch"); a broken chain of blocks is
 * OPT_EINTEGRITY too.  opts (NULL: OPT_LOG_VERIFY_OPTS_INIT) adds a check
 * of each entry, says how the blocks are read and whether only what is new
 * since a base is verified.  *entries (may be NULL) gets the number of
 * entries that checked out (and that opts->cb accepted).  A header without
 * a log verifies as an empty log; OPT_ENOTFOUND when there is no such
 * header block. */
int opt_log_verify(const struct opt_source *src, const char *header_id, const struct opt_log_verify_opts *opts,
		   long *entries);

#endif
