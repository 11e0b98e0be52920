/* bundle.h - bundles: one file carrying collections for offline transfer.
 *
 * A bundle is a file in git's bundle format (version 2), so that plain
 * `git bundle verify` and `git bundle list-heads` understand it:
 *
 *     # v2 git bundle
 *     -<commit> <comment>            one line per prerequisite
 *     <commit> <the collection's ref>   one line per collection
 *     (an empty line)
 *     <a packfile>
 *
 * The prerequisites are commits the receiver must have already (an
 * incremental bundle); the pack holds every object reachable from the
 * collection heads and not from the prerequisites.  Version 3 headers with
 * "@object-format=sha1" are read too; refs that are not collections are
 * ignored (a bundle of a whole store made by git carries some).
 *
 * Reading never trusts the file: the header is bounded (lines of at most
 * 4096 bytes, at most OPT_BUNDLE_MAX_REFS lines), the pack is indexed by
 * libgit2's indexer into a scratch repository beside the store
 * (<store>/opt-bundle.XXXXXX, removed again; one older than a day, left
 * by a killed run, is swept) whose objects/info/alternates names the
 * store's objects, and every object reachable from the heads must then be
 * there (opt_bundle_index).  Applying is a pull from that scratch
 * repository (opt_sync_pull_url): quarantined fetch, verification of
 * every changed collection (history, hash chain, signatures by trusted
 * keys, no rewind of the tracking refs of remote AS), then
 * fast-forward or replay per conflict policy.  Verifying runs the same
 * checks against the scratch repository (opened as a store that trusts
 * the keys the store trusts) and changes nothing in the store.
 *
 * Results are reported through the emit callback of opt_sync_opts; the
 * library never prints.
 */
#ifndef OPT_BUNDLE_H
#define OPT_BUNDLE_H

#include <jansson.h>

#include "store.h"
#include "sync.h"

#define OPT_BUNDLE_MAX_REFS 100000
#define OPT_BUNDLE_AS "bundle"   /* the remote name bundles are tracked as */

/* opt-sync bundle create: write a bundle of the collections colls (n; 0:
 * all) of store s to path ("-": stdout; a file is written whole or not at
 * all), closed over multi-collection transactions.  since (may be NULL):
 * a remote whose tracking refs are the prerequisites; base (may be NULL):
 * an earlier bundle whose heads are.  Collections the basis already has
 * at their head are left out; OPT_ENOTFOUND when nothing is left.  Emits
 * {"collection","rev","commit","since"?} per collection, then {"file",
 * "bytes","objects","collections"}. */
int opt_bundle_create(struct opt_sync *y, struct opt_store *s, const char *path, const char *const *colls, size_t n,
		      const char *since, const char *base, const struct opt_sync_opts *o);

/* opt-sync bundle ls: emits {"collection","commit"} per head and
 * {"prerequisite","comment"} per prerequisite, in file order.  Needs no
 * store. */
int opt_bundle_ls(const char *path, const struct opt_sync_opts *o);

/* opt-sync bundle verify: everything apply checks, against a scratch
 * repository, changing nothing: emits {"collection","rev","commit",
 * "status": "verified"} per collection (colls, n: only those).  as: the
 * remote name whose tracking refs must not be rewound (NULL: "bundle"). */
int opt_bundle_verify(struct opt_sync *y, struct opt_store *s, const char *path, const char *as,
		      const char *const *colls, size_t n, const struct opt_sync_opts *o);

/* opt-sync bundle apply: a pull from the bundle, tracked as remote as
 * (NULL: "bundle"); the records of opt_sync_pull.  With o->dry_run the
 * bundle is verified as by opt_bundle_verify and the plan emitted
 * ("dry_run": true); nothing changes. */
int opt_bundle_apply(struct opt_sync *y, struct opt_store *s, const char *path, const char *as,
		     const char *const *colls, size_t n, const struct opt_sync_opts *o);

#endif
