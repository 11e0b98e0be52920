/* store.h - the content-addressed store: a bare git repository.
 *
 * Layout: each collection NAME has one ref (the collection's ref; the ref
 * namespace is in docs/protocol.md), pointing at a commit; one commit = one revision = one transaction.  The
 * commit's tree is the collection's whole state: blocks/<c1>/<c2>/<id>
 * (c1, c2 = the first two characters of the block ID), each a blob holding
 * the block's canonical JSON.  The commit message carries a summary and the
 * trailers Opt-Rev (the revision, 1, 2, ...) and Opt-Trx (transaction ID).
 *
 * New objects of a transaction are written as one pack (see pack.h); the
 * ref moves by compare-and-swap, so of two writers that read the same
 * revision exactly one wins; the other gets OPT_ECONFLICT.  With fsync on
 * (the default; OPT_FSYNC=0 turns it off for tests), a commit is durable
 * when opt_store_commit returns.
 */
#ifndef OPT_STORE_H
#define OPT_STORE_H

#include <jansson.h>
#include <stdint.h>

#include "block.h"
#include "util.h"

#define OPT_STORE_DIRNAME ".opt"
#define OPT_NAME_MAX 200

struct opt_store;
struct opt_snap;

/* Create a store at dir (made if absent).  An existing store is opened and
 * *created (may be NULL) is 0.  A non-empty directory that is not a store,
 * or a repository of another object format, is refused with OPT_EINVAL. */
int opt_store_create(struct opt_store **out, const char *dir, int *created);

/* Open the store at dir: OPT_ENOTFOUND when there is nothing there,
 * OPT_EINVAL when dir is not an optimystic store (or a git repository we
 * must not write, such as a SHA-256 one), OPT_EIO when unreadable. */
int opt_store_open(struct opt_store **out, const char *dir);

/* Find the nearest OPT_STORE_DIRNAME directory from start upward: *path
 * (malloc'd) or OPT_ENOTFOUND. */
int opt_store_discover(char **path, const char *start);

void opt_store_free(struct opt_store *s);

/* The store's directory (borrowed). */
const char *opt_store_path(const struct opt_store *s);

/* Collection names.  A name is 1..OPT_NAME_MAX characters: components
 * separated by single '/', each made of A-Z a-z 0-9 '.' '_' '-', not
 * beginning with '.' or '-' and not ending with '.' or ".lock" (so no
 * "..", no '/' at either end).  Every such name makes a valid git ref
 * name for the collection's ref.  One rule, checked by every function that
 * takes a name; opt_store_name_check says what is wrong. */

/* 0 if name is a valid collection name, else OPT_EINVAL with the message
 * "invalid collection name 'NAME': WHY" (NAME escaped by opt_esc). */
int opt_store_name_check(const char *name);

/* 1 if name is a valid collection name, 0 if not (no message). */
int opt_store_name_valid(const char *name);

/* Names clash when one is the other followed by '/' and more ('p/q' and
 * 'p/q/r'): git cannot hold a ref and a directory of refs of the same
 * name, so of two such collections only one can exist in a store.
 * 1 when a collection of the store clashes with the (valid) name, its
 * name in other; 0 when none does; <0 on failure. */
int opt_store_name_clash(struct opt_store *s, const char *name, char other[OPT_NAME_MAX + 1]);

/* 0 when collection name could be created beside the store's collections,
 * else OPT_EINVAL "collection 'NAME' cannot be created: collection 'OTHER'
 * exists" (or another failure). */
int opt_store_check_new(struct opt_store *s, const char *name);

/* The deterministic ID of a collection's header block. */
void opt_collection_header_id(const char *name, char out[OPT_ID_LEN + 1]);
/* The header block's ID of snap's collection (computed once per snapshot;
 * valid while snap is). */
const char *opt_snap_header_id(struct opt_snap *snap);

/* The names of all collections, sorted: *out is a new JSON array. */
int opt_store_list(struct opt_store *s, json_t **out);

/* Object statistics: *out is a new JSON object {packs, objects, bytes, ...}. */
int opt_store_stats(struct opt_store *s, json_t **out);

/* Open collection name at revision rev (rev <= 0: the latest), as readers
 * see it: a pending revision of a multi-collection transaction (see
 * docs/protocol.md) whose decision is not "committed" on its primary
 * collection is read as its parent.  OPT_ENOTFOUND when the collection or
 * the revision does not exist. */
int opt_snap_open(struct opt_snap **out, struct opt_store *s, const char *name, long rev);

/* Open several collections as one consistent view (docs/protocol.md,
 * "Readers of several collections"): read every head, resolve pending
 * revisions, read the heads again, and start over if any moved.
 * snaps[i] gets collection names[i] (NULL when it does not exist). */
int opt_snap_open_many(struct opt_snap **snaps, struct opt_store *s, const char *const *names, size_t n);

/* The head revision itself, pending or not (for writers). */
int opt_snap_head(struct opt_snap **out, struct opt_store *s, const char *name);

