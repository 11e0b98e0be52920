/* test-cluster.c - placement by rendezvous hashing (stable, balanced,
 * about 1/N of the copies move when a peer joins or leaves, and only
 * onto / off that peer) and the cluster's configuration in a store. */
#include "cluster.h"
#include "error.h"
#include "harness.h"
#include "fixture.h"
#include "util.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define NAMES 1000

static const char *peers5[] = { "alpha", "bravo", "charlie", "delta", "echo" };

static void name_of(char *buf, size_t len, unsigned i)
{
	snprintf(buf, len, "coll-%u-%llu", i, (unsigned long long)(seed % 100000));
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

TEST(placement_is_stable_and_distinct)
{
	size_t a[5], b[5], k, i, j;
	const char *rev[5] = { "echo", "delta", "charlie", "bravo", "alpha" };
	char name[64];

	for (i = 0; i < 50; i++) {
		name_of(name, sizeof(name), (unsigned)i);
		k = opt_cluster_place(peers5, 5, name, 3, a);
		CHECK(k == 3);
		CHECK(opt_cluster_place(peers5, 5, name, 3, b) == 3);
		CHECK(memcmp(a, b, sizeof(size_t) * 3) == 0);
		for (j = 0; j + 1 < k; j++) {
			CHECK(a[j] != a[j + 1]);
			CHECK(opt_cluster_weight(peers5[a[j]], name) >= opt_cluster_weight(peers5[a[j + 1]], name));
		}
		/* the order peers are listed in does not matter */
		CHECK(opt_cluster_place(rev, 5, name, 3, b) == 3);
		for (j = 0; j < 3; j++)
			CHECK(strcmp(peers5[a[j]], rev[b[j]]) == 0);
		/* the top r by weight, as a full sort finds them */
		for (j = 0; j < 5; j++) {
			int in = 0;
			size_t m, above = 0;
			for (m = 0; m < 3; m++)
				in |= a[m] == j;
			for (m = 0; m < 5; m++)
				above += opt_cluster_weight(peers5[m], name) > opt_cluster_weight(peers5[j], name);
			CHECK(in == (above < 3));
		}
		/* asking for more than there are gives all */
		CHECK(opt_cluster_place(peers5, 2, name, 9, b) == 2);
		CHECK(opt_cluster_place(peers5, 0, name, 2, b) == 0);
	}
	/* the weight depends on both names */
	CHECK(opt_cluster_weight("alpha", "x") != opt_cluster_weight("alpha", "y"));
	CHECK(opt_cluster_weight("alpha", "x") != opt_cluster_weight("bravo", "x"));
	/* "ab"+"c" and "a"+"bc" are different inputs */
	CHECK(opt_cluster_weight("ab", "c") != opt_cluster_weight("a", "bc"));
}

/* Place NAMES collections on n peers with r replicas, then on n+1 (the
 * new peer last): the share of copies moved must be about 1/(n+1), every
 * moved copy must land on the new peer, and the load must be even. */
static void check_join(size_t n, size_t r)
{
	size_t before[5], after[5], load[5] = { 0 }, moved = 0, i, j, k;
	char name[64];
	double share;

	for (i = 0; i < NAMES; i++) {
		name_of(name, sizeof(name), (unsigned)i);
		CHECK(opt_cluster_place(peers5, n, name, r, before) == r);
		CHECK(opt_cluster_place(peers5, n + 1, name, r, after) == r);
		for (j = 0; j < r; j++) {
			int kept = 0;
			load[after[j]]++;
			for (k = 0; k < r; k++)
				kept |= after[j] == before[k];
			if (!kept) {
				moved++;
				CHECK(after[j] == n);  /* only onto the new peer */
			}
		}
	}
	share = (double)moved / (double)(NAMES * r);
	printf("# %zu -> %zu peers, R=%zu: %.3f of the copies moved (ideal %.3f)\n", n, n + 1, r, share,
	       1.0 / (double)(n + 1));
	CHECK(share > 0.7 / (double)(n + 1) && share < 1.3 / (double)(n + 1));
	for (j = 0; j <= n; j++)
		CHECK(load[j] > 0.7 * NAMES * r / (n + 1) && load[j] < 1.3 * NAMES * r / (n + 1));
}

TEST(join_moves_about_one_nth)
{
	check_join(4, 1);
	check_join(4, 2);
	check_join(2, 2);
	check_join(3, 3);
}

/* Removing a peer moves only the collections it held. */
TEST(leave_moves_only_its_collections)
{
	const char *four[] = { "alpha", "bravo", "delta", "echo" };  /* charlie left */
	size_t before[5], after[5], i, j, k, changed = 0;
	char name[64];

	for (i = 0; i < NAMES; i++) {
		int had = 0;
		name_of(name, sizeof(name), (unsigned)i);
		opt_cluster_place(peers5, 5, name, 2, before);
		opt_cluster_place(four, 4, name, 2, after);
		for (j = 0; j < 2; j++)
			had |= before[j] == 2;
		for (j = 0; j < 2; j++) {
			int kept = 0;
			for (k = 0; k < 2; k++)
				kept |= strcmp(four[after[j]], peers5[before[k]]) == 0;
			if (!kept) {
				changed++;
				CHECK(had);
			}
		}
	}
	CHECK(changed > 0.7 * NAMES * 2 / 5 && changed < 1.3 * NAMES * 2 / 5);
}

TEST(configuration)
{
	struct opt_store *s = NULL;
	struct opt_sync *y = NULL;
	struct opt_cluster *c = NULL;
	json_t *v = NULL;
	size_t idx[4];

	CHECK_RC(opt_store_create(&s, at("s"), NULL));
	CHECK_RC(opt_sync_open(&y, s));
	if (!s || !y)
		return;
	CHECK_RC(opt_cluster_open(&c, s, y));
	CHECK(opt_cluster_npeers(c) == 0);
	CHECK(opt_cluster_replicas(c) == 0);
	CHECK(opt_cluster_where(c, "x", &v) == OPT_ENOTFOUND);
	/* a peer with its URL; an existing remote made a peer; a plain remote */
	CHECK_RC(opt_cluster_peer_add(c, "p2", at("p2")));
	CHECK_RC(opt_sync_remote_add(y, "p1", at("p1")));
	CHECK_RC(opt_sync_remote_add(y, "plain", at("plain")));
	CHECK_RC(opt_cluster_peer_add(c, "p1", NULL));
	CHECK(opt_cluster_peer_add(c, "nope", NULL) == OPT_ENOTFOUND);
	CHECK(opt_cluster_peer_add(c, "p1", at("p1")) == OPT_ECONFLICT);
	CHECK(opt_cluster_peer_add(c, "-bad", NULL) == OPT_EINVAL);
	CHECK_RC(opt_cluster_peer_add(c, "p3", at("p3")));
	opt_cluster_free(c);
	CHECK_RC(opt_cluster_open(&c, s, y));
	CHECK(opt_cluster_npeers(c) == 3);
	CHECK(strcmp(opt_cluster_peer(c, 0), "p1") == 0 && strcmp(opt_cluster_peer(c, 2), "p3") == 0);
	CHECK(opt_cluster_replicas(c) == 2);
	CHECK_RC(opt_cluster_where(c, "users", &v));
	CHECK(json_array_size(json_object_get(v, "peers")) == 2);
	CHECK(opt_cluster_place((const char *const[]){ "p1", "p2", "p3" }, 3, "users", 2, idx) == 2);
	CHECK(strcmp(json_string_value(json_object_get(v, "home")), (const char *[]){ "p1", "p2", "p3" }[idx[0]]) == 0);
	json_decref(v);
	/* R: configured, capped by the peers, unset again */
	CHECK_RC(opt_cluster_replicas_set(c, 5));
	CHECK(opt_cluster_replicas_set(c, -1) == OPT_EINVAL);
	opt_cluster_free(c);
	CHECK_RC(opt_cluster_open(&c, s, y));
	CHECK(opt_cluster_replicas(c) == 3);
	CHECK_RC(opt_cluster_replicas_get(c, &v));
	CHECK(json_integer_value(json_object_get(v, "configured")) == 5);
	json_decref(v);
	CHECK_RC(opt_cluster_replicas_set(c, 0));
	CHECK_RC(opt_cluster_replicas_set(c, 0));
	/* out of the cluster, the remote stays; removing the remote drops it */
	CHECK_RC(opt_cluster_peer_rm(c, "p2"));
	CHECK(opt_cluster_peer_rm(c, "p2") == OPT_ENOTFOUND);
	CHECK(opt_cluster_peer_rm(c, "plain") == OPT_ENOTFOUND);
	CHECK_RC(opt_sync_remote_rm(y, "p3"));
	opt_cluster_free(c);
	CHECK_RC(opt_cluster_open(&c, s, y));
	CHECK(opt_cluster_npeers(c) == 1);
	CHECK(opt_cluster_replicas(c) == 1);
	CHECK_RC(opt_sync_remote_list(y, &v));
	CHECK(json_array_size(v) == 3);
	json_decref(v);
	opt_cluster_free(c);
	opt_sync_free(y);
	opt_store_free(s);
}

int main(void)
{
	int rc;

	if (fixture_start("cluster") < 0)
		return 1;
	RUN(placement_is_stable_and_distinct);
	RUN(join_moves_about_one_nth);
	RUN(leave_moves_only_its_collections);
	RUN(configuration);
	rc = DONE();
	rm_tree(root);
	return rc;
}
