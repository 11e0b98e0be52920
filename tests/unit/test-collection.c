/* test-collection.c - trees and diaries through transactions, the value
 * limit, transaction documents and checkpoints. */
#include "harness.h"
#include "fixture.h"
#include "block.h"
#include "btree.h"
#include "chain.h"
#include "collection.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "store.h"
#include "txn.h"
#include "util.h"
#include "verify.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- random numbers (seeded, re-runnable with OPT_TEST_SEED) ---- */




/* ---- the scratch directory ---- */




static struct opt_store *new_store(const char *rel)
{
	struct opt_store *s = NULL;

	CHECK_RC(opt_store_create(&s, at(rel), NULL));
	return s;
}

static json_t *J(const char *text)
{
	json_t *v = NULL;

	if (opt_json_parse(&v, text, strlen(text)) < 0)
		printf("# bad JSON in the test: %s\n", text);
	return v;
}

static int verify_ok(struct opt_store *s, const char *name)
{
	struct opt_verify_result vr;
	int rc = opt_verify_collection(s, name, NULL, NULL, NULL, &vr);

	if (rc < 0)
		printf("# verify '%s': %s\n", name, opt_error_last());
	return rc == 0;
}

static long head_rev(struct opt_store *s, const char *name)
{
	struct opt_snap *h = NULL;
	long r = -1;

	if (opt_snap_head(&h, s, name) == 0)
		r = opt_snap_rev(h);
	opt_error_clear();
	opt_snap_free(h);
	return r;
}

/* Number of entries of the tree at snap, by a full scan. */
static long scan_count(struct opt_snap *snap)
{
	struct opt_btree_cursor *c = NULL;
	const json_t *k, *v;
	long n = 0;
	int rc;

	if (opt_tree_range(snap, NULL, &c) < 0)
		return -1;
	while ((rc = opt_btree_cursor_next(c, &k, &v)) == 1)
		n++;
	opt_btree_cursor_free(c);
	return rc < 0 ? -1 : n;
}

/* ---- a tree against a model ---- */

#define NKEYS 300
#define MAXOPS 20
#define MAXBATCH 32

enum { OP_PUT, OP_DEL, OP_MANY };

struct op {
	int kind;
	int n;
	int keys[MAXBATCH];
	long values[MAXBATCH];
};

struct script {
	struct op ops[MAXOPS];
	int nops;
	int calls;
	int capacity;
};

static int script_fn(struct opt_txn *x, void *arg)
{
	struct script *sc = arg;
	int i, j, rc = 0;

	sc->calls++;
	if ((rc = opt_tree_init(x, sc->capacity)) < 0)
		return rc;
	for (i = 0; i < sc->nops && rc == 0; i++) {
		struct op *o = &sc->ops[i];
		json_t *keys[MAXBATCH], *vals[MAXBATCH];
		for (j = 0; j < o->n; j++) {
			keys[j] = json_integer(o->keys[j]);
			vals[j] = json_pack("{s:I,s:s}", "v", (json_int_t)o->values[j], "pad", "....");
		}
		if (o->kind == OP_PUT)
			rc = opt_tree_put(x, keys[0], vals[0]);
		else if (o->kind == OP_DEL)
			rc = opt_tree_del(x, keys[0], NULL);
		else
			rc = opt_tree_put_many(x, (const json_t *const *)keys, (const json_t *const *)vals, (size_t)o->n);
		for (j = 0; j < o->n; j++) {
			json_decref(keys[j]);
			json_decref(vals[j]);
		}
	}
	return rc;
}

/* Check the tree at snap against the model (present[k]: value[k]). */
static int check_tree(struct opt_snap *snap, const int *present, const long *value, int full)
{
	size_t n = 0;
	long want = 0;
	int k, bad = 0;

	for (k = 0; k < NKEYS; k++)
		want += present[k];
	if (opt_tree_count(snap, &n) < 0 || (long)n != want) {
		printf("# rev %ld: header count %zu, model %ld\n", opt_snap_rev(snap), n, want);
		bad++;
	}
	if (!full)
		return bad == 0;
	for (k = 0; k < NKEYS; k++) {
		json_t *key = json_integer(k), *v = NULL;
		int rc = opt_tree_get(snap, key, &v);
		if (present[k] ? rc != 0 || json_integer_value(json_object_get(v, "v")) != value[k] : rc != OPT_ENOTFOUND) {
			if (bad++ < 5)
				printf("# rev %ld: key %d: rc %d, want %s\n", opt_snap_rev(snap), k, rc,
				       present[k] ? "present" : "absent");
		}
		json_decref(key);
		json_decref(v);
	}
	if (scan_count(snap) != want) {
		printf("# rev %ld: scan finds %ld entries, model %ld\n", opt_snap_rev(snap), scan_count(snap), want);
		bad++;
	}
	{
		/* the tree's own check agrees with the model */
		struct opt_source src = opt_snap_source(snap);
		char hid[OPT_ID_LEN + 1];
		size_t c = 0;
		opt_collection_header_id(opt_snap_name(snap), hid);
		if (opt_btree_check(&src, hid, NULL, &c) < 0 || (long)c != want) {
			printf("# rev %ld: btree check: %s (%zu entries)\n", opt_snap_rev(snap), opt_error_last(), c);
			bad++;
		}
	}
	return bad == 0;
}

/* A random range of the model against a cursor. */
static int check_range(struct opt_snap *snap, const int *present, const long *value)
{
	struct opt_btree_range r;
	struct opt_btree_cursor *c = NULL;
	json_t *lo = json_integer(rn(NKEYS + 10) - 5), *hi = json_integer(rn(NKEYS + 10) - 5);
	const json_t *k, *v;
	int want[NKEYS], nwant = 0, i, got = 0, bad = 0, rc;
	long l = (long)json_integer_value(lo), h = (long)json_integer_value(hi);

	memset(&r, 0, sizeof(r));
	r.lo = rn(5) ? lo : NULL;
	r.hi = rn(5) ? hi : NULL;
	r.lo_incl = (int)rn(2);
	r.hi_incl = (int)rn(2);
	r.reverse = (int)rn(2);
	for (i = 0; i < NKEYS; i++) {
		if (!present[i])
			continue;
		if (r.lo && (i < l || (i == l && !r.lo_incl)))
			continue;
		if (r.hi && (i > h || (i == h && !r.hi_incl)))
			continue;
		want[nwant++] = i;
	}
	if (opt_tree_range(snap, &r, &c) < 0) {
		bad++;
		goto done;
	}
	while ((rc = opt_btree_cursor_next(c, &k, &v)) == 1) {
		int expect = got < nwant ? want[r.reverse ? nwant - 1 - got : got] : -1;
		if (json_integer_value(k) != expect || json_integer_value(json_object_get(v, "v")) != value[expect < 0 ? 0 : expect])
			bad++;
		got++;
	}
	if (rc < 0 || got != nwant)
		bad++;
	if (bad)
		printf("# range lo %ld%s hi %ld%s reverse %d: got %d of %d entries, %d wrong\n", r.lo ? l : -999,
		       r.lo_incl ? "]" : ")", r.hi ? h : 999, r.hi_incl ? "]" : ")", r.reverse, got, nwant, bad);
done:
	opt_btree_cursor_free(c);
	json_decref(lo);
	json_decref(hi);
	return bad == 0;
}

