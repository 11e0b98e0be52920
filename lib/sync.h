/* sync.h - peers: remotes, fetch, pull, push, clone and conflict replay.
 *
 * A peer is a git remote of the store (remote.NAME.url in its git config).
 * What we last saw of a remote's collection C is kept as C's tracking ref
 * for that remote (a ref apart from the collection's own; the names of
 * the refs are in opt-sync(1)): it is the "base" of C with that remote.
 *
 * Fetch is quarantined: the collection refs of the remote are fetched to
 * incoming refs (one per collection), every changed collection is
 * verified there (opt_verify_collection: history, hash chain, signatures
 * by trusted keys, block hashes) and must not rewind what we had (the old
 * tracking ref is an ancestor of the new one); only then do the tracking
 * refs move, by compare-and-swap.  A refused transfer (OPT_EINTEGRITY) moves no ref.
 * The objects it brought stay in the object database, unreferenced.
 *
 * Push is a compare-and-swap at the remote from the value a fresh fetch
 * saw; over the network the first attempt expects what the tracking refs
 * say (no fetch: one connection when the remote has not moved).  All the
 * collections go in one push, except when a multi-collection transaction
 * is among them (receive-pack is not atomic): then one by one, in name
 * order.  A remote on this machine (a path or a file:// URL) is opened
 * directly: the missing objects are copied as one pack and its ref moved
 * with git_reference_create_matching (libgit2's local transport would
 * overwrite without comparing).  ssh://, git:// and http(s):// remotes go
 * through git receive-pack, which compares the old value; a lost race
 * shows in the push_update_reference status.  When the remote moved, push
 * fetches, replays and tries again (jittered backoff, bounded by the busy
 * timeout).
 *
 * Replay: when both sides have revisions since their common base, our
 * transactions after the base (their logged actions: tree put/del, diary
 * append) are run again, as new transactions, on top of the remote's
 * head; the local collection ref first moves to the remote head (by CAS,
 * after verification), and our old head is kept in
 * C's backup ref until the replay is done, so that a replay cut
 * short is resumed by the next sync (a replayed commit's summary names
 * the transaction it replays, "replay <trx>").  Block-level actions
 * (block.put, ...) cannot be replayed (OPT_ECONFLICT).  The policy decides
 * per collection: replay (default), keep-remote (drop our unpushed
 * transactions), fail (OPT_ECONFLICT, after a report of each diverged
 * collection), or exec:PROG (PROG gets {"local": action, "remote":
 * [actions since the base]} on stdin for each of our actions and prints
 * the action to apply, or null to drop it).
 *
 * Collections are pushed and pulled in name order, so that the pending
 * revisions of a multi-collection transaction reach a peer before its
 * decision on the primary (the last name), as in docs/protocol.md; a
 * peer left with pending revisions resolves them through the primary.
 *
 * Results are reported one record at a time through the emit callback;
 * the library never prints.
 */
#ifndef OPT_SYNC_H
#define OPT_SYNC_H

#include <jansson.h>
#include <stddef.h>

#include "store.h"

#define OPT_REMOTE_NAME_MAX 100

struct opt_sync;

/* A record for the caller (borrowed, valid during the call); a non-zero
 * return stops the operation and is returned. */
typedef int (*opt_sync_emit_fn)(const json_t *rec, void *arg);

/* Progress of long work: what ("receiving objects", "verifying 'x'"),
 * done of total (total 0: unknown). */
typedef void (*opt_sync_progress_fn)(const char *what, size_t done, size_t total, void *arg);

struct opt_sync_opts {
	const char *conflict;        /* "replay" (NULL), "keep-remote", "fail", "exec:PROG" */
	int dry_run;                 /* print the plan, change nothing */
	int replica;                 /* push: the remote is a replica (see opt_sync_push) */
	const json_t *replicas;      /* push: {collection: hex} the remote holds as a replica,
				      * each given that state (its home's), not our head */
	long busy_timeout_ms;        /* 0: $OPT_BUSY_TIMEOUT, else 30000 */
	/* fetch, pull: of the remote's collections (those named, if any),
	 * only those want accepts (pull: and the collections sharing a
	 * multi-collection transaction with them, so that none is taken
	 * half); it is asked about each of them, so it sees all the remote
	 * lists when none is named (may be NULL) */
	int (*want)(const char *name, void *want_arg);
	void *want_arg;
	opt_sync_emit_fn emit;       /* may be NULL */
	opt_sync_progress_fn progress; /* may be NULL */
	void *arg;                   /* for emit and progress */
};

/* Open the sync state of store s (borrowed; must outlive *out). */
int opt_sync_open(struct opt_sync **out, struct opt_store *s);
void opt_sync_free(struct opt_sync *y);

/* 1 if name may name a remote: 1..OPT_REMOTE_NAME_MAX of A-Z a-z 0-9 . _ -,
 * not beginning with '.' or '-', no "..", not ending in ".lock". */
int opt_sync_remote_name_valid(const char *name);

/* 1 if url names a repository on this machine (a path or file://); then
 * *path (may be NULL; malloc'd) gets its absolute path. */
int opt_sync_url_is_local(const char *url, char **path);

/* Add remote name with url (a relative path is made absolute).
 * OPT_EINVAL for an invalid name or URL, OPT_ECONFLICT when it exists. */