/* The decision on transaction trx in the history of collection primary,
 * looking back to commits made at or after since (seconds): 1 committed,
 * -1 aborted, 0 none yet. */
int opt_store_decision(struct opt_store *s, const char *primary, const char *trx, int64_t since, int *out);

/* The same, walking the primary's history back to commit stop (40 hex: the
 * primary's head before the transaction's pends, recorded in its pending
 * revisions as Opt-Primary-Base; NULL or "" for the whole history). */
int opt_store_decision_at(struct opt_store *s, const char *primary, const char *trx, const char *stop, int *out);

/* For a snapshot whose revision is pending (Opt-Status: pending): 1 if its
 * transaction is committed, -1 aborted, 0 undecided; 1 for any other. */
int opt_snap_decided(struct opt_snap *snap, int *out);
void opt_snap_free(struct opt_snap *snap);

/* Open collection name at a given commit (40 hex, as opt_snap_commit
 * gives): for walking history without re-reading it from the head. */
int opt_snap_open_commit(struct opt_snap **out, struct opt_store *s, const char *name, const char *commit);

/* The previous revision of snap: OPT_ENOTFOUND at revision 1. */
int opt_snap_parent(struct opt_snap **out, struct opt_snap *snap);

const char *opt_snap_name(const struct opt_snap *snap);
long opt_snap_rev(const struct opt_snap *snap);
/* Transaction ID and summary of the revision (borrowed). */
const char *opt_snap_trx(const struct opt_snap *snap);
const char *opt_snap_summary(const struct opt_snap *snap);
/* Value of trailer key ("Opt-Status", ...) or NULL (borrowed until free). */
const char *opt_snap_trailer(const struct opt_snap *snap, const char *key);
/* Commit time, seconds since the epoch. */
int64_t opt_snap_time(const struct opt_snap *snap);
/* The commit ID (40 hex, borrowed). */
const char *opt_snap_commit(const struct opt_snap *snap);

/* A source reading the blocks of snap (valid while snap is).  Blocks are
 * parsed once and kept in a small cache. */
struct opt_source opt_snap_source(struct opt_snap *snap);

/* Keep up to `blocks` parsed blocks of snap in memory (default 64; inner
 * tree nodes and headers are always kept).  Point lookups want many;
 * streaming reads want few. */
void opt_snap_cache(struct opt_snap *snap, size_t blocks);

/* Keep the stored bytes of tree leaves read through snap's source, up to
 * bytes in all (0, the default: none), with what readers derive from them
 * (a leaf's index): for many lookups, which revisit leaves at random. */
void opt_snap_cache_bytes(struct opt_snap *snap, size_t bytes);

/* The stored bytes (canonical JSON) of block id: *buf malloc'd.
 * OPT_ENOTFOUND when absent. */
int opt_snap_block_raw(struct opt_snap *snap, const char *id, char **buf, size_t *len);

/* The same, read once (our pack reader first): *out holds them until
 * opt_bytes_release. */
int opt_snap_block_bytes(struct opt_snap *snap, const char *id, struct opt_bytes *out);

/* The git blob ID (40 hex) of block id at snap, or OPT_ENOTFOUND. */
int opt_snap_block_oid(struct opt_snap *snap, const char *id, char out[41]);

/* Call cb for every block ID of snap in order; stops when cb returns
 * non-zero and returns that value. */
int opt_snap_foreach(struct opt_snap *snap, int (*cb)(const char *id, void *arg), void *arg);

/* Call cb for every block that differs between snapshots a and b (of any
 * collections) in ID order: change 'A' (only in b), 'D' (only in a) or
 * 'M' (in both, other bytes).  Subtrees with the same git ID are skipped,
 * so the cost follows the change, not the size.  Stops when cb returns
 * non-zero and returns that value. */
int opt_snap_diff(struct opt_snap *a, struct opt_snap *b, int (*cb)(const char *id, char change, void *arg),
		  void *arg);

/* Count the blocks of snap. */
int opt_snap_count(struct opt_snap *snap, size_t *n);

/* What a commit records besides the blocks. */
struct opt_commit_info {
	const char *trx;       /* transaction ID (required) */
	const char *summary;   /* first line of the commit message */
	const char *trailers;  /* more "Key: value\n" lines, or NULL */
	struct opt_canon *canon; /* optional: blocks already serialized
				  (not the header or log blocks), to avoid
				  doing it twice */
};

/* Canonical texts of blocks, in the order opt_tracker_foreach gives them
 * (IDs ascending); a commit takes a block's text from here when the next
 * unused entry names it, else serializes the block itself. */
struct opt_canon_ent {
	char id[OPT_ID_MAX + 1];
	char *text;            /* malloc'd, or borrowed */
	size_t len;
	int borrowed;
};

struct opt_canon {
	struct opt_canon_ent *v;
	size_t n, cap, next;
};