#define NTXN 60

TEST(tree_against_model)
{
	struct opt_store *s = new_store("tree/.opt");
	struct opt_txn_opts o = { OPT_TYPE_TREE, "script", 0, 0 };
	struct opt_txn_result res;
	static int present[NKEYS];
	static long value[NKEYS];
	static struct script sc;
	long counts[NTXN + 2];
	long rev = 0, r;
	int t, i, j;

	memset(present, 0, sizeof(present));
	memset(counts, 0, sizeof(counts));
	for (t = 0; t < NTXN; t++) {
		struct opt_snap *snap = NULL;
		memset(&sc, 0, sizeof(sc));
		sc.capacity = 4;
		sc.nops = 1 + (int)rn(MAXOPS);
		for (i = 0; i < sc.nops; i++) {
			struct op *op = &sc.ops[i];
			unsigned w = rn(8);
			op->kind = w < 4 ? OP_PUT : w < 6 ? OP_DEL : OP_MANY;
			op->n = op->kind == OP_MANY ? 1 + (int)rn(MAXBATCH) : 1;
			for (j = 0; j < op->n; j++) {
				/* batches repeat keys sometimes */
				op->keys[j] = (int)rn(NKEYS);
				if (j > 0 && rn(6) == 0)
					op->keys[j] = op->keys[rn((unsigned)j)];
				op->values[j] = (long)rn(1000000);
			}
		}
		if (t == NTXN / 2) {
			/* delete everything, then put_many into the empty tree */
			sc.nops = 0;
			for (i = 0; i < NKEYS && sc.nops < MAXOPS - 1; i++)
				if (present[i]) {
					sc.ops[sc.nops].kind = OP_DEL;
					sc.ops[sc.nops].n = 1;
					sc.ops[sc.nops].keys[0] = i;
					sc.nops++;
				}
		}
		CHECK_RC(opt_txn_run(s, "t", script_fn, &sc, &o, &res));
		CHECK(sc.calls == 1);
		/* the model */
		{
			int changed = 0;
			for (i = 0; i < sc.nops; i++) {
				struct op *op = &sc.ops[i];
				for (j = 0; j < op->n; j++) {
					int k = op->keys[j];
					if (op->kind == OP_DEL) {
						changed |= present[k];
						present[k] = 0;
					} else {
						present[k] = 1;
						value[k] = op->values[j];
						changed = 1;
					}
				}
			}
			if (changed || t == 0) {
				CHECK(res.committed == 1);
				rev++;
			} else {
				CHECK(res.committed == 0);
			}
			CHECK(res.rev == rev);
		}
		CHECK_RC(opt_snap_open(&snap, s, "t", 0));
		if (snap) {
			CHECK(opt_snap_rev(snap) == rev);
			CHECK(check_tree(snap, present, value, t % 6 == 0 || t == NTXN - 1 || t == NTXN / 2));
			for (i = 0; i < 3; i++)
				CHECK(check_range(snap, present, value));
		}
		counts[rev] = 0;
		for (i = 0; i < NKEYS; i++)
			counts[rev] += present[i];
		opt_snap_free(snap);
	}
	/* older revisions keep their counts */
	for (r = 1; r <= rev; r++) {
		struct opt_snap *snap = NULL;
		size_t n = 0;
		CHECK_RC(opt_snap_open(&snap, s, "t", r));
		CHECK(snap && opt_tree_count(snap, &n) == 0 && (long)n == counts[r]);
		CHECK(snap && scan_count(snap) == counts[r]);
		opt_snap_free(snap);
	}
	CHECK(verify_ok(s, "t"));
	{
		struct opt_snap *snap = NULL;
		const char *kind = NULL;
		CHECK_RC(opt_snap_open(&snap, s, "t", 0));
		if (snap) {
			CHECK_RC(opt_coll_kind(snap, &kind));
			CHECK(kind && strcmp(kind, "tree") == 0);
			CHECK(opt_coll_expect(snap, OPT_TYPE_TREE) == 0);
			CHECK(opt_coll_expect(snap, OPT_TYPE_DIARY) == OPT_EINVAL);
		}
		opt_snap_free(snap);
	}
	opt_store_free(s);
}

/* Keys equal as keys (1 and 1.0) but not as JSON. */
struct eq {
	const char *batch;   /* JSON array of [key, value] */
	const char *del;     /* a key to delete, or NULL */
	const char *put;     /* a key to put, or NULL */
};

static int eq_fn(struct opt_txn *x, void *arg)
{
	struct eq *e = arg;
	json_t *b = e->batch ? J(e->batch) : NULL;
	const json_t *keys[16], *vals[16];
	size_t i, n = json_array_size(b);
	int rc;

	if ((rc = opt_tree_init(x, 0)) < 0)
		goto done;
	for (i = 0; i < n && i < 16; i++) {
		keys[i] = json_array_get(json_array_get(b, i), 0);
		vals[i] = json_array_get(json_array_get(b, i), 1);
	}
	if (n && (rc = opt_tree_put_many(x, keys, vals, n)) < 0)
		goto done;
	if (e->del) {
		json_t *k = J(e->del);
		rc = opt_tree_del(x, k, NULL);
		json_decref(k);
		if (rc < 0)
			goto done;
	}
	if (e->put) {
		json_t *k = J(e->put), *v = json_string("put");
		rc = opt_tree_put(x, k, v);
		json_decref(k);
		json_decref(v);
	}
done:
	json_decref(b);
	return rc;
}

