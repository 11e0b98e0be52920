/* verify.h - check a collection's history against its transaction log.
 *
 * The log (log.h) is the collection's own account of every transaction:
 * one hash-chained entry per revision, naming the SHA-256 of every block
 * the transaction wrote.  opt_verify_collection holds the store to that
 * account.  For a collection at revision H (its ref, or a given commit) it
 * checks, reading each revision once:
 *
 *  - the history: H commits, each with the revision before as its parent,
 *    revision 1 without a parent;
 *  - the shape of each revision (opt_store_check_shape): nothing in its
 *    commit or tree that our writer does not make, checked where it
 *    differs from the revision before;
 *  - the log's hash chain (opt_log_verify): revisions consecutive from 1,
 *    "hash", "prior" and "actionsHash" recomputed;
 *  - for the entry of revision r: r <= H; the Opt-Trx trailer of commit r
 *    equals the entry's "trx"; the log stored at revision r ends with this
 *    entry (same hash, same actions); every block of "blocks" is stored at
 *    revision r with that hash (null: absent at revision r; the header is
 *    hashed without its log links, as opt_txn_block_hash does);
 *  - the log's last entry is revision H (a log truncated by hand breaks);
 *  - at revision H, every block is a block of the log or holds what the
 *    last entry naming it recorded, and every block the log leaves in
 *    place is there;
 *  - a tree passes opt_btree_check and holds as many entries as its header
 *    counts; a diary's chain too.
 *
 * Memory: the commit IDs of the revisions (40 bytes each), the recorded
 * hashes of the blocks alive at the head, and one log block at a time; a
 * log of any length is read as a stream.
 *
 * What it cannot see: a block changed at a revision r that did not write
 * it, and written again before H (that revision's copy is not compared
 * with anything).  It does check every entry's Ed25519 signature against
 * the key it names and, in a restricted store (identity.h), that its author
 * is a key the store trusts.
 */
#ifndef OPT_VERIFY_H
#define OPT_VERIFY_H

#include "store.h"

struct opt_verify_result {
	long rev;      /* the revision verified (the head), 0 when unknown */
	long entries;  /* log entries that checked out */
};

/* Called after each entry that checked out: done entries of total. */
typedef void (*opt_verify_progress_fn)(long done, long total, void *arg);

/* Verify collection name at commit (40 hex; NULL: the collection's ref).
 * 0 when everything checks out; OPT_EINTEGRITY at the first break, with a
 * message that names the revision and what is wrong ("log entry rev 7:
 * block 'x' does not match the hash the entry recorded", "revision 7:
 * ...") but not the collection; OPT_ENOTFOUND when there is no such
 * collection; OPT_EINVAL for an invalid name or commit ID; OPT_EIO when
 * the store cannot be read.  *res (may be NULL) is filled in either way.
 * progress may be NULL. */
int opt_verify_collection(struct opt_store *s, const char *name, const char *commit,
			  opt_verify_progress_fn progress, void *arg, struct opt_verify_result *res);

/* The same for a collection whose earlier commit base (40 hex; NULL: none,
 * verify all) passed before and is an ancestor of commit: only what is
 * new is checked.  The commits from the head must reach base (else the
 * history was rewritten), each new one of the shape our writer makes
 * (where its tree differs from the one before); the log, read back to base's last entry (which
 * must be there unchanged, as must the older entries in log blocks that
 * changed), continues the chain; each new entry passes the checks above;
 * every block that changed since base (a diff of the two trees of blocks)
 * was written by a new entry, with the hash it recorded, or is a block of
 * the log, or the header with only its log links moved; a tree passes
 * opt_btree_check since the base with the header's count; a diary's chain is
 * checked in full.  A block dropped that no new entry deleted sends it
 * to the full verification.  Costs what changed, not the collection's
 * size. */
int opt_verify_collection_since(struct opt_store *s, const char *name, const char *commit, const char *base,
				opt_verify_progress_fn progress, void *arg, struct opt_verify_result *res);

#endif
