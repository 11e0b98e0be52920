/* pack.h - (library-private) hand-written git packs and their upkeep.
 *
 * A transaction's new objects (blobs, trees, the commit) go into one pack,
 * stored with git_odb_write_pack (libgit2 indexes it and writes .pack and
 * .idx; with fsync on, both are synced).  Packs are consolidated
 * geometrically so that a store has O(log n) packs at any time: each write
 * stays cheap however long the history grows.
 *
 * This header holds what needs no libgit2 type (the checks of a pack's
 * index, the fsync switch); writing, reading, consolidating and
 * collecting packs are declared in store/git.h. */
#ifndef OPT_PACK_H
#define OPT_PACK_H

#include <stddef.h>

/* 0 when $OPT_FSYNC=0 turned syncing off. */
int opt_pack_fsync_enabled(void);

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
