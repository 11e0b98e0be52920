/* sync/internal.h - what the files of lib/sync/ share, and nothing more.
 *
 * PRIVATE: only the files of lib/sync/ and the unit tests of the sync family
 * (tests/unit/test-sync.c, test-bundle.c) may include this header.  It
 * carries libgit2 types; programs use the public headers sync.h,
 * cluster.h and bundle.h, which do not.
 *
 * The family: sync.c (the handle, heads, refs, the classifier, records
 * held in name order), remote.c (remotes and the listing of a remote's
 * collections), fetch.c (quarantined, verified fetch), replay.c (replay
 * and conflict policies), pull.c, push.c, admin.c (remove, status,
 * clone), cluster.c and jobs.c (a cluster's sessions, one child process
 * per peer), bundle.c (bundle files).
 */
#ifndef OPT_SYNC_INTERNAL_H
#define OPT_SYNC_INTERNAL_H

#include <ftw.h>
#include <git2.h>
#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "bundle.h"
#include "cluster.h"
#include "store/git.h"
#include "store.h"
#include "sync.h"

#define REPLAY_PREFIX "replay "
#define REFLEN OPT_REF_MAX        /* a ref name (store/git.h builds them) */

/* The sync state of a store (sync.h). */
struct opt_sync {
	struct opt_store *s;
	git_repository *repo;
	int lockfd;
	const struct opt_sync_opts *o;
	const char *url;             /* opt_sync_pull_url: the remote's URL */
	int partial;                 /* the last pull did all but skip collections */
};

/* A remote being worked with. */
struct remote {
	char name[OPT_REMOTE_NAME_MAX + 1];
	char *url;
	char *path;                  /* a repository on this machine, else NULL */
	struct opt_store *peer;      /* opened path remote */
	git_repository *peer_repo;
	int cred_tries;
	int no_verify;               /* http.sslVerify=false: any certificate */
	const struct opt_sync_opts *o;
	/* push */
	int conflict;
	char push_msg[256];
	const git_oid *expect;       /* what the remote ref must hold (NULL: absent) */
	/* a push of several refs at once (push_net_many) */
	size_t nb;
	const char **bnames;         /* collection names */
	const git_oid **bexpect;     /* what each remote ref must hold (NULL: absent) */
	int *bres;                   /* per ref: 0, or OPT_ECONFLICT when it moved */
	int force;                   /* the push need not fast-forward (a replica's repair) */
	git_remote *conn;            /* connected to receive-pack: the next push goes over it */
	/* collections of the remote we cannot take (their names): escaped
	 * name -> {"code", "error"} */
	json_t *skipped;
	char view[PATH_MAX];         /* a path remote read through a view ("": none) */
};

/* One collection as the two sides have it. */
struct head {
	char *name;
	git_oid old, new;            /* tracking ref before; remote head now */
	int has_old, has_new;
	const char *status;          /* fetch: new, updated, unchanged */
};

struct heads {
	struct head *v;
	size_t n, cap;
};

/* What one collection is between us and a remote, decided before
 * anything moves or is sent (sync_classify), as git gives each ref one
 * REF_STATUS_* before a push.  L is our head, T the remote's. */
enum sync_state {
	SYNC_SKIPPED,            /* the remote's name is one we cannot take */
	SYNC_ABSENT_HERE,        /* we do not hold it (the remote may) */
	SYNC_ABSENT_THERE,       /* we hold it, the remote does not */
	SYNC_SAME,               /* both sides at one commit */
	SYNC_AHEAD,              /* L descends from T: the remote lacks ours */
	SYNC_BEHIND,             /* T descends from L: we lack the remote's */
	SYNC_DIVERGED,           /* both have revisions since a common base */
	SYNC_UNFETCHED_BEHIND,   /* dry run, T not here: by the tracking ref
				  * the remote only went on from L */
	SYNC_UNFETCHED_DIVERGED, /* dry run, T not here, and L is elsewhere */
	SYNC_REPLICA_PAST        /* push: a replica given its home's state
				  * (o->replicas) is past it already */
};

/* One collection as the two sides have it (a diverged one: its plan). */
struct coll {
	char *name;
	git_oid L, T, B;        /* local head, remote head, backup (our old head) */
	int has_L, has_T;
	long base_rev;          /* revision of the common base (0: none) */
	json_t *ours;           /* [{"trx","actions","collections"?}] to replay */
	json_t *theirs;         /* [actions] since the base */
	long replayed;
	enum sync_state state;  /* push, pull: sync_classify's */
	int skipped;            /* pull: the remote's name is one we cannot take */
	int replica;            /* push: the remote holds it as a replica */
	int pinned;             /* push: L is the home's state (o->replicas), not our head */
};

