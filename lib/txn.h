/* txn.h - single-collection transactions with replay.
 *
 * opt_txn_run reads the latest revision of a collection, lets the caller's
 * function stage changes (blocks through the tracker, and the logical
 * actions that explain them), appends the log entry, and commits with a
 * compare-and-swap of the collection ref.  When another writer committed
 * first, it re-reads the new revision and calls the function again on it
 * (replay: the function must derive its changes from the state it is
 * given), with jittered exponential backoff, until it commits or the busy
 * timeout passes (OPT_EBUSY).  The transaction ID stays the same across
 * attempts.
 */
#ifndef OPT_TXN_H
#define OPT_TXN_H

#include <jansson.h>

#include "block.h"
#include "store.h"

struct opt_txn;

/* Stage the transaction: read through opt_txn_tracker (or the source),
 * change blocks, add actions.  Return 0, or a negative code to give up
 * (nothing is committed; no retry). */
typedef int (*opt_txn_fn)(struct opt_txn *x, void *arg);

struct opt_txn_opts {
	const char *type;      /* header type a new collection gets, and an
				  existing one must have (NULL: any) */
	const char *summary;   /* commit summary line */
	long busy_timeout_ms;  /* 0: $OPT_BUSY_TIMEOUT, else 30000 */
	int allow_empty;       /* commit even with no actions */
};

struct opt_txn_result {
	long rev;                   /* the committed revision (or the current one when nothing changed) */
	char trx[OPT_ID_LEN + 1];
	int attempts;
	int committed;              /* 0 when there was nothing to commit */
	int created;                /* 1 if this transaction created the collection */
};

int opt_txn_run(struct opt_store *s, const char *name, opt_txn_fn fn, void *arg,
		const struct opt_txn_opts *o, struct opt_txn_result *res);

/* Group commit: many transactions on one collection, each its own
 * revision and log entry, made durable together by one pack write and one
 * ref update (opt_store_group_*).  fn and arg of every staged transaction
 * must stay valid until the flush: on a conflict at the flush, every one
 * is replayed, in order, on the new state.  A transaction whose fn fails
 * at staging is not staged (its error is returned; the group goes on).
 *
 * A staged transaction is committed only when a flush says so: its
 * result is readable from then on, and never before.  A failed flush
 * commits none of the transactions it was given, and its failure sticks:
 * every later add and flush returns it (never a success for transactions
 * that were not written), until opt_txn_group_clear drops them. */
struct opt_txn_group;

int opt_txn_group_new(struct opt_txn_group **out, struct opt_store *s, const char *name,
		      const struct opt_txn_opts *o);
/* Stage one transaction; *index (may be NULL) is its place in the group. */
int opt_txn_group_add(struct opt_txn_group *g, opt_txn_fn fn, void *arg, size_t *index);
/* Number of staged transactions (durable or not). */
size_t opt_txn_group_size(const struct opt_txn_group *g);
/* Commit every staged transaction that is not durable yet, durably.
 * Returns how many transactions it made durable (0: none was waiting), or
 * a negative code: then none of them is committed (and the failure
 * sticks, see above). */
int opt_txn_group_flush(struct opt_txn_group *g);
/* The result of staged transaction i once a flush made it durable; NULL
 * before that, and for one that never was (valid until the clear). */
const struct opt_txn_result *opt_txn_group_result(const struct opt_txn_group *g, size_t i);
/* Forget the staged transactions: the results of the durable ones, and
 * the ones not durable, which are dropped uncommitted.  The group starts
 * over (a failure no longer sticks). */
void opt_txn_group_clear(struct opt_txn_group *g);
void opt_txn_group_free(struct opt_txn_group *g);

/* A multi-collection transaction: all or nothing, even when the process
 * is killed at any point (docs/protocol.md).  Each part names a
 * collection, the header type it must have (or gets when new), and its
 * txn function.  On success every part's result is committed, with its
 * revision; *trx gets the transaction ID either way.  OPT_ECONFLICT when
 * the transaction was aborted (it outlived $OPT_TXN_TTL, default 30000
 * ms, and another writer aborted it), OPT_EBUSY when a collection stayed
 * busy for longer than the busy timeout. */
struct opt_txn_part {
	const char *name;
	const char *type;
	opt_txn_fn fn;
	void *arg;
	struct opt_txn_result res;
};

int opt_txn_multi(struct opt_store *s, struct opt_txn_part *parts, size_t n, const struct opt_txn_opts *o,
		  char trx[OPT_ID_LEN + 1]);
/* The same with a given transaction ID (a replay keeps the ID of the
 * transaction it replays). */
int opt_txn_multi_keep(struct opt_store *s, struct opt_txn_part *parts, size_t n, const struct opt_txn_opts *o,
		       const char *trx);

/* The status of transaction trx: *out = {"trx", "status": "pending" |
 * "committed" | "aborted", "collections": [names], "primary"?, "expired"?}
 * or OPT_ENOTFOUND when no collection has heard of it. */
int opt_txn_status(struct opt_store *s, const char *trx, json_t **out);

/* Inside fn: */
struct opt_tracker *opt_txn_tracker(struct opt_txn *x);
/* The revision read (NULL when the collection does not exist yet). */
struct opt_snap *opt_txn_base(struct opt_txn *x);
/* The ID of the collection's header block (borrowed). */
const char *opt_txn_header_id(struct opt_txn *x);
const char *opt_txn_collection(struct opt_txn *x);
/* Record a logical action (stolen); OPT_EINVAL after opt_txn_actions_text. */
int opt_txn_action(struct opt_txn *x, json_t *action);

/* Or give all of the transaction's actions at once as text (stolen,
 * malloc'd): the canonical JSON array of count actions, which the log
 * entry stores and hashes as it is (opt_log_append_text, whose nesting
 * limit the caller keeps).  OPT_EINVAL when actions were recorded
 * already. */
int opt_txn_actions_text(struct opt_txn *x, char *text, size_t len, size_t count);

/* The hash recorded in log entries for a block: SHA-256 of its canonical
 * JSON; for the collection header, without its log links (headId, tailId)
 * which the log itself moves. */
int opt_txn_block_hash(const json_t *block, int is_header, char out[65]);

#endif