static int put_keys_fn(struct opt_txn *x, void *arg)
{
	long n = *(long *)arg, i;
	int rc = opt_tree_init(x, 4);

	for (i = 0; i < n && rc == 0; i++) {
		char k[24];
		json_t *key, *val;
		snprintf(k, sizeof(k), "k%05ld", i);
		key = json_string(k);
		val = json_pack("{s:I,s:s}", "i", (json_int_t)i, "pad", "some padding to make leaves bigger");
		rc = opt_tree_put(x, key, val);
		json_decref(key);
		json_decref(val);
	}
	return rc;
}

/* Lookups that keep leaves' bytes (opt_snap_cache_bytes, as opt-tree get
 * does) beside a range cursor on the same snapshot: the lookups evict
 * what the cursor's leaf came with, and the cursor reads on correctly. */
TEST(lookups_beside_a_range)
{
	struct opt_store *s = new_store("lookrange/.opt");
	struct opt_txn_opts o = { OPT_TYPE_TREE, "put", 0, 0 };
	struct opt_txn_result res;
	struct opt_snap *snap = NULL;
	struct opt_btree_cursor *c = NULL;
	const char *k, *v;
	size_t kl, vl;
	long n = 400, i, got = 0;
	json_t *val = NULL, *key;
	char want[24];

	CHECK_RC(opt_txn_run(s, "lr", put_keys_fn, &n, &o, &res));
	/* a fresh handle: the writer's keeps what it wrote parsed */
	opt_store_free(s);
	s = NULL;
	CHECK_RC(opt_store_open(&s, at("lookrange/.opt")));
	CHECK_RC(opt_snap_head(&snap, s, "lr"));
	opt_snap_cache_bytes(snap, 2000);  /* a few leaves */
	key = json_string("k00000");
	CHECK_RC(opt_tree_get(snap, key, &val));  /* the first leaf's index kept */
	json_decref(val);
	json_decref(key);
	CHECK_RC(opt_tree_range(snap, NULL, &c));
	for (i = 0; c && i < 2 * n; i++) {
		int rc, j;
		char kk[24];
		/* the next entry's leaf is looked up first (its index is kept
		 * with its bytes), then lookups far away evict it */
		snprintf(kk, sizeof(kk), "k%05ld", (got + 1) % n);
		key = json_string(kk);
		CHECK_RC(opt_tree_get(snap, key, &val));
		json_decref(val);
		json_decref(key);
		rc = opt_btree_cursor_next_text(c, &k, &kl, &v, &vl);
		if (rc != 1)
			break;
		snprintf(want, sizeof(want), "\"k%05ld\"", got);
		CHECK(kl == strlen(want) && memcmp(k, want, kl) == 0);
		for (j = 1; j <= 8; j++) {
			snprintf(kk, sizeof(kk), "k%05ld", (got + 50 * j) % n);
			key = json_string(kk);
			CHECK_RC(opt_tree_get(snap, key, &val));
			json_decref(val);
			json_decref(key);
		}
		got++;
	}
	CHECK(got == n);
	opt_btree_cursor_free(c);
	opt_snap_free(snap);
	opt_store_free(s);
}

TEST(tree_count_with_equal_keys)
{
	struct opt_store *s = new_store("eqkeys/.opt");
	struct opt_txn_opts o = { OPT_TYPE_TREE, "eq", 0, 0 };
	struct opt_txn_result res;
	static const struct {
		struct eq e;
		long want;
	} steps[] = {
		{ { "[[5, \"five\"]]", NULL, NULL }, 1 },
		/* a batch on a non-empty tree: 1.0 and 1 are one key */
		{ { "[[1.0, \"a\"], [1, \"b\"]]", NULL, NULL }, 2 },
		{ { "[[2, \"a\"], [2.0, \"b\"], [2, \"c\"], [2.00, \"d\"]]", NULL, NULL }, 3 },
		{ { "[[[1, \"x\"], 1], [[1.0, \"x\"], 2]]", NULL, NULL }, 4 },
		/* replacing and deleting through the other spelling */
		{ { NULL, NULL, "5.0" }, 4 },
		{ { NULL, "1.0", NULL }, 3 },
		{ { NULL, "7.5", NULL }, 3 },
	};
	size_t i;

	for (i = 0; i < sizeof(steps) / sizeof(*steps); i++) {
		struct opt_snap *snap = NULL;
		size_t n = 0;
		CHECK_RC(opt_txn_run(s, "eq", eq_fn, (void *)&steps[i].e, &o, &res));
		CHECK_RC(opt_snap_open(&snap, s, "eq", 0));
		if (!snap)
			break;
		CHECK_RC(opt_tree_count(snap, &n));
		if ((long)n != steps[i].want || scan_count(snap) != steps[i].want)
			printf("# step %zu: header count %zu, scan %ld, want %ld\n", i + 1, n, scan_count(snap),
			       steps[i].want);
		CHECK((long)n == steps[i].want);
		CHECK(scan_count(snap) == steps[i].want);
		opt_snap_free(snap);
	}
	{
		struct opt_snap *snap = NULL;
		json_t *k = json_integer(2), *v = NULL;
		CHECK_RC(opt_snap_open(&snap, s, "eq", 0));
		CHECK(snap && opt_tree_get(snap, k, &v) == 0 && json_is_string(v) &&
		      strcmp(json_string_value(v), "d") == 0); /* the last of the batch */
		json_decref(v);
		json_decref(k);
		opt_snap_free(snap);
	}
	CHECK(verify_ok(s, "eq"));
	opt_store_free(s);
}

TEST(tree_errors)
{
	struct opt_store *s = new_store("treeerr/.opt");
	struct opt_txn_opts o = { OPT_TYPE_TREE, "eq", 0, 0 };
	struct opt_txn_result res;
	struct eq bad_key = { NULL, NULL, "{\"a\":1}" }, bad_del = { NULL, "true", NULL },
		  bad_batch = { "[[1, 1], [null, 2]]", NULL, NULL }, ok = { "[[1, 1]]", NULL, NULL };
	struct opt_snap *snap = NULL;
	json_t *k = J("{}"), *v = NULL;

	CHECK(opt_txn_run(s, "e", eq_fn, &bad_key, &o, &res) == OPT_EINVAL);
	CHECK(head_rev(s, "e") == -1);
	CHECK_RC(opt_txn_run(s, "e", eq_fn, &ok, &o, &res));
	CHECK(opt_txn_run(s, "e", eq_fn, &bad_del, &o, &res) == OPT_EINVAL);
	CHECK(opt_txn_run(s, "e", eq_fn, &bad_batch, &o, &res) == OPT_EINVAL);
	CHECK(head_rev(s, "e") == 1);
	CHECK_RC(opt_snap_open(&snap, s, "e", 0));
	if (snap) {
		CHECK(opt_tree_get(snap, k, &v) == OPT_EINVAL);
		CHECK(v == NULL);
	}
	opt_snap_free(snap);
	json_decref(k);
	opt_store_free(s);
}