/* pull and push report one record per collection, in name order, at the
 * end (also when they fail half-way); other records (the reports of
 * --conflict fail) go out at once. */
struct held {
	const struct opt_sync_opts *o;
	json_t *recs;    /* collection -> record */
};

/* ---- shared helpers of the family ---- */

/* Give repo a fresh object database of its own objects directory, with
 * the quarantine qdir added (NULL: none). */
int opt_git_repo_reopen_odb(git_repository *repo, const char *qdir);

/* Hand record rec (stolen; NULL: out of memory) to o's emit callback:
 * its return value, 0 without one. */
int opt_sync_emit_rec(const struct opt_sync_opts *o, json_t *rec);

/* Is name among the n names (n == 0: every name is)? */
int opt_name_wanted(const char *name, const char *const *names, size_t n);

extern const struct opt_sync_opts sync_no_opts;

long sync_busy_timeout(const struct opt_sync_opts *o);

void sync_progress(const struct opt_sync_opts *o, const char *what, size_t done, size_t total);

void sync_hex_of(char out[GIT_OID_HEXSZ + 1], const git_oid *id);

/* A set of object IDs (open addressing). */
struct oidset {
	git_oid *v;
	unsigned char *used;
	size_t n, cap;
};

void sync_oidset_clear(struct oidset *o);

/* Add id: 1 if new, 0 if there already, <0 out of memory. */
int sync_oidset_add(struct oidset *o, const git_oid *id);

void sync_heads_clear(struct heads *h);

struct head *sync_heads_add(struct heads *h, const char *name);

struct head *sync_heads_find(struct heads *h, const char *name);

int sync_cmp_head(const void *a, const void *b);

/* Names of the refs under prefix (the part after it), sorted. */
int sync_refs_under(git_repository *repo, const char *prefix, json_t **out);

/* The revision of collection name at commit id (0 when unreadable). */
long sync_rev_of(struct opt_sync *y, const char *name, const git_oid *id);

/* 1 if commit a descends from b (a != b), 0 if not, <0 on failure. */
int sync_descends(git_repository *repo, const git_oid *a, const git_oid *b);

/* 1 if the object is in the store. */
int sync_have_object(struct opt_sync *y, const git_oid *id);

int sync_delete_refs_under(git_repository *repo, const char *prefix);

/* An anonymous remote for url, without insteadOf rewriting. */
int sync_anon_remote(git_remote **out, git_repository *repo, const char *url);

/* The URL of remote name: *url malloc'd; OPT_ENOTFOUND when there is no
 * such remote. */
int sync_remote_url(struct opt_sync *y, const char *name, char **url);

void sync_remote_close(struct remote *r);

int sync_remote_open(struct opt_sync *y, struct remote *r, const char *name, const struct opt_sync_opts *o);

/* A failure of the transport: the peer or the network (exit 5), unless
 * what came is corrupt, or (a peer on this machine, whose objects libgit2
 * reads itself) an object there is missing or damaged (exit 4), or our
 * disk is full (exit 7). */
int sync_net_fail(struct remote *r, const char *what);

void sync_callbacks(git_remote_callbacks *cb, struct remote *r);

/* Skip the remote's collection name (as the remote has it, maybe no
 * valid name at all): code, and the last error message, say why. */
int sync_skip_add(struct remote *r, const char *name, int code);

/* Forget the skipped collections that were not asked for (colls, want). */
void sync_skip_keep_wanted(struct remote *r, const char *const *colls, size_t n, const struct opt_sync_opts *o);

/* Sort the array of strings arr. */
int sync_sort_strings(json_t *arr);

/* Report the collections of r that were skipped, a record each:
 * {"remote", "collection", "status": "skipped", "error"}.  Then rc, or
 * when rc is 0 the status of what was skipped (OPT_EINTEGRITY when some
 * name was not valid, else OPT_ECONFLICT: names that clash with ours),
 * with a message naming the first and counting the others. */
int sync_skip_report(struct remote *r, const struct opt_sync_opts *o, int rc);

/* Connect and list the remote's collections (name -> head) into h; the
 * ones we cannot take (not a valid collection name, a name that clashes
 * with one of ours) go to r->skipped instead. */
int sync_ls_remote(struct opt_sync *y, struct remote *r, git_remote **gr_out, struct heads *h);

/* Fetch the remote's collections (all, or colls) into the quarantine,
 * verify each changed one, and only then move the tracking refs.  *h gets
 * one head per collection of the remote (sorted by name), with the
 * tracking ref before (old) and the remote head (new).  A collection that
 * does not verify (OPT_EINTEGRITY) is left out of *h and goes to
 * r->skipped (sync_refused), its tracking ref where it was; the others
 * go on.  With dry_run nothing is downloaded or moved. */
