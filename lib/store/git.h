/* store/git.h - (library-private) the store's repository, its refs and
 * the trailers of its commits, for the code that talks to libgit2.
 *
 * Included only by the files of lib/store/, lib/txn.c, the files of
 * lib/sync/ and the unit tests (tests/unit/test-refs.c, test-pack.c,
 * test-store.c): no public header
 * includes it and no program may (libgit2's types stay out of the public
 * API).  opt_store__NAME are the store's
 * private accessors (libgit2's name__private convention).
 *
 * lib/store/refs.c is the only code that reads or moves a ref and the only
 * place that spells the ref namespace; everything else builds ref names
 * with the functions below. */
#ifndef OPT_STORE_GIT_H
#define OPT_STORE_GIT_H

#include <git2.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct opt_store;

/* ---- the repository ---- */

/* The store's open repository (borrowed: valid while s is).  The sync
 * family uses it instead of opening the store's directory again. */
git_repository *opt_store__repo(struct opt_store *s);

/* A repository object of its own on the store's directory (*out to
 * git_repository_free): for work that must not disturb the store's own,
 * such as a fetch into a quarantine (see opt_git_repo_reopen_odb) or
 * reading the configuration fresh from disk. */
int opt_store__repo_open(struct opt_store *s, git_repository **out);

/* A bare repository at dir, opened where it is (no search upward), such
 * as a scratch repository: 0, or OPT_EIO "cannot open store: WHY"
 * (libgit2's error stays set, for a caller that words it otherwise). */
int opt_store__open_bare(const char *dir, git_repository **out);

/* ---- the ref namespace ---- */

/* The longest ref name the builders make (a remote's name and a
 * collection's name with their prefixes). */
#define OPT_REF_MAX 512

/* Each builder writes a full ref name into buf (n bytes): 0, or OPT_EINVAL
 * when it does not fit.  A NULL last argument gives the prefix itself,
 * ending in '/' (for globs: add "*"; for iterating: compare prefixes). */

/* The spelling of each is in refs.c only. */

/* A collection's ref: its head. */
int opt_ref_collection(char *buf, size_t n, const char *coll);
/* A tracking ref: what remote REMOTE (or peer) was last seen to hold of
 * COLL (remote NULL: the prefix of all remotes). */
int opt_ref_tracking(char *buf, size_t n, const char *remote, const char *coll);
/* An incoming ref: a head of COLL fetched from REMOTE, not yet verified
 * (remote NULL: the prefix of all). */
int opt_ref_incoming(char *buf, size_t n, const char *remote, const char *coll);
/* A backup ref: a collection's head before a replay. */
int opt_ref_backup(char *buf, size_t n, const char *coll);
/* A push's staging ref for COLL. */
int opt_ref_push(char *buf, size_t n, const char *coll);
/* The quorum protocol's refs (docs/quorum.md, "Ref names"; refs.c spells
 * them).  An acceptor ref: on a peer, the acceptor state of register REG
 * ("collections/C" or "members"). */
int opt_ref_acceptor(char *buf, size_t n, const char *reg);
/* The chosen ref: the newest value of COLL known chosen. */
int opt_ref_chosen(char *buf, size_t n, const char *coll);
/* The proposal ref: the write-ahead record of the last accept for COLL. */
int opt_ref_proposal(char *buf, size_t n, const char *coll);
/* A view: peer PEER's acceptor state of REG as last seen; peer NULL: the
 * prefix of all peers. */
int opt_ref_peer_acceptor(char *buf, size_t n, const char *peer, const char *reg);
/* The staging ref of a push of REG's state to PEER, and of a fetch of it
 * (peer NULL: the prefix). */
int opt_ref_quorum_stage(char *buf, size_t n, const char *peer, const char *reg);
/* A prefix under which no ref ever lives (a stop prefix that stops
 * nowhere). */
const char *opt_ref_nowhere(void);

/* The collection name of a collection's ref (a pointer into ref), or NULL
 * when ref is not a collection's ref. */