/* ---- diaries ---- */

struct appends {
	int from, n;
};

static int diary_fn(struct opt_txn *x, void *arg)
{
	struct appends *a = arg;
	int i, rc;

	if ((rc = opt_diary_init(x)) < 0)
		return rc;
	for (i = a->from; i < a->from + a->n; i++) {
		json_t *e = json_pack("{s:i,s:s}", "i", i, "text", "an entry");
		rc = opt_diary_append(x, e);
		json_decref(e);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Read the diary at snap through its chain: 0 if it holds from..to-1 in
 * order (forward) and backward too. */
static int check_diary(struct opt_snap *snap, int to)
{
	struct opt_source src = opt_snap_source(snap);
	struct opt_chain_iter *it = NULL;
	char cid[OPT_ID_MAX + 1];
	const json_t *e;
	size_t n = 0, cn = 0;
	int i = 0, rc, bad = 0;

	if (opt_diary_chain(snap, cid) < 0 || opt_diary_count(snap, &n) < 0)
		return 0;
	if ((long)n != to) {
		printf("# diary count %zu, want %d\n", n, to);
		bad++;
	}
	if (opt_chain_count(&src, cid, &cn) < 0 || (long)cn != to)
		bad++;
	if (opt_chain_iter_open(&it, &src, cid, 1) < 0)
		return 0;
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		if (json_integer_value(json_object_get(e, "i")) != i)
			bad++;
		i++;
	}
	opt_chain_iter_free(it);
	if (rc < 0 || i != to)
		bad++;
	it = NULL;
	if (opt_chain_iter_open(&it, &src, cid, 0) < 0)
		return 0;
	i = to;
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		i--;
		if (json_integer_value(json_object_get(e, "i")) != i)
			bad++;
	}
	opt_chain_iter_free(it);
	if (rc < 0 || i != 0)
		bad++;
	return bad == 0;
}

TEST(diary)
{
	struct opt_store *s = new_store("diary/.opt");
	struct opt_txn_opts o = { OPT_TYPE_DIARY, "append", 0, 0 };
	struct opt_txn_result res;
	static const int sizes[] = { 1, 0, 31, 1, 33, 64, 5 };
	int from = 0;
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		struct appends a = { from, sizes[i] };
		struct opt_snap *snap = NULL;
		CHECK_RC(opt_txn_run(s, "d", diary_fn, &a, &o, &res));
		/* an empty append to an existing diary commits nothing */
		CHECK(res.committed == (sizes[i] > 0 || i == 0));
		from += sizes[i];
		CHECK_RC(opt_snap_open(&snap, s, "d", 0));
		CHECK(snap && check_diary(snap, from));
		opt_snap_free(snap);
	}
	/* older revisions hold what they held */
	{
		long r;
		for (r = 1; r <= head_rev(s, "d"); r++) {
			struct opt_snap *snap = NULL;
			size_t n = 0;
			CHECK_RC(opt_snap_open(&snap, s, "d", r));
			CHECK(snap && opt_diary_count(snap, &n) == 0);
			CHECK(snap && check_diary(snap, (int)n));
			opt_snap_free(snap);
		}
		CHECK(head_rev(s, "d") == (long)sizeof(sizes) / (long)sizeof(*sizes) - 1);
	}
	/* kind checks */
	{
		struct opt_snap *snap = NULL;
		const char *kind = NULL;
		char cid[OPT_ID_MAX + 1];
		CHECK_RC(opt_snap_open(&snap, s, "d", 0));
		if (snap) {
			CHECK_RC(opt_coll_kind(snap, &kind));
			CHECK(kind && strcmp(kind, "diary") == 0);
			CHECK(opt_coll_expect(snap, OPT_TYPE_TREE) == OPT_EINVAL);
			CHECK(strstr(opt_error_last(), "is a diary collection, not a tree collection") != NULL);
		}
		opt_snap_free(snap);
		/* a tree has no diary chain */
		{
			struct opt_txn_opts to = { OPT_TYPE_TREE, "t", 0, 0 };
			struct eq e = { "[[1, 1]]", NULL, NULL };
			CHECK_RC(opt_txn_run(s, "notdiary", eq_fn, &e, &to, &res));
			snap = NULL;
			CHECK_RC(opt_snap_open(&snap, s, "notdiary", 0));
			CHECK(snap && opt_diary_chain(snap, cid) == OPT_EINTEGRITY);
			opt_snap_free(snap);
			/* and a diary function on a tree is refused by type */
			CHECK(opt_txn_run(s, "notdiary", diary_fn, &(struct appends){ 0, 1 }, &o, &res) == OPT_EINVAL);
		}
	}
	CHECK(verify_ok(s, "d"));
	opt_store_free(s);
}

/* The diary iterator: both directions, a position and going on after it
 * on a later revision; the count a transaction sees. */
struct count_seen {
	int n;
	long count;
};

static int count_fn(struct opt_txn *x, void *arg)
{
	struct count_seen *a = arg;
	struct appends ap = { 1000, a->n };
	int rc;

	if ((rc = diary_fn(x, &ap)) < 0)
		return rc;
	return opt_diary_txn_count(x, &a->count);
}