int sync_fetch_verified(struct opt_sync *y, struct remote *r, const char *const *colls, size_t n,
			int dry_run, struct heads *h);

/* 1 if the remote's collection name was refused by the last fetch (it did
 * not verify: sync_fetch_verified skips it and goes on), 0 if not. */
int sync_refused(const struct remote *r, const char *name);

/* Forget the skipped collections that were not refused (push reports only
 * these). */
void sync_skip_keep_refused(struct remote *r);

/* A named collection the remote lacks. */
int sync_check_named(struct heads *h, struct remote *r, const char *const *colls, size_t n);

void sync_coll_clear(struct coll *c);

/* The common base of a and b: its revision into *rev (0: none). */
int sync_base_of(struct opt_sync *y, const char *name, const git_oid *a, const git_oid *b, long *rev);

/* Move collection C's ref from L to T for each of v, all at once
 * (opt_ref_cas_many); with backup, keep L in C's backup ref.  OPT_ECONFLICT
 * when a collection moved since it was read (plan again). */
int sync_move_heads(struct opt_sync *y, struct coll **v, size_t n, int backup, int64_t deadline);

/* Replay every collection with a backup ref among names (NULL: all with
 * one): our transactions from the backup after the common base, minus
 * those already replayed, on the current head; then drop the backup.
 * Emits a record per collection, or with counts (an object) sets
 * counts[name] to the number of transactions replayed instead. */
int sync_replay_backups(struct opt_sync *y, const char *remote, const json_t *names, const char *policy,
			const struct opt_sync_opts *o, json_t *counts, json_t *prepared);

/* The diverged collections v (L, T set): apply the policy.  Emits the
 * records; OPT_ECONFLICT for fail (after the reports). */
int sync_reconcile(struct opt_sync *y, const char *remote, struct coll **v, size_t n, const struct opt_sync_opts *o,
		   int64_t deadline, json_t *counts);

/* A sync cut short left backups: finish those replays first. */
int sync_resume(struct opt_sync *y, const char *remote, const struct opt_sync_opts *o, json_t *counts);

int sync_check_policy(const struct opt_sync_opts *o);

void sync_hold_init(struct held *h, struct opt_sync_opts *lo, const struct opt_sync_opts *o);

/* Emit what is held, in name order; rc stays unless emitting fails. */
int sync_hold_flush(struct held *h, int rc);

int sync_valid_names(const char *const *colls, size_t n);

json_t *sync_rec_of(struct opt_sync *y, const char *remote, const char *name, const git_oid *at, const char *status,
		    int dry_run);

/* One git push of specs to r, through our callbacks (the expected old
 * values are in r): *grc gets git_remote_push's result; *gr (to free)
 * stays for the error. */
int sync_push_specs(struct opt_sync *y, struct remote *r, git_remote **gr, git_strarray *specs, int *grc);

/* Add to names (an array) the collections that share a multi-collection
 * transaction with one of them, in the revisions of ref from_prefix+NAME
 * down to ref stop_prefix+NAME (the side that has them and the side that
 * lacks them), until nothing is added; then sort names (name order:
 * pends before their primary).  *grew (may be NULL) is set when names
 * were added. */
int sync_close_over_transactions(struct opt_sync *y, const char *from_prefix, const char *stop_prefix,
				 json_t *names, int *grew);

int sync_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw);

/* 1 if the array of strings a holds v. */
int sync_has_string(const json_t *a, const char *v);

/* ---- the classifier (sync.c) ---- */

/* The state of collection c (has_L/L, has_T/T, skipped) at repo; e: the
 * remote's head as fetched (its tracking ref before: e->old), NULL when
 * the remote lacks it.  With dry_run a T that is not here (not
 * downloaded) is judged by the tracking ref.  0, or OPT_EINTEGRITY when
 * the histories cannot be compared. */
int sync_classify(enum sync_state *out, git_repository *repo, const struct coll *c, const struct head *e, int dry_run);

/* What push or pull does with a collection in a state. */
enum sync_step {
	STEP_NONE,       /* nothing, no record */
	STEP_REPORT,     /* nothing moves; a record with status */
	STEP_MOVE,       /* push: send L to the remote; pull: move our ref to T */
	STEP_RECONCILE,  /* diverged: the conflict policy decides */
	STEP_REPAIR,     /* push to a replica: repair it from our head */
	STEP_REFETCH     /* push to a replica ahead of what we saw: fetch first */
};

struct sync_verdict {
	enum sync_step step;
	const char *status;  /* the record's "status" (STEP_REPORT, STEP_MOVE) */
};

/* The status a diverged collection gets under the conflict policy
 * (NULL: "replay"), as a dry run reports it. */
const char *sync_policy_status(const char *policy);

