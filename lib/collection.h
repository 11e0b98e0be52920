/* collection.h - Tree and Diary collections.
 *
 * A collection is a header block (ID derived from the name; type TRE for a
 * tree, DIH for a diary, COL for plain blocks) plus its transaction log (a
 * chain hosted by the header) plus its data: a B+tree whose root the
 * header names (rootId, capacity) for a tree; a chain of entries for a
 * diary, hosted by a second header block (diaryId).  The header also keeps
 * the number of entries ("count") so that counting is O(1).
 *
 * Changes are actions, staged inside a transaction function (txn.h) so
 * that a writer that lost a race replays them on the new state:
 *   tree   {"type":"put","key":K,"value":V}   {"type":"del","key":K}
 *   diary  {"type":"append","entry":E}
 */
#ifndef OPT_COLLECTION_H
#define OPT_COLLECTION_H

#include <jansson.h>

#include "block.h"
#include "btree.h"
#include "store.h"
#include "txn.h"

/* The types of a collection's header block. */
#define OPT_TYPE_BLOCKS "COL"   /* a collection of plain blocks (opt-block) */
#define OPT_TYPE_TREE "TRE"
#define OPT_TYPE_DIARY "DIH"
#define OPT_TYPE_LOG "LGD"      /* a log's data block (log.h), never a header */

/* A readable name for a header type ("tree", "diary", "block"; "unknown"
 * for NULL; another type as it is). */
const char *opt_type_name(const char *type);

/* Largest canonical JSON size of one tree value or diary entry (a block
 * holds up to 64 of them and should stay well under git's comfort zone). */
#define OPT_VALUE_MAX (1024 * 1024)

/* Largest canonical JSON size of one tree key that a put writes.  A key
 * is stored in its leaf and again, as a separator, in the branches above
 * it, which every lookup reads and a process keeps in memory: a branch
 * of the default capacity (64) holds at most 256 KiB of keys (16 MiB at
 * the largest capacity, 4096).  Lookups and deletes take longer keys
 * (such a key is simply not there, or was written before the limit). */
#define OPT_KEY_MAX 4096

/* Inside a txn function of a tree collection: make sure the tree exists
 * (a new collection gets an empty tree of the given capacity, 0 for the
 * default), then put or delete.  Keys must be valid keys (json.h).
 * opt_tree_del sets *found (may be NULL) and records nothing when the key
 * is absent. */
int opt_tree_init(struct opt_txn *x, int capacity);
int opt_tree_put(struct opt_txn *x, const json_t *key, const json_t *value);
/* Many puts at once (faster for bulk loads); the same as n opt_tree_put. */
int opt_tree_put_many(struct opt_txn *x, const json_t *const *keys, const json_t *const *values, size_t n);
/* The same with keys and values as canonical JSON text (the caller vouches
 * that it is canonical; keys are checked).  Into an empty tree the leaves
 * and branches are built from the text and the log entry's actions written
 * as text, nothing parsed (opt_btree_load_text, opt_log_append_text);
 * otherwise the text is parsed and put as opt_tree_put_many does. */
int opt_tree_put_text(struct opt_txn *x, const struct opt_kv_text *kv, size_t n);
int opt_tree_del(struct opt_txn *x, const json_t *key, int *found);

/* Inside a txn function of a diary collection. */
int opt_diary_init(struct opt_txn *x);
int opt_diary_append(struct opt_txn *x, const json_t *entry);

/* Reading a snapshot (opt_snap_open). */

/* The header block of the collection at snap: *out new reference. */
int opt_coll_header(struct opt_snap *snap, json_t **out);
/* "tree", "diary" or "block" for the collection at snap. */
int opt_coll_kind(struct opt_snap *snap, const char **kind);
/* Fail with OPT_EINVAL ("collection 'x' is a diary, not a tree") unless
 * the collection at snap has header type `type`. */
int opt_coll_expect(struct opt_snap *snap, const char *type);

int opt_tree_get(struct opt_snap *snap, const json_t *key, json_t **value);
/* The value as canonical JSON text (malloc'd; see opt_btree_get_text). */
int opt_tree_get_text(struct opt_snap *snap, const json_t *key, char **text, size_t *len);
int opt_tree_count(struct opt_snap *snap, size_t *n);
/* Range cursor over the snapshot's tree (see btree.h). */
int opt_tree_range(struct opt_snap *snap, const struct opt_btree_range *r, struct opt_btree_cursor **out);