int opt_sync_remote_add(struct opt_sync *y, const char *name, const char *url);
/* Remove remote name and its tracking refs: OPT_ENOTFOUND when absent. */
int opt_sync_remote_rm(struct opt_sync *y, const char *name);
/* *out: a new array of {"name", "url"}, sorted by name. */
int opt_sync_remote_list(struct opt_sync *y, json_t **out);
/* The remote to use when none is named: "origin" if there is one, else the
 * only remote; *out malloc'd.  OPT_ENOTFOUND / OPT_EINVAL otherwise. */
int opt_sync_remote_default(struct opt_sync *y, char **out);

/* Take the store's sync lock (flock on <store>/opt-sync.lock), waiting up
 * to timeout_ms (0: the busy timeout): OPT_EBUSY when another sync holds
 * it.  Released by opt_sync_free. */
int opt_sync_lock(struct opt_sync *y, long timeout_ms);

/* fetch: emits {"remote","collection","rev","from"?,"status": "new" |
 * "updated" | "unchanged"} per collection (with dry_run: "commit" instead
 * of "rev" for what would change, and "dry_run": true).  colls (n names)
 * limit it; a named collection the remote lacks is OPT_ENOTFOUND. */
int opt_sync_fetch(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		   const struct opt_sync_opts *o);

/* pull = fetch + fast-forward, or replay per policy: emits {"remote",
 * "collection","rev","status": "new" | "up-to-date" | "fast-forward" |
 * "ahead" | "replayed" | "kept-remote", "replayed"?: N}.
 *
 * fetch and pull skip a collection of the remote they cannot take: its
 * name is no valid collection name, or clashes with one here
 * (opt_store_name_clash); a pull also skips one that shares a
 * multi-collection transaction with a skipped one.  Its tracking ref does
 * not move; {"remote", "collection" (escaped), "status": "skipped",
 * "error"} is emitted for it, the rest goes on, and the result is then
 * OPT_EINTEGRITY (a name that is not valid) or OPT_ECONFLICT. */
int opt_sync_pull(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		  const struct opt_sync_opts *o);

/* 1 when the last fetch or pull of y failed only because it skipped
 * collections (everything else was done), else 0. */
int opt_sync_partial(const struct opt_sync *y);

/* pull from the store at url (a path on this machine, as a remote's
 * URL), its collections tracked as remote name, which need not be
 * configured: how a bundle is applied (bundle.h). */
int opt_sync_pull_url(struct opt_sync *y, const char *name, const char *url, const char *const *colls, size_t n,
		      const struct opt_sync_opts *o);

/* Add to names (an array of collection names) the collections that share
 * a multi-collection transaction with one of them, in their local
 * histories since what remote has (NULL: the whole histories); then sort
 * names.  *grew (may be NULL) is set when names were added. */
int opt_sync_close_over(struct opt_sync *y, const char *remote, json_t *names, int *grew);

/* push: emits {"remote","collection","rev","status": "pushed" |
 * "up-to-date" | "replayed" | "kept-remote"}.
 * With o->replica the remote is a replica of a cluster, whose order is
 * ours (the home's): a collection where the replica has revisions we lack
 * is not replayed there but repaired.  When the replica is ahead of us we
 * fast-forward to it ("fast-forward"); when it diverged, its transactions
 * we lack are replayed here on our head (through the backup ref, so a
 * repair cut short resumes like any replay), then its ref moves from
 * what the fetch saw to our new head by compare-and-swap ("repaired",
 * "replayed": N): nothing of the replica is lost, nothing of ours is
 * reordered.  Either way our head moved: push it to the home again.
 * o->replicas makes the named collections replicas in a push that is
 * otherwise an ordinary one (one connection carries both kinds), each
 * given the commit its value names (what its home acknowledged) instead
 * of our head; a replica already past that commit is left as it is
 * ("up-to-date") unless our head is that commit (then as above). */
int opt_sync_push(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		  const struct opt_sync_opts *o);

/* remove: delete colls (n >= 1 names) at the remote, each only when its
 * head there is ours or an ancestor of ours (nothing of it is lost here),
 * by compare-and-swap from what a fresh fetch saw.  Emits {"remote",
 * "collection","status": "removed" | "kept","reason"?} per collection. */
int opt_sync_remove(struct opt_sync *y, const char *remote, const char *const *colls, size_t n,
		    const struct opt_sync_opts *o);

/* status (no network; as of the last fetch): emits {"collection",
 * "remote","ahead","behind"} per collection on either side. */
int opt_sync_status(struct opt_sync *y, const char *remote, const struct opt_sync_opts *o);

/* Clone: a new store at dir (made, or an existing store with no
 * collections and no remotes), remote "origin" = url, then a pull.  For a
 * remote on this machine the remote store's public key is trusted as
 * "origin"; trust (may be NULL) lists more keys to trust, each "KEY" (named
 * "key-" and its first 8 hex characters) or "NAME=KEY".  On failure a
 * store made here is removed again.  *out (may be NULL) gets the store. */
int opt_sync_clone(struct opt_store **out, const char *url, const char *dir, const char *const *trust,
		   size_t ntrust, const struct opt_sync_opts *o);

#endif