const char *opt_ref_collection_name(const char *ref);
/* The part of ref after prefix, or NULL when ref is not under it. */
const char *opt_ref_under(const char *ref, const char *prefix);

/* ---- reading and moving refs ---- */

/* The value of ref name: 1 and *out; 0 when absent; <0 (OPT_EIO) on
 * failure. */
int opt_ref_read(git_repository *repo, const char *name, git_oid *out);

/* Call cb for each ref under prefix (NULL: every ref) with its name and
 * its value (a symbolic ref resolved), in the repository's order, until
 * cb returns non-zero (returned).  0, or OPT_EIO "what: WHY" when the refs
 * cannot be listed or one cannot be resolved. */
typedef int (*opt_ref_fn)(const char *name, const git_oid *id, void *arg);
int opt_ref_foreach(git_repository *repo, const char *prefix, opt_ref_fn cb, void *arg, const char *what);

/* An expected value that matches whatever the ref holds, or its absence. */
extern const git_oid opt_ref_any_oid;
#define OPT_REF_ANY (&opt_ref_any_oid)

/* Compare-and-swap ref name: from old (NULL: it must not exist;
 * OPT_REF_ANY: whatever it is) to new (NULL: delete it), with reflog
 * message log (NULL: "opt").  While another holds the ref's lock it is
 * tried again, with backoff, until deadline (opt_now_ms(); 0 or past:
 * one attempt).
 * 0 once moved.  OPT_ECONFLICT when it holds another value ("ref 'NAME'
 * changed meanwhile"; "ref 'NAME' is gone" for a delete of a ref no longer
 * there).  OPT_EBUSY when it stayed locked: "collection 'C' is busy (its
 * ref is locked: NAME.lock)" for a collection's ref, "ref 'NAME' stayed
 * locked" for another.  OPT_EIO on failure ("cannot
 * update ref: WHY"; libgit2's error stays set for the caller). */
int opt_ref_cas(git_repository *repo, const char *name, const git_oid *old, const git_oid *new, const char *log,
		int64_t deadline);

/* One ref of an atomic update (opt_ref_cas_many). */
struct opt_ref_update {
	const char *name;
	const git_oid *old;  /* as opt_ref_cas; NULL: it must not exist */
	const git_oid *new;  /* NULL: delete it (with old NULL: it stays absent) */
	const char *log;     /* reflog message (NULL: "opt") */
};

/* Move the n refs of u together: all are locked (retried, with backoff,
 * while another holds one, until deadline), each must hold its old value,
 * then all move or none.  0; OPT_ECONFLICT with *failed (may be NULL) the
 * index of the first ref whose value differs ("ref 'NAME' changed
 * meanwhile"); OPT_EBUSY "collections stayed locked by other writers";
 * OPT_EIO. */
int opt_ref_cas_many(git_repository *repo, const struct opt_ref_update *u, size_t n, int64_t deadline,
		     size_t *failed);

/* ---- the trailers of a commit message ---- */

/* The trailers optimystic writes after a commit's summary, one
 * "Key: value" line each, in this order.  A field is written only when
 * set (rev > 0, strings non-NULL, has_expires). */
struct opt_trailers {
	long rev;                 /* Opt-Rev: the revision, 1, 2, ... */
	const char *trx;          /* Opt-Trx: the transaction ID */
	const char *status;       /* Opt-Status: committed, pending, aborted */
	const char *primary;      /* Opt-Primary: a multi-collection transaction's primary */
	const char *collections;  /* Opt-Collections: its collections, comma-separated */
	int has_expires;
	int64_t expires;          /* Opt-Expires: a pending revision's deadline (ms since the epoch) */
	const char *primary_base; /* Opt-Primary-Base: the primary's head before (hex, or "none") */
	char *buf_;               /* (the parser's copy of the strings) */
};

/* Append t's lines to buf (n bytes, holding a string): 0, or OPT_EINVAL
 * when they do not fit. */
int opt_trailers_format(char *buf, size_t n, const struct opt_trailers *t);

