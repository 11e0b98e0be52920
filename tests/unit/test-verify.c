/* test-verify.c - verification since a verified base
 * (opt_verify_collection_since), the block diff it rests on
 * (opt_snap_diff) and the tree check by changed blocks
 * (opt_btree_check with a base): on random histories they agree with the full
 * verification, cost what changed, and refuse a base that is no ancestor. */
#include "harness.h"
#include "fixture.h"
#include "btree.h"
#include "collection.h"
#include "error.h"
#include "json.h"
#include "store.h"
#include "txn.h"
#include "util.h"
#include "verify.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

struct step {
	int cap;          /* the tree's capacity (first transaction) */
	unsigned from, n; /* put keys from..from+n-1 */
	unsigned del;     /* then delete this many random keys */
};

static json_t *key_of(unsigned k)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "k%07u", k);
	return json_string(buf);
}

static int step_fn(struct opt_txn *x, void *arg)
{
	struct step *st = arg;
	unsigned i;
	int rc;

	if ((rc = opt_tree_init(x, st->cap)) < 0)
		return rc;
	for (i = 0; i < st->n; i++) {
		json_t *k = key_of(st->from + i), *v = json_integer((json_int_t)rnd());
		rc = opt_tree_put(x, k, v);
		json_decref(k);
		json_decref(v);
		if (rc < 0)
			return rc;
	}
	for (i = 0; i < st->del; i++) {
		json_t *k = key_of(rn(st->from + st->n));
		rc = opt_tree_del(x, k, NULL);
		json_decref(k);
		if (rc < 0 && rc != OPT_ENOTFOUND)
			return rc;
	}
	opt_error_clear();
	return 0;
}

static int run_step(struct opt_store *s, struct step *st, char commit[41])
{
	struct opt_txn_opts o = { OPT_TYPE_TREE, "step", 0, 0 };
	struct opt_txn_result res;
	struct opt_snap *snap = NULL;
	int rc;

	if ((rc = opt_txn_run(s, "t", step_fn, st, &o, &res)) < 0)
		return rc;
	if ((rc = opt_snap_head(&snap, s, "t")) < 0)
		return rc;
	snprintf(commit, 41, "%s", opt_snap_commit(snap));
	opt_snap_free(snap);
	return 0;
}

static int diff_count(const char *id, char change, void *arg)
{
	(void)id;
	(void)change;
	(*(size_t *)arg)++;
	return 0;
}

TEST(since_agrees_with_full)
{
	struct opt_store *s = NULL;
	struct step st = { 8, 0, 3000, 0 };
	char c[41], prev[41], first[41];
	struct opt_verify_result vr;
	int i;

	CHECK_RC(opt_store_create(&s, at("agree"), NULL));
	if (!s)
		return;
	CHECK_RC(run_step(s, &st, first));
	memcpy(prev, first, sizeof(prev));
	for (i = 0; i < 40; i++) {
		st.from = rn(4000);
		st.n = rn(3) ? 1 + rn(3) : 1 + rn(200);  /* a revision each */
		st.del = rn(4) ? 0 : rn(300);
		CHECK_RC(run_step(s, &st, c));
		CHECK_RC(opt_verify_collection_since(s, "t", c, prev, NULL, NULL, &vr));
		CHECK(vr.rev == i + 2 && vr.entries == i + 2);
		CHECK_RC(opt_verify_collection(s, "t", c, NULL, NULL, NULL));
		memcpy(prev, c, sizeof(prev));
	}
	/* several revisions at once, and none */
	CHECK_RC(opt_verify_collection_since(s, "t", NULL, first, NULL, NULL, &vr));
	CHECK(vr.rev == 41);
	CHECK_RC(opt_verify_collection_since(s, "t", c, c, NULL, NULL, &vr));
	/* NULL base: the full verification */
	CHECK_RC(opt_verify_collection_since(s, "t", NULL, NULL, NULL, NULL, &vr));
	CHECK(vr.entries == 41);
	opt_store_free(s);
}

/* opt_btree_check of src since base, where only the blocks of changed
 * differ and base held base_count entries. */
static int check_since(const struct opt_source *src, const struct opt_source *base, const char *hid,
		       const json_t *changed, size_t base_count, size_t *count)
{
	struct opt_btree_check_opts o = OPT_BTREE_CHECK_OPTS_INIT;

	o.base = base;
	o.changed = changed;
	o.base_count = base_count;
	return opt_btree_check(src, hid, &o, count);
}

