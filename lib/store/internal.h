/* store/internal.h - (private to the store) what the files of lib/store/
 * share: the store's and the snapshot's structures and the helpers that
 * cross between repo.c, snap.c, commit.c, refs.c, pack.c and packr.c.
 *
 * Included ONLY by the files of lib/store/.  Nothing else may include it,
 * not lib/txn.c, not lib/sync/, not a test: the rest of the library sees
 * the store through store.h, pack.h and store/git.h. */
#ifndef OPT_STORE_INTERNAL_H
#define OPT_STORE_INTERNAL_H

#include <git2.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* ---- the store and its snapshots ---- */

struct opt_store {
	git_repository *repo;
	git_odb *odb;
	char *path;
	/* group commit */
	git_odb_backend *mempack;  /* serves pending objects (owned by odb) */
	struct opt_pack *gpack;    /* pending objects (NULL outside a group, or
				      until the first commit after a flush) */
	char *gname;               /* the group's collection, NULL outside one */
	int gpending;              /* 1 once a commit is pending */
	size_t gcount;             /* commits pending */
	int gcreate;               /* the group creates the collection */
	git_oid gbase, ghead;      /* ref value at the start; pending head */
	/* parsed blocks by blob ID (content-addressed, so valid in every
	 * snapshot): a stream of transactions reads what the one before wrote
	 * without parsing it again */
	json_t *ocache;
	char (*oring)[GIT_OID_HEXSZ + 1];
	size_t opos;
	/* our own reader of the packs (block reads), made at the first read;
	 * libgit2 reads what it does not hold */
	struct opt_packr *packr;
	int nopackr;
	/* the quarantine of incoming objects (opt_store_quarantine_begin):
	 * its objects directory, read beside ours (and by its own reader) */
	char *qdir;
	int qowner;                /* made here: removed at the end */
	struct opt_packr *qpackr;
};

struct cache_slot {
	char *id;
	json_t *block;
};

/* A map from block IDs to records that hold their ID (open addressing,
 * linear probing): the lookups of a point read want it cheaper than a
 * JSON object's. */
struct idmap_ent {
	size_t h;
	const char *id;   /* the record's own; NULL: free */
	void *v;
};

struct idmap {
	struct idmap_ent *t;
	size_t cap, n;
};

struct opt_snap {
	struct opt_store *s;
	char *name;
	git_commit *commit;
	git_tree *root;
	git_tree *blocks;   /* may be NULL: no blocks */
	long rev;
	char *trx, *summary;
	char *trailer_buf;
	char commit_hex[41];
	struct cache_slot *cache;  /* nslots ring of cached IDs, oldest first */
	size_t nslots, ring;
	json_t *lru;               /* id -> block for the IDs in the ring */
	struct idmap pinned;       /* inner nodes and headers: kept (struct pin) */
	json_t *trailers;          /* parsed trailers */
	char hid[OPT_ID_LEN + 1];  /* the header block's ID, once asked for */
	/* tree leaves' bytes kept for lookups (opt_snap_cache_bytes) */
	struct idmap rmap;         /* id -> struct raw_slot */
	git_tree **t2;             /* blocks/<c1>/<c2> trees by ID prefix */
	struct idmap blobs;        /* their entries by name (block ID) */
	int noblobs;               /* out of memory: search the trees */
	struct raw_slot **rring;   /* oldest first from rhead */
	size_t rcap, rhead, rcount, rbytes, rbudget;
};


/* ---- reading objects (repo.c) ---- */

/* Open the object database afresh (a pack another process just wrote may
 * be invisible to the current one): 0, or -1 when it cannot (or must not:
 * a group's pending objects live in the current one). */
int opt_store__reload_odb(struct opt_store *s);
int opt_store__commit_lookup(struct opt_store *s, git_commit **out, const git_oid *id);
int opt_store__tree_lookup(struct opt_store *s, git_tree **out, const git_oid *id);
int opt_store__odb_read(struct opt_store *s, git_odb_object **out, const git_oid *id);
/* Object id through our own pack reader: 0 with *data (malloc'd), or <0
 * when it does not hold it. */
int opt_store__packr_read(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len,
			  git_object_t *type);
/* Blob id's bytes: *data malloc'd (NUL-terminated). */
int opt_store__read(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len);
/* Read object id (of any kind) raw: *data malloc'd, *type. */
int opt_store__read_typed(struct opt_store *s, const git_oid *id, unsigned char **data, size_t *len,
			  git_object_t *type);

/* ---- snapshots (snap.c) ---- */

/* The ref of collection name, after checking the name. */
int opt_store__ref_name(char *buf, size_t n, const char *name);
/* Keep block b (parsed from blob oid) in the store's cache of parsed
 * blocks. */
void opt_store__ocache_put(struct opt_store *s, const git_oid *oid, const json_t *b);

/* ---- trees (commit.c) ---- */

/* One entry of a raw tree. */
struct tent {
	const char *mode, *name;
	size_t modelen, namelen;
	const unsigned char *oid;
};

/* The next entry of a raw tree at *p: 1 with *e, 0 at the end, -1 when
 * the bytes are no tree entry. */
int opt_store__tree_next(const unsigned char **p, const unsigned char *end, struct tent *e);
/* Is e's mode m? */
int opt_store__mode_is(const struct tent *e, const char *m);

/* ---- packs (pack.c, packr.c) ---- */

#define OBJ_OFS_DELTA 6  /* a pack entry's type: a delta against an earlier entry */

/* A big-endian 32-bit number of an index or pack. */
static inline uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- refs (refs.c) ---- */

/* 1 when ref name's lock file is there (another writer holds it, or a
 * killed one left it), else 0. */
int opt_ref_locked(git_repository *repo, const char *name);

/* Remove the lock file of ref name when it is older than OPT_STALE_LOCK_MS
 * (default 5000): a writer killed while holding it left it. */
void opt_ref_break_stale_lock(git_repository *repo, const char *name);

#endif