TEST(diary_iter)
{
	struct opt_store *s = new_store("diary-iter/.opt");
	struct opt_txn_opts o = { OPT_TYPE_DIARY, "append", 0, 0 };
	struct opt_txn_result res;
	struct opt_diary_iter *it = NULL;
	struct opt_diary_pos pos;
	struct opt_snap *snap = NULL;
	struct count_seen cs = { 3, 0 };
	const json_t *e;
	int i, rc;

	CHECK_RC(opt_txn_run(s, "d", diary_fn, &(struct appends){ 0, 40 }, &o, &res));
	CHECK_RC(opt_snap_open(&snap, s, "d", 0));
	/* newest first */
	CHECK_RC(opt_diary_iter_open(&it, snap, 0));
	for (i = 39; it && (rc = opt_diary_iter_next(it, &e)) == 1; i--) {
		CHECK(json_integer_value(json_object_get(e, "i")) == i);
		if (i == 35)
			CHECK_RC(opt_diary_iter_pos(it, &pos));
	}
	CHECK(i == -1);
	opt_diary_iter_free(it);
	/* forward from after entry 35: 36..39 */
	it = NULL;
	CHECK_RC(opt_diary_iter_open_after(&it, snap, &pos));
	for (i = 36; it && (rc = opt_diary_iter_next(it, &e)) == 1; i++)
		CHECK(json_integer_value(json_object_get(e, "i")) == i);
	CHECK(i == 40);
	opt_diary_iter_free(it);
	opt_snap_free(snap);
	/* a transaction sees the count after its own appends */
	CHECK_RC(opt_txn_run(s, "d", count_fn, &cs, &o, &res));
	CHECK(cs.count == 43);
	/* a later revision goes on after the position: 36..39, 1000..1002 */
	snap = NULL;
	CHECK_RC(opt_snap_open(&snap, s, "d", 0));
	it = NULL;
	CHECK_RC(opt_diary_iter_open_after(&it, snap, &pos));
	for (i = 0; it && (rc = opt_diary_iter_next(it, &e)) == 1; i++)
		CHECK(json_integer_value(json_object_get(e, "i")) == (i < 4 ? 36 + i : 1000 + i - 4));
	CHECK(i == 7);
	opt_diary_iter_free(it);
	opt_snap_free(snap);
	/* a tree is no diary: no iterator */
	{
		struct opt_txn_opts to = { OPT_TYPE_TREE, "t", 0, 0 };
		struct eq q = { "[[1, 1]]", NULL, NULL };
		long depth = -1;
		json_t *cap = NULL;
		CHECK_RC(opt_txn_run(s, "t", eq_fn, &q, &to, &res));
		snap = NULL;
		it = NULL;
		CHECK_RC(opt_snap_open(&snap, s, "t", 0));
		CHECK(snap && opt_diary_iter_open(&it, snap, 1) == OPT_EINTEGRITY && !it);
		/* and its shape: one leaf, the default capacity */
		CHECK(snap && opt_tree_shape(snap, &depth, &cap) == 0);
		CHECK(depth == 1 && json_integer_value(cap) == 64);
		json_decref(cap);
		opt_snap_free(snap);
	}
	opt_store_free(s);
}

/* The whole diary as stored text: the iterator's entries, canonical,
 * in order, across blocks and revisions; a tree is refused. */
TEST(diary_text)
{
	struct opt_store *s = new_store("diary-text/.opt");
	struct opt_txn_opts o = { OPT_TYPE_DIARY, "append", 0, 0 };
	struct opt_txn_result res;
	struct opt_diary_iter *it = NULL;
	struct opt_diary_text *tx = NULL;
	struct opt_snap *snap = NULL;
	const json_t *e;
	const char *t;
	size_t tl, n = 0;
	int ri = 0, rt = 0;

	CHECK_RC(opt_txn_run(s, "d", diary_fn, &(struct appends){ 0, 70 }, &o, &res));
	CHECK_RC(opt_txn_run(s, "d", diary_fn, &(struct appends){ 500, 3 }, &o, &res));
	CHECK_RC(opt_snap_open(&snap, s, "d", 0));
	CHECK_RC(opt_diary_iter_open(&it, snap, 1));
	CHECK_RC(opt_diary_text_open(&tx, snap));
	while (it && tx) {
		char *c = NULL;
		size_t cl = 0;
		ri = opt_diary_iter_next(it, &e);
		rt = opt_diary_text_next(tx, &t, &tl);
		CHECK(ri == rt);
		if (ri != 1 || rt != 1)
			break;
		CHECK(opt_json_canon(&c, &cl, e) == 0);
		CHECK(c && cl == tl && memcmp(c, t, tl) == 0);
		free(c);
		n++;
	}
	CHECK(ri == 0 && rt == 0 && n == 73);
	opt_diary_iter_free(it);
	opt_diary_text_free(tx);
	opt_snap_free(snap);
	{
		struct opt_txn_opts to = { OPT_TYPE_TREE, "t", 0, 0 };
		struct eq q = { "[[1, 1]]", NULL, NULL };
		CHECK_RC(opt_txn_run(s, "t", eq_fn, &q, &to, &res));
		snap = NULL;
		tx = NULL;
		CHECK_RC(opt_snap_open(&snap, s, "t", 0));
		CHECK(snap && opt_diary_text_open(&tx, snap) == OPT_EINTEGRITY && !tx);
		opt_snap_free(snap);
	}
	opt_store_free(s);
}

/* ---- the value limit ---- */

static json_t *string_of(size_t n, char c)
{
	char *buf = malloc(n + 1);
	json_t *v;

	if (!buf)
		return NULL;
	memset(buf, c, n);
	buf[n] = '\0';
	v = json_stringn(buf, n);
	free(buf);
	return v;
}

TEST(value_limit)
{
	json_t *v;

	/* a string's canonical JSON is its characters and two quotes */
	v = string_of(OPT_VALUE_MAX - 2, 'a');
	CHECK(opt_value_check(v, "the value") == 0);
	json_decref(v);
	v = string_of(OPT_VALUE_MAX - 1, 'a');
	CHECK(opt_value_check(v, "the value") == OPT_EINVAL);
	CHECK(strstr(opt_error_last(), "the value is 1048577 bytes") != NULL);
	json_decref(v);
	/* escapes count as written: '"' is two bytes */
	v = string_of((OPT_VALUE_MAX - 2) / 2, '"');
	CHECK(opt_value_check(v, "the entry") == 0);
	json_decref(v);
	v = string_of((OPT_VALUE_MAX - 2) / 2 + 1, '"');
	CHECK(opt_value_check(v, "the entry") == OPT_EINVAL);
	json_decref(v);
	/* an object: {"a":"..."} is 8 bytes more than the characters */
	{
		json_t *s = string_of(OPT_VALUE_MAX - 8, 'x');
		v = json_pack("{s:o}", "a", s);
		CHECK(opt_value_check(v, "the value") == 0);
		json_decref(v);
		s = string_of(OPT_VALUE_MAX - 7, 'x');
		v = json_pack("{s:o}", "a", s);
		CHECK(opt_value_check(v, "the value") == OPT_EINVAL);
		json_decref(v);
	}
	/* small values */
	v = json_integer(1);
	CHECK(opt_value_check(v, "v") == 0);
	json_decref(v);
	CHECK(opt_value_check(json_null(), "v") == 0);

	/* the same limit in transaction documents */
	{
		json_t *doc;
		v = string_of(OPT_VALUE_MAX - 2, 'a');
		doc = json_pack("{s:{s:[{s:s,s:s,s:O}]}}", "collections", "t", "type", "put", "key", "k", "value", v);
		CHECK(opt_txdoc_check(doc) == 0);
		json_decref(doc);
		doc = json_pack("{s:{s:[{s:s,s:O}]}}", "collections", "d", "type", "append", "entry", v);
		CHECK(opt_txdoc_check(doc) == 0);
		json_decref(doc);
		json_decref(v);
		v = string_of(OPT_VALUE_MAX - 1, 'a');
		doc = json_pack("{s:{s:[{s:s,s:s,s:O}]}}", "collections", "t", "type", "put", "key", "k", "value", v);
		CHECK(opt_txdoc_check(doc) == OPT_EINVAL);
		json_decref(doc);
		doc = json_pack("{s:{s:[{s:s,s:O}]}}", "collections", "d", "type", "append", "entry", v);
		CHECK(opt_txdoc_check(doc) == OPT_EINVAL);
		json_decref(doc);
		json_decref(v);
	}
}