/* push: the verdict on a collection in state st; replica: the remote
 * holds it as a replica; optimistic: the remote heads are the tracking
 * refs, not a fresh fetch. */
struct sync_verdict sync_push_verdict(enum sync_state st, int replica, int optimistic, const char *policy);

/* pull: the verdict on a collection in state st. */
struct sync_verdict sync_pull_verdict(enum sync_state st, const char *policy);

/* ---- clusters (cluster.c, jobs.c) ---- */

struct opt_cluster {
	struct opt_store *s;
	struct opt_sync *y;
	char **peers;     /* sorted by name */
	char **urls;
	size_t n;
	long configured;  /* opt.replicas, 0 when unset */
	int quorum;       /* opt.ordering = quorum: writes chosen by a majority */
};

enum op { OP_PUSH, OP_PULL, OP_PULL_HOME, OP_LIST, OP_REMOVE };

/* One sync session with a peer, run in a child process. */
struct job {
	size_t peer;
	json_t *names;     /* collections (array of strings) */
	json_t *replicas;  /* push: {name: hex} of names the peer holds as a replica */
	const json_t *only; /* OP_PULL_HOME: the collections asked for (sorted; empty: all) */
	json_t *held;      /* OP_PULL_HOME: what the peer listed */
	pid_t pid;
	int fd;
	char *buf;
	size_t len, cap;
	json_t *recs;      /* the records of its last attempt */
	int rc;            /* its result */
	int attempts;
	char *error;
};

/* Push the collections names (sorted) by the quorum protocol
 * (quorum.c, docs/quorum.md): each chosen by a majority of its
 * placement, in name order; a record each and a summary.  OPT_ENET when
 * one was not chosen (kept local). */
int cluster_quorum_push(struct opt_cluster *c, const json_t *names, const struct opt_cluster_opts *o);

/* Run the jobs, one child per job, all at once; wait for all. */
int cluster_run_jobs(const struct opt_cluster *c, struct job *jobs, size_t nj, enum op op,
		     const struct opt_cluster_opts *o);

/* Jobs from a peer -> names map (keys: peer index as text). */
struct job *cluster_jobs_of(json_t *per, size_t *nj);

void cluster_per_add(json_t *per, size_t peer, const char *name);

void cluster_jobs_free(struct job *jobs, size_t nj);

/* 1 if name is in the sorted array names. */
int cluster_has_name(const json_t *names, const char *name);

/* ---- bundle engine (bundle.c; used by the unit tests) ---- */

/* One line of the header: a prerequisite or a ref. */
struct opt_bundle_line {
	git_oid id;
	char *text;      /* a prerequisite's comment ("" when none), a ref's name */
};

/* A bundle being read: its header, and the stream at the pack. */
struct opt_bundle {
	FILE *f;
	int own;                     /* f is ours to close (not stdin) */
	char *path;                  /* as messages show it (opt_esc) */
	struct opt_bundle_line *pre, *refs;
	size_t npre, nrefs;
};

/* Open the bundle at path ("-": stdin) and read its header: *out a new
 * bundle, its stream at the start of the pack.  OPT_ENOTFOUND when there
 * is no such file, OPT_EINTEGRITY for a header that is not a git bundle's
 * (with what is wrong), OPT_EIO when unreadable. */
int opt_bundle_open(struct opt_bundle **out, const char *path);
void opt_bundle_free(struct opt_bundle *b);

/* The head of collection name in b (borrowed), NULL when it has none. */
const git_oid *opt_bundle_head(const struct opt_bundle *b, const char *name);

/* Check that every prerequisite is a commit in repo, index the rest of
 * b's stream (the pack) into the objects of repo, then check that the
 * bundle is complete: every head a commit, and every commit, tree and
 * blob reachable from the heads and not from the prerequisites in repo.
 * What the object database known (may be NULL: nothing) has is taken as
 * complete, as git takes what a repository has.  OPT_EINTEGRITY for a
 * truncated, malformed or incomplete pack; OPT_ENOTFOUND for a missing
 * prerequisite.  *objects (may be NULL) gets the number of objects in the
 * pack. */
int opt_bundle_index(struct opt_bundle *b, git_repository *repo, git_odb *known, opt_sync_progress_fn progress,
		     void *arg, size_t *objects);

/* Write a bundle of repo to f: the refs (names and commits, n of them),
 * the prerequisites (m, each with a comment without newlines), and a pack
 * of the objects reachable from the refs and not from the prerequisites.
 * *bytes and *objects (may be NULL) get what was written. */
int opt_bundle_write(FILE *f, git_repository *repo, const struct opt_bundle_line *refs, size_t n,
		     const struct opt_bundle_line *pre, size_t m, size_t *bytes, size_t *objects);

#endif