/* Append (id, text) to c, taking text (malloc'd); OPT_EIO. */
int opt_canon_add(struct opt_canon *c, const char *id, char *text, size_t len);
/* The same with text borrowed (it must outlive c's use; never freed). */
int opt_canon_add_borrowed(struct opt_canon *c, const char *id, const char *text, size_t len);
void opt_canon_clear(struct opt_canon *c);

/* Commit the changes of tracker t on top of base (NULL: create the
 * collection; it must not exist).  On success *rev (may be NULL) gets the
 * new revision.  OPT_ECONFLICT when the collection moved on (or came into
 * existence) since base was read; OPT_EBUSY when its ref is locked by
 * another writer right now; OPT_EIO on write failures (nothing committed). */
int opt_store_commit(struct opt_store *s, const char *name, struct opt_snap *base,
		     struct opt_tracker *t, const struct opt_commit_info *info, long *rev);

/* Group commit.  Between opt_store_group_begin and opt_store_group_flush,
 * opt_store_commit on collection name writes nothing: it keeps the new
 * objects in memory (readable by later snapshots, which see the pending
 * revision as the latest) and returns the provisional revision.  The
 * flush writes all of them as one pack, synced once, and moves the ref
 * once, by compare-and-swap from the revision read at the first commit.
 * It returns the number of commits it made durable (0 when none was
 * pending).  On any failure (OPT_ECONFLICT, OPT_EBUSY: replay them;
 * OPT_EIO) none of them was committed and the pending state is dropped:
 * a flush after it has nothing to write and returns 0.  Either way the
 * group stays open, empty.  Only one collection per group. */
int opt_store_group_begin(struct opt_store *s, const char *name);
int opt_store_group_flush(struct opt_store *s);
/* Drop what is pending and leave group mode. */
void opt_store_group_end(struct opt_store *s);

/* The quarantine of incoming objects.  Between opt_store_quarantine_begin
 * and opt_store_quarantine_end, packs written through the store's object
 * database (a fetch's) go to a directory of their own,
 * objects/tmp_objdir-opt-<pid>-XXXXXX (git's own prefix for such
 * directories), whose objects every read of the store sees as well: they
 * can be verified before the store takes them.  _end(s, 1) moves its packs
 * into the store (each pack before its index); _end(s, 0) drops them.
 * Either way the directory goes.  OPT_EIO when it cannot be made or
 * moved. */
int opt_store_quarantine_begin(struct opt_store *s);
int opt_store_quarantine_end(struct opt_store *s, int keep);
/* The quarantine's objects directory (borrowed), NULL when none is open. */
const char *opt_store_quarantine_dir(const struct opt_store *s);
/* Read the objects of the quarantine dir (another handle's, which owns
 * it) as well: _end(s, 0) then only stops reading them. */
int opt_store_quarantine_use(struct opt_store *s, const char *dir);

/* Check that commit (40 hex) has the shape this program gives every
 * revision of a collection (the layout above, nothing else: no entry
 * outside blocks/, no symbolic link or submodule, every name a fan-out
 * directory or a block ID in its own, the modes and the order git
 * writes, a commit of tree, parent, author and committer lines that git
 * fsck --strict accepts), where it differs from parent (40 hex: the
 * commit of the revision before, which passed this check or was
 * verified before; NULL: the first revision, checked in full).  Only the
 * trees along changed paths are read, and a changed block's object is
 * checked to be a blob.  0, or OPT_EINTEGRITY with a message ("tree
 * entry 'blocks/..': ...", "its commit has 2 parents, ...") that does
 * not name the revision. */
int opt_store_check_shape(struct opt_store *s, const char *commit, const char *parent);

/* Roll every pack into one. */
int opt_store_repack(struct opt_store *s);

/* What opt_store_gc did. */
struct opt_gc_result {
	size_t pruned;       /* unreachable objects removed */
	size_t unreachable;  /* unreachable objects kept, younger than the
				grace period */
	size_t temporary;    /* files and quarantines that killed processes
				left, removed */
};

/* The grace period of gc by default (seconds): two weeks, git's. */
#define OPT_GC_PRUNE_DEFAULT (14LL * 24 * 3600)

/* opt-block gc: every object that a ref reaches (the collections, the
 * tracking refs of remotes, sync's own) into one pack, the unreachable
 * ones written less than prune_age seconds ago (0: none; <0: all of
 * them, whatever their age) into a pack that keeps each one's time, the
 * other unreachable ones removed; temporary files of killed writers (an
 * hour old, or named for a process that is gone) and quarantines of
 * killed fetches removed.  A writer writes its objects before it moves a
 * ref: the grace period keeps them.  Waits up to $OPT_BUSY_TIMEOUT ms
 * (30 s) for a consolidation of another process: OPT_EBUSY.  OPT_EIO when
 * the store cannot be written (read-only), OPT_EINTEGRITY when an object
 * a ref reaches is missing; nothing is removed then. */
int opt_store_gc(struct opt_store *s, long long prune_age, struct opt_gc_result *res);

#endif