TEST(key_limit)
{
	json_t *k, *doc;

	k = string_of(OPT_KEY_MAX - 2, 'a');
	CHECK(opt_key_check(k) == 0);
	json_decref(k);
	k = string_of(OPT_KEY_MAX - 1, 'a');
	CHECK(opt_key_check(k) == OPT_EINVAL);
	CHECK(strcmp(opt_error_last(), "the key is 4097 bytes; the limit is 4096 bytes of canonical JSON") == 0);
	json_decref(k);
	/* canonical bytes: a control character is six (\u0001) */
	k = string_of(682, 1);
	CHECK(opt_key_check(k) == 0);
	json_decref(k);
	k = string_of(683, 1);
	CHECK(opt_key_check(k) == OPT_EINVAL);
	json_decref(k);
	/* a composite key counts whole: [1,"..."] is 4 bytes more */
	k = json_pack("[i,o]", 1, string_of(OPT_KEY_MAX - 6, 'x'));
	CHECK(opt_key_check(k) == 0);
	json_decref(k);
	k = json_pack("[i,o]", 1, string_of(OPT_KEY_MAX - 5, 'x'));
	CHECK(opt_key_check(k) == OPT_EINVAL);
	/* in a transaction document too, for a put (a del may name any key) */
	doc = json_pack("{s:{s:[{s:s,s:O,s:i}]}}", "collections", "t", "type", "put", "key", k, "value", 1);
	CHECK(opt_txdoc_check(doc) == OPT_EINVAL);
	json_decref(doc);
	doc = json_pack("{s:{s:[{s:s,s:O}]}}", "collections", "t", "type", "del", "key", k);
	CHECK(opt_txdoc_check(doc) == 0);
	json_decref(doc);
	json_decref(k);
	CHECK(opt_key_check(json_null()) == OPT_EINVAL);
	k = json_real(1.5);
	CHECK(opt_key_check(k) == 0);
	json_decref(k);
}

/* ---- transaction documents ---- */

TEST(txdoc_check)
{
	static const char *good[] = {
		"{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": \"k\", \"value\": 1}]}}",
		"{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": [1, \"x\", [2.5]], \"value\": {\"deep\": [null]}},"
		" {\"type\": \"del\", \"key\": \"k\"}], \"b/c\": [{\"type\": \"append\", \"entry\": null}]}}",
		"{\"collections\": {\"d\": [{\"type\": \"append\", \"entry\": {\"x\": 1}}, {\"type\": \"append\", \"entry\": 2}]}}",
		"{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": -1.5e3, \"value\": null}]}}",
	};
	static const struct {
		const char *doc, *why;
	} bad[] = {
		{ "[]", "a transaction is an object" },
		{ "{}", "needs \"collections\"" },
		{ "{\"collections\": {}}", "needs \"collections\"" },
		{ "{\"collections\": []}", "needs \"collections\"" },
		{ "{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": 1, \"value\": 1}]}, \"extra\": 1}", "unknown member 'extra'" },
		{ "{\"collections\": {\"a\": {\"type\": \"put\"}}}", "non-empty array" },
		{ "{\"collections\": {\"a\": []}}", "non-empty array" },
		{ "{\"collections\": {\"a\": [1]}}", "an action is an object" },
		{ "{\"collections\": {\"a\": [{\"key\": 1, \"value\": 1}]}}", "an action is an object" },
		{ "{\"collections\": {\"a\": [{\"type\": 7, \"key\": 1, \"value\": 1}]}}", "an action is an object" },
		{ "{\"collections\": {\"a\": [{\"type\": \"upsert\", \"key\": 1, \"value\": 1}]}}", "unknown action type 'upsert'" },
		{ "{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": 1, \"value\": 1}, {\"type\": \"append\", \"entry\": 1}]}}",
		  "mixes tree actions" },
		{ "{\"collections\": {\"a\": [{\"type\": \"append\", \"entry\": 1}, {\"type\": \"del\", \"key\": 1}]}}",
		  "mixes tree actions" },
		{ "{\"collections\": {\"a\": [{\"type\": \"put\", \"value\": 1}]}}", "\"key\" must be" },
		{ "{\"collections\": {\"a\": [{\"type\": \"del\"}]}}", "\"key\" must be" },
		{ "{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": 1}]}}", "needs a \"value\"" },
		{ "{\"collections\": {\"a\": [{\"type\": \"append\"}]}}", "needs an \"entry\"" },
		{ "{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": {\"o\": 1}, \"value\": 1}]}}", "\"key\" must be" },
		{ "{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": true, \"value\": 1}]}}", "\"key\" must be" },
		{ "{\"collections\": {\"a\": [{\"type\": \"del\", \"key\": null}]}}", "\"key\" must be" },
		{ "{\"collections\": {\"a\": [{\"type\": \"del\", \"key\": [1, false]}]}}", "\"key\" must be" },
		{ "{\"collections\": {\"..\": [{\"type\": \"append\", \"entry\": 1}]}}", "invalid collection name" },
		{ "{\"collections\": {\"a/../b\": [{\"type\": \"append\", \"entry\": 1}]}}", "invalid collection name" },
		{ "{\"collections\": {\".x\": [{\"type\": \"append\", \"entry\": 1}]}}", "invalid collection name" },
		{ "{\"collections\": {\"x.lock\": [{\"type\": \"append\", \"entry\": 1}]}}", "invalid collection name" },
		{ "{\"collections\": {\"\": [{\"type\": \"append\", \"entry\": 1}]}}", "invalid collection name" },
		/* the second collection is the bad one */
		{ "{\"collections\": {\"a\": [{\"type\": \"append\", \"entry\": 1}], \"b\": [{\"type\": \"nope\"}]}}",
		  "collection 'b', action 1" },
	};
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(*good); i++) {
		json_t *d = J(good[i]);
		int rc = opt_txdoc_check(d);
		if (rc != 0)
			printf("# good document %zu refused: %s\n", i + 1, opt_error_last());
		CHECK(rc == 0);
		json_decref(d);
	}
	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		json_t *d = J(bad[i].doc);
		int rc = opt_txdoc_check(d);
		if (rc != OPT_EINVAL || !strstr(opt_error_last(), bad[i].why))
			printf("# bad document %zu: %d '%s' (want '%s')\n", i + 1, rc, rc ? opt_error_last() : "",
			       bad[i].why);
		CHECK(rc == OPT_EINVAL);
		CHECK(strstr(opt_error_last(), bad[i].why) != NULL);
		json_decref(d);
	}
	CHECK(opt_txdoc_check(NULL) == OPT_EINVAL);
	/* members of actions other than the documented ones */
	{
		json_t *d = J("{\"collections\": {\"a\": [{\"type\": \"put\", \"key\": 1, \"value\": 1, \"valeu\": 2}]}}");
		if (opt_txdoc_check(d) == 0)
			printf("# note: an action with an unknown member ('valeu') is accepted\n");
		json_decref(d);
	}
}