int opt_diary_count(struct opt_snap *snap, size_t *n);
/* The ID of the diary's chain header (borrowed from a static buffer of the
 * caller: out must hold OPT_ID_MAX + 1). */
int opt_diary_chain(struct opt_snap *snap, char *out);

/* The shape of the snapshot's tree: *depth, the levels from the root to
 * the leaves (following the first child; 0 without a root), and
 * *capacity, the header's "capacity" (a new reference; NULL when it has
 * none). */
int opt_tree_shape(struct opt_snap *snap, long *depth, json_t **capacity);

/* Inside a txn function of a diary collection: the number of entries
 * after what the transaction appended so far. */
int opt_diary_txn_count(struct opt_txn *x, long *n);

/* An iterator over a diary's entries, oldest first (forward) or newest
 * first; entries are borrowed, valid until the next call.  The snapshot
 * must outlive it.  A position marks an entry, so that a later iterator
 * (on a later snapshot of the same diary) goes on after it. */
struct opt_diary_iter;
struct opt_diary_pos {
	char block_id[OPT_ID_MAX + 1];
	long index;
};

int opt_diary_iter_open(struct opt_diary_iter **out, struct opt_snap *snap, int forward);
/* Forward from the entry after pos. */
int opt_diary_iter_open_after(struct opt_diary_iter **out, struct opt_snap *snap, const struct opt_diary_pos *pos);
/* The next entry: 1 and *entry, 0 at the end, or a negative code. */
int opt_diary_iter_next(struct opt_diary_iter *it, const json_t **entry);
/* The position of the entry the last opt_diary_iter_next returned. */
int opt_diary_iter_pos(const struct opt_diary_iter *it, struct opt_diary_pos *pos);
void opt_diary_iter_free(struct opt_diary_iter *it);

/* The entries of snap's diary, oldest first, as their stored canonical
 * text: each block's bytes are scanned, no JSON values are built for the
 * entries (a block that does not scan is parsed).  The links are checked
 * as the iterator's are.  next: 1 and *text (not NUL-terminated, *len
 * bytes, valid until the next call), 0 at the end, or a negative code. */
struct opt_diary_text;
int opt_diary_text_open(struct opt_diary_text **out, struct opt_snap *snap);
int opt_diary_text_next(struct opt_diary_text *it, const char **text, size_t *len);
void opt_diary_text_free(struct opt_diary_text *it);

/* Transaction documents (opt-log commit):
 *   {"collections": {NAME: [action, ...], ...}}
 * Tree actions put/del, diary actions append; a collection that does not
 * exist is created of the type its actions imply.  opt_txdoc_check
 * validates the whole document (OPT_EINVAL naming what is wrong);
 * opt_txdoc_run commits it as one atomic transaction (opt_txn_multi) and
 * sets *out to {"trx": ID, "collections": {NAME: REV, ...}}. */
int opt_txdoc_check(const json_t *doc);
int opt_txdoc_run(struct opt_store *s, const json_t *doc, const struct opt_txn_opts *o, json_t **out);
/* The same under the given transaction ID (a replay keeps it). */
int opt_txdoc_run_keep(struct opt_store *s, const json_t *doc, const struct opt_txn_opts *o, const char *trx,
		       json_t **out);

/* A checkpoint of collection name: a transaction that drops the action
 * payloads of log entries up to revision upto (0: the latest) from the
 * collection's current log blocks, keeping every entry's hashes, so the
 * hash chain still verifies.  *out = {"collection", "rev", "upto",
 * "pruned": entries}. */
int opt_checkpoint(struct opt_store *s, const char *name, long upto, json_t **out);

/* Check a value or entry: canonical size at most OPT_VALUE_MAX. */
int opt_value_check(const json_t *v, const char *what);

/* Check a key that a put writes: a valid key (json.h) of at most
 * OPT_KEY_MAX bytes of canonical JSON.  OPT_EINVAL ("the key is N bytes;
 * the limit is 4096 bytes of canonical JSON"). */
int opt_key_check(const json_t *key);

#endif