static int collect(const char *id, char change, void *arg)
{
	(void)change;
	return json_object_set_new(arg, id, json_true());
}

TEST(diff_and_tree_check_follow_the_change)
{
	struct opt_store *s = NULL;
	struct step st = { 8, 0, 3000, 0 };
	struct opt_snap *a = NULL, *b = NULL;
	char c1[41], c2[41], hid[OPT_ID_LEN + 1];
	size_t n = 0, count = 0, total = 0;

	CHECK_RC(opt_store_create(&s, at("diff"), NULL));
	if (!s)
		return;
	CHECK_RC(run_step(s, &st, c1));
	st.from = 1500;
	st.n = 1;
	CHECK_RC(run_step(s, &st, c2));
	CHECK_RC(opt_snap_open_commit(&a, s, "t", c1));
	CHECK_RC(opt_snap_open_commit(&b, s, "t", c2));
	if (!a || !b)
		goto done;
	CHECK_RC(opt_snap_diff(a, a, diff_count, &n));
	CHECK(n == 0);
	CHECK_RC(opt_snap_count(b, &total));
	/* one value changed: a leaf, the header, the log's tail */
	CHECK_RC(opt_snap_diff(a, b, diff_count, &n));
	CHECK(n >= 2 && n <= 4);
	CHECK(total > 300);
	{
		struct opt_source sa = opt_snap_source(a), sb = opt_snap_source(b);
		json_t *changed = json_object();
		opt_collection_header_id("t", hid);
		/* nothing changed: the count carries over */
		CHECK_RC(check_since(&sa, &sa, hid, changed, 3000, &count));
		CHECK(count == 3000);
		/* one value updated: the changed leaf is read, the count stays */
		CHECK_RC(opt_snap_diff(a, b, collect, changed));
		CHECK_RC(check_since(&sb, &sa, hid, changed, 3000, &count));
		CHECK(count == 3000);
		/* a wrong base count shows */
		CHECK_RC(check_since(&sb, &sa, hid, changed, 2999, &count));
		CHECK(count == 2999);
		json_decref(changed);
	}
	/* new keys (leaves split): the count follows */
	st.from = 10000;
	st.n = 40;
	CHECK_RC(run_step(s, &st, c2));
	opt_snap_free(b);
	b = NULL;
	CHECK_RC(opt_snap_open_commit(&b, s, "t", c2));
	if (b) {
		struct opt_source sa = opt_snap_source(a), sb = opt_snap_source(b);
		json_t *changed = json_object();
		CHECK_RC(opt_snap_diff(a, b, collect, changed));
		CHECK(json_object_size(changed) < total / 10);
		CHECK_RC(check_since(&sb, &sa, hid, changed, 3000, &count));
		CHECK(count == 3040);
		json_decref(changed);
	}
done:
	opt_snap_free(a);
	opt_snap_free(b);
	opt_store_free(s);
}

TEST(since_refuses_what_is_no_descendant)
{
	struct opt_store *s = NULL;
	struct step st = { 8, 0, 100, 0 };
	char c1[41], c2[41];

	CHECK_RC(opt_store_create(&s, at("refuse"), NULL));
	if (!s)
		return;
	CHECK_RC(run_step(s, &st, c1));
	st.from = 50;
	CHECK_RC(run_step(s, &st, c2));
	/* the base is newer than the head */
	CHECK(opt_verify_collection_since(s, "t", c1, c2, NULL, NULL, NULL) == OPT_EINTEGRITY);
	CHECK(strstr(opt_error_last(), "does not descend") != NULL);
	/* a base of the same revision that is another commit */
	CHECK(opt_verify_collection_since(s, "t", c2, "0123456789012345678901234567890123456789", NULL, NULL,
					  NULL) < 0);
	CHECK(opt_verify_collection_since(s, "t", c2, "nonsense", NULL, NULL, NULL) < 0);
	opt_store_free(s);
}

int main(void)
{
	int rc;

	if (fixture_start("verify") < 0)
		return 1;
	RUN(since_agrees_with_full);
	RUN(diff_and_tree_check_follow_the_change);
	RUN(since_refuses_what_is_no_descendant);
	rc = DONE();
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}