TEST(txdoc_run)
{
	struct opt_store *s = new_store("txdoc/.opt");
	json_t *doc, *out = NULL, *st = NULL;
	const char *trx;

	doc = J("{\"collections\": {\"users\": [{\"type\": \"put\", \"key\": \"alice\", \"value\": {\"age\": 30}},"
		" {\"type\": \"put\", \"key\": \"bob\", \"value\": 1}, {\"type\": \"del\", \"key\": \"bob\"},"
		" {\"type\": \"del\", \"key\": \"nobody\"}],"
		" \"events\": [{\"type\": \"append\", \"entry\": \"signup\"}, {\"type\": \"append\", \"entry\": {\"n\": 2}}]}}");
	CHECK_RC(opt_txdoc_run(s, doc, NULL, &out));
	json_decref(doc);
	/* {"trx": ID, "collections": {NAME: REV}} and nothing else */
	CHECK(json_is_object(out) && json_object_size(out) == 2);
	trx = json_string_value(json_object_get(out, "trx"));
	CHECK(trx && opt_id_valid(trx) && strlen(trx) == OPT_ID_LEN);
	{
		json_t *want = J("{\"users\": 1, \"events\": 1}");
		CHECK(json_equal(json_object_get(out, "collections"), want));
		json_decref(want);
	}
	if (trx) {
		CHECK_RC(opt_txn_status(s, trx, &st));
		CHECK(st && strcmp(json_string_value(json_object_get(st, "status")), "committed") == 0);
		json_decref(st);
	}
	json_decref(out);
	out = NULL;
	{
		struct opt_snap *snap = NULL;
		size_t n = 0;
		json_t *k = json_string("alice"), *v = NULL;
		const char *kind = NULL;
		CHECK_RC(opt_snap_open(&snap, s, "users", 0));
		if (snap) {
			CHECK(opt_coll_kind(snap, &kind) == 0 && strcmp(kind, "tree") == 0);
			CHECK(opt_tree_count(snap, &n) == 0 && n == 1);
			CHECK(opt_tree_get(snap, k, &v) == 0 && json_integer_value(json_object_get(v, "age")) == 30);
		}
		json_decref(v);
		json_decref(k);
		opt_snap_free(snap);
		snap = NULL;
		CHECK_RC(opt_snap_open(&snap, s, "events", 0));
		if (snap) {
			CHECK(opt_coll_kind(snap, &kind) == 0 && strcmp(kind, "diary") == 0);
			CHECK(opt_diary_count(snap, &n) == 0 && n == 2);
		}
		opt_snap_free(snap);
	}
	/* again: revisions 2 */
	doc = J("{\"collections\": {\"users\": [{\"type\": \"put\", \"key\": \"carol\", \"value\": 3}],"
		" \"events\": [{\"type\": \"append\", \"entry\": 3}]}}");
	CHECK_RC(opt_txdoc_run(s, doc, NULL, &out));
	json_decref(doc);
	{
		json_t *want = J("{\"users\": 2, \"events\": 2}");
		CHECK(out && json_equal(json_object_get(out, "collections"), want));
		json_decref(want);
	}
	json_decref(out);
	out = NULL;
	/* refused: a bad document, or the wrong kind; nothing is written */
	doc = J("{\"collections\": {\"users\": [{\"type\": \"append\", \"entry\": 1}], \"zzz\": [{\"type\": \"append\", \"entry\": 1}]}}");
	CHECK(opt_txdoc_run(s, doc, NULL, &out) == OPT_EINVAL);
	CHECK(out == NULL);
	json_decref(doc);
	doc = J("{\"collections\": {\"users\": [{\"type\": \"upsert\"}]}}");
	CHECK(opt_txdoc_run(s, doc, NULL, &out) == OPT_EINVAL);
	CHECK(out == NULL);
	json_decref(doc);
	CHECK(head_rev(s, "users") == 2);
	CHECK(head_rev(s, "events") == 2);
	CHECK(head_rev(s, "zzz") == -1);
	CHECK(verify_ok(s, "users") && verify_ok(s, "events"));
	opt_store_free(s);
}

/* ---- checkpoints ---- */

/* The log entries of collection name at revision rev (0: the latest),
 * oldest first: a new array. */
static json_t *log_of(struct opt_store *s, const char *name, long rev)
{
	struct opt_snap *snap = NULL;
	struct opt_chain_iter *it = NULL;
	struct opt_source src;
	char hid[OPT_ID_LEN + 1];
	const json_t *e;
	json_t *arr = json_array();
	int rc;

	if (opt_snap_open(&snap, s, name, rev) < 0)
		return arr;
	src = opt_snap_source(snap);
	opt_collection_header_id(name, hid);
	if (opt_chain_iter_open(&it, &src, hid, 1) == 0) {
		while ((rc = opt_chain_iter_next(it, &e)) == 1)
			json_array_append_new(arr, json_deep_copy(e));
		if (rc < 0)
			printf("# reading the log: %s\n", opt_error_last());
	}
	opt_chain_iter_free(it);
	opt_snap_free(snap);
	return arr;
}