/* Parse the trailers of commit message msg into *t (its strings valid
 * until opt_trailers_release; absent fields NULL / 0).  0 or OPT_EIO (out
 * of memory). */
int opt_trailers_parse(struct opt_trailers *t, const char *msg);
void opt_trailers_release(struct opt_trailers *t);

/* The value of trailer key in msg (any key: the first line starting with
 * "key:"), malloc'd, or NULL when absent (or out of memory). */
char *opt_trailer_value(const char *msg, const char *key);

/* ---- decisions ---- */

/* The decision on transaction trx found in collection name's history,
 * walking back from commit at (NULL: the collection's head) to commit stop
 * (hex; NULL or "": no stop) or to the first commit older than since - 60
 * seconds (0: no bound): *out 1 committed, -1 aborted, 0 not found.  From
 * the head, a collection that does not exist and cannot be created (a
 * name clashes with it) counts as aborted. */
int opt_store__decision_from(struct opt_store *s, const char *name, const git_oid *at, const char *trx,
			     const char *stop, int64_t since, int *out);

/* The decision on trx by its primary, looking at the primary's head
 * before a replay moved it (its backup ref) and then at its head.
 * OPT_EINTEGRITY when primary is not a valid collection name. */
int opt_store__decision_of(struct opt_store *s, const char *primary, const char *trx, int64_t since, int *out);

/* ---- packs (lib/store/pack.c, packr.c; pack.h has what needs no libgit2 type) ---- */

struct opt_pack;

int opt_pack_new(struct opt_pack **out);
void opt_pack_free(struct opt_pack *p);

/* Also hand every object added from now on to backend (a mempack that
 * serves reads of objects not yet written); NULL stops it. */
void opt_pack_mirror(struct opt_pack *p, git_odb_backend *backend);

/* Add an object (deduplicated); *oid (may be NULL) gets its ID. */
int opt_pack_add(struct opt_pack *p, git_object_t type, const void *data, size_t len, git_oid *oid);

/* Add an object that is a new version of the object named hint (a block
 * ID, a tree's path): when this pack holds the previous version, the
 * object is stored as a git delta against it (what the two share at the
 * start and end is copied), in chains of at most 10. */
int opt_pack_add_version(struct opt_pack *p, git_object_t type, const void *data, size_t len, const char *hint,
			 git_oid *oid);

/* Number of objects added. */
size_t opt_pack_count(const struct opt_pack *p);

/* Store the pack in objdir/pack (the repository's objects directory) with
 * its version 2 index, written by us (no libgit2 indexer pass): pack
 * first, then index, each through a temporary file, synced unless
 * $OPT_FSYNC is 0.  odb (may be NULL) is refreshed to see it.  Nothing is
 * written when the pack is empty. */
int opt_pack_write(struct opt_pack *p, git_odb *odb, const char *objdir);

/* The name ("pack-<hex>") of the pack once written, else NULL. */
const char *opt_pack_last_name(const struct opt_pack *p);

/* Consolidate the packs of the repository at gitdir geometrically (each
 * remaining pack at least twice the size of all smaller ones together).
 * Takes a lock; returns 0 at once when another process holds it.  force
 * rolls every pack into one. */
int opt_pack_consolidate(git_repository *repo, int force);

/* ---- gc ---- */

/* A set of object IDs. */
struct opt_oidset {
	git_oid *v;
	size_t n, cap;
};
/* 1 when added, 0 when there, OPT_EIO out of memory. */
int opt_oidset_add(struct opt_oidset *s, const git_oid *id);
int opt_oidset_has(const struct opt_oidset *s, const git_oid *id);
void opt_oidset_clear(struct opt_oidset *s);

/* Take the lock of consolidation and gc, waiting up to timeout_ms:
 * OPT_EBUSY when another process holds it that long, OPT_EIO when the
 * lock file cannot be opened for writing (a read-only store). */
int opt_pack_lock(git_repository *repo, long timeout_ms, int *fd);
void opt_pack_unlock(int fd);

/* Temporary files untouched for this long (seconds) were left by a
 * killed writer. */
