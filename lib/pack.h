/* pack.h - (library-private) hand-written git packs and their upkeep.
 *
 * A transaction's new objects (blobs, trees, the commit) go into one pack,
 * stored with git_odb_write_pack (libgit2 indexes it and writes .pack and
 * .idx; with fsync on, both are synced).  Packs are consolidated
 * geometrically so that a store has O(log n) packs at any time: each write
 * stays cheap however long the history grows.
 */
#ifndef OPT_PACK_H
#define OPT_PACK_H

#include <git2.h>
#include <stddef.h>

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

/* 0 when $OPT_FSYNC=0 turned syncing off. */
int opt_pack_fsync_enabled(void);

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

/* Check a version 2 index against its pack, cheaply (no object is
 * inflated or hashed): its header, a monotone fan-out that matches the
 * names, names strictly increasing, its own SHA-1 and the pack's, the
 * pack's object count, offsets in range, and the entries at the offsets
 * tiling the pack from its header to its trailer, each with the CRC-32 the
 * index gives and a sound entry header (an OFS_DELTA's base at another
 * entry).  0, or OPT_EINTEGRITY saying what is wrong.  (That a name is the
 * SHA-1 of its object is not checked: that takes inflating everything.) */
int opt_pack_idx_check(const char *idxpath, const char *packpath);
/* The part of opt_pack_idx_check that reads the index only (and the
 * pack's header and trailer): what keeps a forged index from sending a
 * reader outside the pack or its tables. Cost: the index's size. */
int opt_pack_idx_check_shape(const char *idxpath, const char *packpath);
/* Every object of the pack (found through its index) has at most
 * OPT_BLOCK_MAX bytes, as its entry header says (a delta: as the start
 * of its instructions says, the rest not inflated): 0, or OPT_EINTEGRITY
 * for the first that has more (or a damaged entry). */
int opt_pack_sizes_check(const char *idxpath, const char *packpath);

/* The same over bytes in memory (name for messages). */
int opt_pack_idx_check_mem(const char *name, const unsigned char *idx, size_t idxlen, const unsigned char *pack,
			   size_t packlen);

#endif