TEST(checkpoint)
{
	struct opt_store *s = new_store("ckpt/.opt");
	struct opt_txn_opts o = { OPT_TYPE_TREE, "put", 0, 0 };
	struct opt_txn_result res;
	json_t *before, *after, *out = NULL;
	long r;
	size_t i;

	/* six revisions; the third a bulk load whose entry gets a log block
	 * of its own */
	for (r = 1; r <= 6; r++) {
		static struct script sc;
		memset(&sc, 0, sizeof(sc));
		sc.nops = 1;
		if (r == 3) {
			int j;
			sc.nops = 3;
			for (j = 0; j < 3; j++) {
				int q;
				sc.ops[j].kind = OP_MANY;
				sc.ops[j].n = MAXBATCH;
				for (q = 0; q < MAXBATCH; q++) {
					sc.ops[j].keys[q] = 100 + j * MAXBATCH + q;
					sc.ops[j].values[q] = q;
				}
			}
		} else {
			sc.ops[0].kind = OP_PUT;
			sc.ops[0].n = 1;
			sc.ops[0].keys[0] = (int)r;
			sc.ops[0].values[0] = r;
		}
		CHECK_RC(opt_txn_run(s, "ck", script_fn, &sc, &o, &res));
		CHECK(res.rev == r);
	}
	before = log_of(s, "ck", 0);
	CHECK(json_array_size(before) == 6);
	for (i = 0; i < json_array_size(before); i++)
		CHECK(json_object_get(json_array_get(before, i), "actions") != NULL);

	CHECK_RC(opt_checkpoint(s, "ck", 4, &out));
	{
		json_t *want = J("{\"collection\": \"ck\", \"rev\": 7, \"upto\": 4, \"pruned\": 4}");
		if (!json_equal(out, want)) {
			char *t = json_dumps(out, JSON_COMPACT);
			printf("# checkpoint gave %s\n", t ? t : "(null)");
			free(t);
		}
		CHECK(json_equal(out, want));
		json_decref(want);
	}
	json_decref(out);
	out = NULL;
	after = log_of(s, "ck", 0);
	CHECK(json_array_size(after) == 7);
	for (i = 0; i < json_array_size(after) && i < json_array_size(before); i++) {
		const json_t *a = json_array_get(after, i), *b = json_array_get(before, i);
		long rev = (long)json_integer_value(json_object_get(a, "rev"));
		CHECK(rev == (long)i + 1);
		/* actions gone up to 4, kept after; the hashes stay */
		CHECK((json_object_get(a, "actions") == NULL) == (rev <= 4));
		CHECK(json_equal(json_object_get(a, "actionsHash"), json_object_get(b, "actionsHash")));
		CHECK(json_equal(json_object_get(a, "hash"), json_object_get(b, "hash")));
		CHECK(json_equal(json_object_get(a, "sig"), json_object_get(b, "sig")));
		if (rev > 4)
			CHECK(json_equal(a, b));
	}
	{
		/* the checkpoint's own entry */
		const json_t *e = json_array_get(after, 6);
		json_t *want = J("[{\"type\": \"checkpoint\", \"upto\": 4, \"pruned\": 4}]");
		CHECK(e && json_equal(json_object_get(e, "actions"), want));
		json_decref(want);
	}
	json_decref(after);
	/* the history keeps its actions: revision 6 as it was */
	after = log_of(s, "ck", 6);
	CHECK(json_equal(after, before));
	json_decref(after);
	CHECK(verify_ok(s, "ck"));

	/* up to the latest (0): the rest, the first checkpoint's entry too */
	CHECK_RC(opt_checkpoint(s, "ck", 0, &out));
	CHECK(out && json_integer_value(json_object_get(out, "upto")) == 7);
	CHECK(out && json_integer_value(json_object_get(out, "pruned")) == 3);
	CHECK(out && json_integer_value(json_object_get(out, "rev")) == 8);
	json_decref(out);
	out = NULL;
	after = log_of(s, "ck", 0);
	CHECK(json_array_size(after) == 8);
	for (i = 0; i < json_array_size(after); i++)
		CHECK((json_object_get(json_array_get(after, i), "actions") == NULL) == (i < 7));
	json_decref(after);
	CHECK(verify_ok(s, "ck"));
	/* the data is untouched */
	{
		struct opt_snap *snap = NULL;
		size_t n = 0;
		CHECK_RC(opt_snap_open(&snap, s, "ck", 0));
		CHECK(snap && opt_tree_count(snap, &n) == 0 && n == 5 + 3 * MAXBATCH);
		CHECK(snap && scan_count(snap) == 5 + 3 * MAXBATCH);
		opt_snap_free(snap);
	}
	/* refused */
	CHECK(opt_checkpoint(s, "ck", 99, &out) == OPT_EINVAL);
	CHECK(out == NULL);
	CHECK(opt_checkpoint(s, "nothing", 0, &out) == OPT_ENOTFOUND);
	CHECK(head_rev(s, "nothing") == -1);
	CHECK(head_rev(s, "ck") == 8);
	/* and the collection goes on */
	{
		static struct script sc;
		memset(&sc, 0, sizeof(sc));
		sc.nops = 1;
		sc.ops[0].kind = OP_DEL;
		sc.ops[0].n = 1;
		sc.ops[0].keys[0] = 1;
		CHECK_RC(opt_txn_run(s, "ck", script_fn, &sc, &o, &res));
		CHECK(res.rev == 9);
		CHECK(verify_ok(s, "ck"));
	}
	json_decref(before);
	opt_store_free(s);
}

int main(void)
{
	int rc;

	if (fixture_start("collection") < 0)
		return 1;
	RUN(tree_against_model);
	RUN(lookups_beside_a_range);
	RUN(tree_count_with_equal_keys);
	RUN(tree_errors);
	RUN(diary);
	RUN(diary_iter);
	RUN(diary_text);
	RUN(value_limit);
	RUN(key_limit);
	RUN(txdoc_check);
	RUN(txdoc_run);
	RUN(checkpoint);
	rc = DONE();
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}
