/* cluster.h - clusters of peers: placement by consistent hashing, and
 * push, pull and rebalance over each collection's cluster.
 *
 * The peers of the cluster are remotes flagged as members
 * (remote.NAME.optPeer = true in the store's git config); the
 * replication factor R is opt.replicas (default min(2, peers), never
 * more than the peers).  A collection's placement is the R peers with the
 * highest weight for its name (rendezvous hashing): the weight of peer P
 * for collection C is the first 8 bytes, big-endian, of BLAKE2b-128 keyed
 * "optimystic placement" over P NUL C.  Ties (which need equal 64-bit
 * weights) go to the smaller name.  Adding a peer moves a collection only
 * when the new peer enters its top R (about R/(N+1) of the collections,
 * one copy each: 1/(N+1) of the copies), and only onto the new peer;
 * removing one moves only the collections it held.
 *
 * The first peer of a placement is the collection's home: its writes are
 * ordered there (compare-and-swap, replay when it moved); the others are
 * replicas.  A cluster push runs in two phases, each with one sync
 * session per peer carrying all of that peer's collections, the peers in
 * parallel (one child process per peer, each with its own store and
 * libgit2 handles, reporting records back through a pipe): first every
 * home, then the replicas of the collections whose home took them.  A
 * collection whose home cannot be reached is not pushed to its replicas
 * (status "home-unreachable") unless promote is set, which makes the next
 * reachable peer of its placement act as its home for this push.  The
 * replicas are pushed with opt_sync_opts.replica: one that took writes of
 * its own is taken here (ahead) or repaired (diverged: its writes replayed
 * here on our head, then it follows by compare-and-swap), never
 * overwritten; the collections whose head moved that way go through both
 * phases once more.
 *
 * A peer that fails with a network error (OPT_ENET) is retried with
 * jittered backoff; a peer still failing is reported.  The operation
 * fails with OPT_ENET only when some collection reached fewer peers than
 * required (min, default R); other failures (conflict, integrity) keep
 * their own codes.
 *
 * Results go out through the emit callback of the sync options: the
 * records of opt_sync_push/pull per collection and peer (with "remote"),
 * {"remote","collection","status":"failed","error"} for a collection a
 * failed peer did not take, {"peer","status":"unreachable","attempts",
 * "error"} per failed peer, {"collection","status":"under-replicated" |
 * "home-unreachable","reached","required","peers"} per collection short
 * of its peers, and a last {"cluster": {...}} summary.  No printing here.
 */
#ifndef OPT_CLUSTER_H
#define OPT_CLUSTER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "sync.h"

#define OPT_CLUSTER_PEERS_MAX 256
#define OPT_CLUSTER_REPLICAS_DEFAULT 2

/* The weight of peer for coll (rendezvous hashing). */
uint64_t opt_cluster_weight(const char *peer, const char *coll);

/* The placement of coll among peers[0..n): the indices of the min(r, n)
 * peers of highest weight into out, home first; returns how many. */
size_t opt_cluster_place(const char *const *peers, size_t n, const char *coll, size_t r, size_t *out);

struct opt_cluster;

/* Read the cluster of store s (through sync state y; both borrowed and
 * must outlive *out): its peers (sorted by name) and R. */
int opt_cluster_open(struct opt_cluster **out, struct opt_store *s, struct opt_sync *y);
void opt_cluster_free(struct opt_cluster *c);

size_t opt_cluster_npeers(const struct opt_cluster *c);
const char *opt_cluster_peer(const struct opt_cluster *c, size_t i);
/* R in effect: opt.replicas (or the default), at most the peers. */
size_t opt_cluster_replicas(const struct opt_cluster *c);

/* Changes to the configuration (c itself is not refreshed). */

/* Make remote name a peer; with url, add the remote first (OPT_ECONFLICT
 * when it exists), without it the remote must exist (OPT_ENOTFOUND). */
int opt_cluster_peer_add(struct opt_cluster *c, const char *name, const char *url);
/* Take remote name out of the cluster (the remote stays): OPT_ENOTFOUND
 * when it is not a peer. */
int opt_cluster_peer_rm(struct opt_cluster *c, const char *name);
/* *out: a new array of {"name","url"} of the peers, sorted by name. */
int opt_cluster_peer_list(struct opt_cluster *c, json_t **out);
/* How each collection's writes are ordered: "home" (its first peer
 * orders them; docs/clusters.md) or "quorum" (each write chosen by a
 * majority of its peers; docs/quorum.md).  Set: opt.ordering in the
 * store's configuration (OPT_EINVAL for another word). */
int opt_cluster_ordering_set(struct opt_cluster *c, const char *ordering);
const char *opt_cluster_ordering(const struct opt_cluster *c);
/* Set opt.replicas to r (1..OPT_CLUSTER_PEERS_MAX), or unset it (r 0). */
int opt_cluster_replicas_set(struct opt_cluster *c, long r);
/* *out: {"replicas": R in effect, "configured": opt.replicas or null,
 * "peers": N}. */
int opt_cluster_replicas_get(struct opt_cluster *c, json_t **out);

/* *out: {"collection","peers":[placement order],"home"}; OPT_ENOTFOUND
 * when there are no peers. */
int opt_cluster_where(struct opt_cluster *c, const char *coll, json_t **out);

struct opt_cluster_opts {
	struct opt_sync_opts sync;  /* conflict, dry_run, busy timeout, emit */
	long min;                   /* peers each collection must reach (0: R) */
	int retries;                /* more attempts per failed peer (< 0: 3) */
	unsigned backoff_ms;        /* first retry delay (0: 200) */
	int promote;                /* an unreachable home's next peer acts as home */
	int prune;                  /* rebalance: remove copies outside their placement */
};

/* Push colls (n names; none: every collection of the store) to their
 * clusters.  OPT_ENOTFOUND when there are no peers. */
int opt_cluster_push(struct opt_cluster *c, const char *const *colls, size_t n, const struct opt_cluster_opts *o);

/* Pull colls (none: every collection of the store or on a peer), each
 * from the first reachable peer of its placement that holds it (its home
 * when it is up; else a replica), else from any peer holding it. */
int opt_cluster_pull(struct opt_cluster *c, const char *const *colls, size_t n, const struct opt_cluster_opts *o);

/* Copy every collection (here or on a peer) to the peers of its placement
 * that lack it: what a peer lacks is pulled first when this store lacks
 * it too.  Emits {"collection","to":[peers],"from":"local"|PEER,
 * "status":"moved"|"failed"|"planned"} per collection that had to move,
 * {"remote","collection","status":"misplaced"} per copy held by a peer
 * outside the placement (left where it is, unless prune), and a
 * {"cluster"} summary.  With dry_run only the plan (status "planned").
 * prune: the misplaced collections are pushed to their whole placement,
 * then each misplaced copy that holds nothing we lack is removed from its
 * peer by compare-and-swap once every peer of its placement took ours
 * ({"remote","collection","status": "removed" | "kept","reason"?}). */
int opt_cluster_rebalance(struct opt_cluster *c, const struct opt_cluster_opts *o);

#endif