#define OPT_GC_TEMP_AGE 3600
/* A fetch's quarantine of incoming objects (opt_store_quarantine_begin):
 * objects/OPT_QUARANTINE_DIR_PREFIX<pid>-XXXXXX. */
#define OPT_QUARANTINE_DIR_PREFIX "tmp_objdir-opt-"

struct opt_pack_gc {
	int (*reachable)(const git_oid *id, void *arg);
	void *arg;
	int64_t expire;  /* an unreachable object last written before this
			    (seconds since the epoch) is dropped; INT64_MIN:
			    none is */
	int64_t now;
};

struct opt_pack_gc_result {
	size_t pruned;       /* unreachable objects dropped */
	size_t unreachable;  /* unreachable objects kept (younger) */
	size_t temporary;    /* temporary files and quarantines removed */
};

/* gc, with the lock held: remove what killed writers left, then write
 * every reachable object of the packs (but .keep ones) and loose objects
 * into one pack, the unreachable ones written since expire into a cruft
 * pack (git's format: a .mtimes file keeps each object's time, so that
 * the next gc drops it when its time is up; consolidation leaves it
 * alone), drop the rest, and remove the old packs and loose objects.
 * Nothing is removed before the new packs are written and synced.  With
 * one pack of reachable objects and nothing else, nothing is written. */
int opt_pack_gc(git_repository *repo, const struct opt_pack_gc *g, struct opt_pack_gc_result *res);

/* Number of packs and objects in them. */
int opt_pack_stats(git_repository *repo, size_t *packs, size_t *objects, size_t *bytes);

/* ---- reading packs ----
 *
 * Our own reader of version 2 pack indexes and the packs they index
 * (ours and fetched ones alike): both files mapped, the object found by
 * fan-out and binary search, inflated with libdeflate into a buffer of
 * the size the entry header gives; deltas (OFS_DELTA, and REF_DELTA with
 * the base in any pack read) are applied here, in chains of at most
 * OPT_PACKR_DEPTH.  Everything read from the files is bounds-checked:
 * damaged or hostile data gives an error, never a read outside them.  A
 * pack removed (rolled up) by another process stays readable through its
 * mapping until the reader looks at the directory again (on a miss, and
 * every 4096 reads; only when it changed, or changed in the last two
 * seconds: a change in the clock tick of the last look leaves the
 * directory's time as it was), which also finds new packs.
 * (A file shortened in place under a mapping would fault: git, libgit2
 * and we only ever add packs by rename and drop them by unlink.)  Loose
 * objects are not read: the caller falls back to libgit2. */
struct opt_packr;

#define OPT_PACKR_DEPTH 64

/* A reader of the packs in objdir/pack (none opened yet; a missing
 * directory is fine). */
int opt_packr_new(struct opt_packr **out, const char *objdir);
void opt_packr_free(struct opt_packr *r);

/* Read object id: 0 with *data (malloc'd, len + 1 bytes, NUL-terminated),
 * *len and *type; OPT_ENOTFOUND when no pack holds it; OPT_EINTEGRITY
 * when the pack holding it is damaged (or uses what we do not read). */
int opt_packr_read(struct opt_packr *r, const git_oid *id, unsigned char **data, size_t *len, git_object_t *type);

/* Read the pack stream at pack (len bytes, its idx bytes at idx), not
 * mapped from files: for tests of the reader on damaged data.  Same
 * results as opt_packr_read. */
int opt_packr_read_mem(const unsigned char *idx, size_t idxlen, const unsigned char *pack, size_t packlen,
		       const git_oid *id, unsigned char **data, size_t *len, git_object_t *type);

/* Set the last error to "what: <libgit2's last message>" and return code. */
int opt_git_fail(int code, const char *what);

/* Add the quarantine at qdir (an objects directory: qdir/pack holds its
 * packs) to odb, before the store's own backends: packs written through
 * odb (a fetch's) go there, and every read sees them. */
int opt_git_odb_add_quarantine(git_odb *odb, const char *qdir);

#endif
