/* test-txn.c - transactions: replay after a lost race, group commit,
 * multi-collection transactions and their recovery (docs/protocol.md). */
#include "harness.h"
#include "fixture.h"
#include "block.h"
#include "btree.h"
#include "collection.h"
#include "error.h"
#include "identity.h"
#include "json.h"
#include "log.h"
#include "store.h"
#include "txn.h"
#include "util.h"
#include "verify.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- the scratch directory ---- */




static struct opt_store *new_store(const char *rel)
{
	struct opt_store *s = NULL;

	CHECK_RC(opt_store_create(&s, at(rel), NULL));
	return s;
}

/* ---- transaction functions ---- */

/* Put key -> value in a tree (made when new). */
struct put {
	const char *key;
	long value;
	int calls;
	/* on the first call only: commit through another handle first */
	struct opt_store *other;
	const char *other_key;
	int always_other;  /* on every call */
	int fail;          /* give up with this code */
};

static int put_fn(struct opt_txn *x, void *arg)
{
	struct put *p = arg;
	json_t *k, *v;
	int rc;

	p->calls++;
	if (p->other && (p->calls == 1 || p->always_other)) {
		struct put q = { p->other_key, 100 + p->calls, 0, NULL, NULL, 0, 0 };
		struct opt_txn_opts o = { OPT_TYPE_TREE, "the other writer", 0, 0 };
		struct opt_txn_result res;
		if ((rc = opt_txn_run(p->other, opt_txn_collection(x), put_fn, &q, &o, &res)) < 0)
			return rc;
	}
	if (p->fail)
		return opt_error_set(p->fail, "the function gave up");
	if ((rc = opt_tree_init(x, 0)) < 0)
		return rc;
	k = json_string(p->key);
	v = json_integer(p->value);
	rc = opt_tree_put(x, k, v);
	json_decref(k);
	json_decref(v);
	return rc;
}

static int append_fn(struct opt_txn *x, void *arg)
{
	json_t *e = json_string(arg);
	int rc;

	if ((rc = opt_diary_init(x)) < 0) {
		json_decref(e);
		return rc;
	}
	rc = opt_diary_append(x, e);
	json_decref(e);
	return rc;
}

static int nothing_fn(struct opt_txn *x, void *arg)
{
	int *calls = arg;

	(void)x;
	(*calls)++;
	return 0;
}

static int put(struct opt_store *s, const char *name, const char *key, long value, struct opt_txn_result *res)
{
	struct put p = { key, value, 0, NULL, NULL, 0, 0 };
	struct opt_txn_opts o = { OPT_TYPE_TREE, "put", 0, 0 };
	struct opt_txn_result r;

	return opt_txn_run(s, name, put_fn, &p, &o, res ? res : &r);
}

/* The value of key in tree name as readers see it: -1 absent, -2 error. */
static long get(struct opt_store *s, const char *name, const char *key)
{
	struct opt_snap *snap = NULL;
	json_t *k = json_string(key), *v = NULL;
	long out = -2;
	int rc;

	if (opt_snap_open(&snap, s, name, 0) == 0) {
		rc = opt_tree_get(snap, k, &v);
		out = rc == 0 ? (long)json_integer_value(v) : rc == OPT_ENOTFOUND ? -1 : -2;
	}
	json_decref(v);
	json_decref(k);
	opt_snap_free(snap);
	return out;
}

static long count_of(struct opt_store *s, const char *name)
{
	struct opt_snap *snap = NULL;
	size_t n = 0;
	long out = -1;

	if (opt_snap_open(&snap, s, name, 0) == 0 && opt_tree_count(snap, &n) == 0)
		out = (long)n;
	opt_snap_free(snap);
	return out;
}

static long head_rev(struct opt_store *s, const char *name)
{
	struct opt_snap *h = NULL;
	long r = -1;

	if (opt_snap_head(&h, s, name) == 0)
		r = opt_snap_rev(h);
	opt_snap_free(h);
	return r;
}

static long open_rev(struct opt_store *s, const char *name)
{
	struct opt_snap *h = NULL;
	long r = -1;

	if (opt_snap_open(&h, s, name, 0) == 0)
		r = opt_snap_rev(h);
	opt_snap_free(h);
	return r;
}

/* The head's commit ID into out ("" when there is none). */
static void head_commit(struct opt_store *s, const char *name, char out[41])
{
	struct opt_snap *h = NULL;

	out[0] = '\0';
	if (opt_snap_head(&h, s, name) == 0)
		snprintf(out, 41, "%s", opt_snap_commit(h));
	opt_error_clear();
	opt_snap_free(h);
}

/* Trailer key of revision rev of name (raw: pending or not), copied. */
static void trailer_at(struct opt_store *s, const char *name, long rev, const char *key, char *out, size_t n)
{
	struct opt_snap *h = NULL, *p;

	out[0] = '\0';
	if (opt_snap_head(&h, s, name) < 0)
		return;
	while (h && opt_snap_rev(h) > rev) {
		if (opt_snap_parent(&p, h) < 0)
			p = NULL;
		opt_snap_free(h);
		h = p;
	}
	if (h && opt_snap_rev(h) == rev) {
		const char *v = strcmp(key, "Opt-Trx") == 0 ? opt_snap_trx(h) : opt_snap_trailer(h, key);
		snprintf(out, n, "%s", v ? v : "(none)");
	}
	opt_snap_free(h);
}

static int verify_ok(struct opt_store *s, const char *name)
{
	struct opt_verify_result vr;
	int rc = opt_verify_collection(s, name, NULL, NULL, NULL, &vr);

	if (rc < 0)
		printf("# verify '%s': %s\n", name, opt_error_last());
	return rc == 0;
}

static const char *status_of(struct opt_store *s, const char *trx, json_t **out)
{
	static char buf[32];

	*out = NULL;
	if (opt_txn_status(s, trx, out) < 0)
		return "(error)";
	snprintf(buf, sizeof(buf), "%s", json_string_value(json_object_get(*out, "status")));
	return buf;
}

/* ---- a pend made by hand ---- */

struct hctx {
	json_t *blocks;
	const char *hid;
};

static int hash_cb(const char *id, const json_t *block, void *arg)
{
	struct hctx *h = arg;
	char hex[65];
	const char *type;
	int rc;

	if (!block)
		return json_object_set_new(h->blocks, id, json_null());
	type = opt_block_type(block);
	if (type && strcmp(type, OPT_LOG_DATA_TYPE) == 0)
		return 0;
	if ((rc = opt_txn_block_hash(block, strcmp(id, h->hid) == 0, hex)) < 0)
		return rc;
	return json_object_set_new(h->blocks, id, json_string(hex));
}

static int sign_cb(void *ctx, const char *hash, char sig[129])
{
	return opt_identity_sign(ctx, hash, sig);
}

/* Commit by hand on the head of tree collection name what a coordinator
 * of transaction trx writes there: key -> value, a signed log entry with
 * the status, and the trailers; status "pending" (with expires and
 * primary_base) or "committed" (the decision on the primary). */
static int hand_commit(struct opt_store *s, const char *name, const char *trx, const char *status,
		       const char *primary, const char *cols, int64_t expires, const char *primary_base,
		       const char *key, long value, long *rev)
{
	struct opt_identity id;
	struct opt_snap *base = NULL;
	struct opt_tracker *t = NULL;
	struct opt_source src;
	struct opt_commit_info info;
	struct hctx hc;
	char hid[OPT_ID_LEN + 1], trailers[1024];
	json_t *k = json_string(key), *v = json_integer(value), *fields = NULL, *colarr = json_array();
	const json_t *h;
	int rc, replaced = 0;
	char *c, *save = NULL, colbuf[256];

	hc.blocks = json_object();
	opt_collection_header_id(name, hid);
	hc.hid = hid;
	if ((rc = opt_identity_get(&id, s, 1)) < 0 || (rc = opt_snap_head(&base, s, name)) < 0)
		goto done;
	src = opt_snap_source(base);
	if ((rc = opt_tracker_new(&t, &src)) < 0 ||
	    (rc = opt_btree_put(t, hid, k, v, &replaced)) < 0 ||
	    (rc = opt_tracker_get(t, hid, &h)) < 0)
		goto done;
	if (!replaced) {
		json_t *op = json_pack("[s,i,i,I]", "count", 0, 0, json_integer_value(json_object_get(h, "count")) + 1);
		rc = opt_tracker_update(t, hid, op);
		json_decref(op);
		if (rc < 0)
			goto done;
	}
	if ((rc = opt_tracker_foreach(t, hash_cb, &hc)) < 0)
		goto done;
	snprintf(colbuf, sizeof(colbuf), "%s", cols);
	for (c = strtok_r(colbuf, ",", &save); c; c = strtok_r(NULL, ",", &save))
		json_array_append_new(colarr, json_string(c));
	fields = json_pack("{s:s,s:[{s:s,s:O,s:O}],s:O,s:s,s:s,s:s,s:O}", "trx", trx, "actions", "type", "put", "key", k,
			   "value", v, "blocks", hc.blocks, "author", id.pub, "status", status, "primary", primary,
			   "collections", colarr);
	if (strcmp(status, "pending") == 0)
		json_object_set_new(fields, "expires", json_integer(expires));
	if ((rc = opt_log_append_signed(t, hid, fields, sign_cb, &id, NULL)) < 0)
		goto done;
	snprintf(trailers, sizeof(trailers), "Opt-Status: %s\nOpt-Primary: %s\nOpt-Collections: %s\n", status, primary,
		 cols);
	if (strcmp(status, "pending") == 0)
		snprintf(trailers + strlen(trailers), sizeof(trailers) - strlen(trailers),
			 "Opt-Expires: %lld\nOpt-Primary-Base: %s\n", (long long)expires,
			 primary_base && *primary_base ? primary_base : "none");
	info.trx = trx;
	info.summary = "made by hand";
	info.trailers = trailers;
	info.canon = NULL;
	rc = opt_store_commit(s, name, base, t, &info, rev);
done:
	json_decref(fields);
	json_decref(colarr);
	json_decref(hc.blocks);
	json_decref(k);
	json_decref(v);
	opt_tracker_free(t);
	opt_snap_free(base);
	return rc;
}

/* ---- tests ---- */

TEST(run_basic)
{
	struct opt_store *s = new_store("basic/.opt");
	struct opt_txn_result res;
	struct opt_txn_opts o = { OPT_TYPE_TREE, "put", 0, 0 };
	struct put p = { "k", 1, 0, NULL, NULL, 0, 0 };
	int calls = 0;

	CHECK_RC(opt_txn_run(s, "t", put_fn, &p, &o, &res));
	CHECK(res.committed == 1 && res.created == 1 && res.rev == 1 && res.attempts == 1);
	CHECK(opt_id_valid(res.trx) && strlen(res.trx) == OPT_ID_LEN);
	CHECK(p.calls == 1);
	CHECK(get(s, "t", "k") == 1);
	{
		char trx[OPT_ID_LEN + 8];
		trailer_at(s, "t", 1, "Opt-Trx", trx, sizeof(trx));
		CHECK(strcmp(trx, res.trx) == 0);
	}
	/* nothing to do: nothing committed */
	CHECK_RC(opt_txn_run(s, "t", nothing_fn, &calls, &o, &res));
	CHECK(calls == 1 && res.committed == 0 && res.rev == 1);
	CHECK(head_rev(s, "t") == 1);
	/* unless asked */
	o.allow_empty = 1;
	CHECK_RC(opt_txn_run(s, "t", nothing_fn, &calls, &o, &res));
	CHECK(calls == 2 && res.committed == 1 && res.rev == 2 && res.created == 0);
	o.allow_empty = 0;
	/* a function that gives up: its code, no retry, nothing written */
	p.fail = OPT_ENOTFOUND;
	p.calls = 0;
	CHECK(opt_txn_run(s, "t", put_fn, &p, &o, &res) == OPT_ENOTFOUND);
	CHECK(p.calls == 1);
	CHECK(head_rev(s, "t") == 2);
	/* the wrong type: refused before the function runs */
	o.type = OPT_TYPE_DIARY;
	calls = 0;
	CHECK(opt_txn_run(s, "t", nothing_fn, &calls, &o, &res) == OPT_EINVAL);
	CHECK(strstr(opt_error_last(), "is a tree collection, not a diary collection") != NULL);
	CHECK(calls == 0);
	/* a bad name */
	CHECK(opt_txn_run(s, "../t", nothing_fn, &calls, &o, &res) == OPT_EINVAL);
	CHECK(head_rev(s, "t") == 2);
	CHECK(verify_ok(s, "t"));
	opt_store_free(s);
}

/* A transaction's actions are JSON values or one text, never both: an
 * action recorded after the text is refused (it would be left out of the
 * log entry), as the text is after an action. */
static int mixed_fn(struct opt_txn *x, void *arg)
{
	static const char text[] = "[{\"key\":\"a\",\"type\":\"put\",\"value\":1}]";
	int *order = arg, rc;
	char *t = strdup(text);
	json_t *a = json_pack("{s:s,s:s,s:i}", "type", "put", "key", "b", "value", 2);

	if ((rc = opt_tree_init(x, 0)) < 0) {
		free(t);
		json_decref(a);
		return rc;
	}
	if (*order == 0) {
		if ((rc = opt_txn_actions_text(x, t, strlen(text), 1)) < 0) {
			json_decref(a);
			return rc;
		}
		return opt_txn_action(x, a);
	}
	if ((rc = opt_txn_action(x, a)) < 0) {
		free(t);
		return rc;
	}
	return opt_txn_actions_text(x, t, strlen(text), 1);
}

TEST(actions_json_or_text)
{
	struct opt_store *s = new_store("mixed/.opt");
	struct opt_txn_opts o = { OPT_TYPE_TREE, "mixed", 0, 0 };
	struct opt_txn_result res;
	int order;

	for (order = 0; order < 2; order++) {
		CHECK(opt_txn_run(s, "m", mixed_fn, &order, &o, &res) == OPT_EINVAL);
		CHECK(strstr(opt_error_last(), "either JSON values or one text") != NULL);
		CHECK(head_rev(s, "m") == -1);
	}
	opt_store_free(s);
}

TEST(run_replays_after_a_lost_race)
{
	struct opt_store *s = new_store("replay/.opt"), *s2 = NULL;
	struct opt_txn_result res;
	struct opt_txn_opts o = { OPT_TYPE_TREE, "mine", 0, 0 };
	struct put p = { "mine", 7, 0, NULL, "other", 0, 0 };
	char trx[OPT_ID_LEN + 8];

	CHECK_RC(put(s, "r", "seed", 1, NULL));
	CHECK_RC(opt_store_open(&s2, at("replay/.opt")));
	p.other = s2;
	CHECK_RC(opt_txn_run(s, "r", put_fn, &p, &o, &res));
	/* the first call lost to the other writer; the replay won */
	CHECK(p.calls == 2);
	CHECK(res.attempts == 2);
	CHECK(res.committed == 1 && res.created == 0);
	CHECK(res.rev == 3);
	CHECK(get(s, "r", "seed") == 1);
	CHECK(get(s, "r", "other") == 101);
	CHECK(get(s, "r", "mine") == 7);
	CHECK(count_of(s, "r") == 3);
	CHECK(get(s2, "r", "mine") == 7);
	trailer_at(s, "r", 2, "Opt-Trx", trx, sizeof(trx));
	CHECK(strcmp(trx, res.trx) != 0);
	trailer_at(s, "r", 3, "Opt-Trx", trx, sizeof(trx));
	CHECK(strcmp(trx, res.trx) == 0);
	CHECK(verify_ok(s, "r"));

	/* a writer that always loses gives up at the busy timeout */
	{
		struct put q = { "never", 1, 0, s2, "other", 1, 0 };
		int64_t t0 = opt_now_ms();
		int rc;
		o.busy_timeout_ms = 300;
		rc = opt_txn_run(s, "r", put_fn, &q, &o, &res);
		CHECK(rc == OPT_EBUSY);
		CHECK(strstr(opt_error_last(), "busy") != NULL);
		CHECK(q.calls >= 2 && res.attempts == q.calls);
		CHECK(opt_now_ms() - t0 >= 300);
		CHECK(get(s, "r", "never") == -1);
		CHECK(get(s, "r", "other") == 100 + q.calls);
		CHECK(verify_ok(s, "r"));
	}
	opt_store_free(s2);
	opt_store_free(s);
}

/* Many writers of one collection in the same process, through separate
 * handles, interleaved by the nested commit of put_fn: each replays. */
TEST(run_creation_race)
{
	struct opt_store *s = new_store("create/.opt"), *s2 = NULL;
	struct opt_txn_result res;
	struct opt_txn_opts o = { OPT_TYPE_TREE, "mine", 0, 0 };
	struct put p = { "mine", 1, 0, NULL, "other", 0, 0 };

	CHECK_RC(opt_store_open(&s2, at("create/.opt")));
	p.other = s2;
	/* both create the collection: the other wins, this one replays on it */
	CHECK_RC(opt_txn_run(s, "new", put_fn, &p, &o, &res));
	CHECK(p.calls == 2 && res.attempts == 2);
	CHECK(res.rev == 2 && res.created == 0);
	CHECK(get(s, "new", "mine") == 1 && get(s, "new", "other") == 101);
	CHECK(count_of(s, "new") == 2);
	CHECK(verify_ok(s, "new"));
	opt_store_free(s2);
	opt_store_free(s);
}

#define NG 10

TEST(group)
{
	struct opt_store *s = new_store("group/.opt"), *s2 = NULL;
	struct opt_txn_group *g = NULL;
	struct opt_txn_opts o = { OPT_TYPE_TREE, "grouped", 0, 0 };
	struct put p[NG + 3];
	char keys[NG + 3][8];
	size_t i, idx;
	long base;

	CHECK_RC(put(s, "g", "seed", 0, NULL));
	CHECK_RC(opt_store_open(&s2, at("group/.opt")));
	CHECK_RC(opt_txn_group_new(&g, s, "g", &o));
	if (!g || !s2)
		goto done;
	base = head_rev(s, "g");
	for (i = 0; i < NG; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
		memset(&p[i], 0, sizeof(p[i]));
		p[i].key = keys[i];
		p[i].value = (long)i;
		CHECK_RC(opt_txn_group_add(g, put_fn, &p[i], &idx));
		CHECK(idx == i);
	}
	CHECK(opt_txn_group_size(g) == NG);
	/* a staged function that fails is not staged; the group goes on */
	{
		struct put bad = { "bad", 1, 0, NULL, NULL, 0, OPT_EINVAL };
		CHECK(opt_txn_group_add(g, put_fn, &bad, &idx) == OPT_EINVAL);
		CHECK(opt_txn_group_size(g) == NG);
	}
	/* nothing is visible to others before the flush, and no result */
	CHECK(head_rev(s2, "g") == base);
	CHECK(opt_txn_group_result(g, 0) == NULL);
	CHECK(opt_txn_group_flush(g) == NG);
	CHECK(head_rev(s2, "g") == base + NG);
	for (i = 0; i < NG; i++) {
		const struct opt_txn_result *r = opt_txn_group_result(g, i);
		char trx[OPT_ID_LEN + 8];
		CHECK(r != NULL);
		if (!r)
			continue;
		CHECK(r->committed == 1);
		CHECK(r->rev == base + 1 + (long)i);
		CHECK(r->attempts == 1);
		trailer_at(s2, "g", r->rev, "Opt-Trx", trx, sizeof(trx));
		CHECK(strcmp(trx, r->trx) == 0);
		if (i > 0)
			CHECK(strcmp(r->trx, opt_txn_group_result(g, i - 1)->trx) != 0);
		CHECK(get(s2, "g", keys[i]) == (long)i);
		CHECK(p[i].calls == 1);
	}
	CHECK(opt_txn_group_result(g, NG) == NULL);
	CHECK(count_of(s2, "g") == NG + 1);
	opt_txn_group_clear(g);
	CHECK(opt_txn_group_size(g) == 0);
	CHECK(opt_txn_group_flush(g) == 0); /* empty: nothing */
	CHECK(head_rev(s2, "g") == base + NG);

	/* a conflict at the flush: every staged transaction is replayed */
	for (i = NG; i < NG + 3; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
		memset(&p[i], 0, sizeof(p[i]));
		p[i].key = keys[i];
		p[i].value = (long)i;
		CHECK_RC(opt_txn_group_add(g, put_fn, &p[i], NULL));
	}
	CHECK_RC(put(s2, "g", "between", 42, NULL));
	CHECK(opt_txn_group_flush(g) == 3);
	CHECK(opt_txn_group_flush(g) == 0); /* made durable once */
	for (i = 0; i < 3; i++) {
		const struct opt_txn_result *r = opt_txn_group_result(g, i);
		CHECK(r && r->committed == 1);
		CHECK(r && r->rev == base + NG + 2 + (long)i);
		CHECK(r && r->attempts == 2);
		CHECK(p[NG + i].calls == 2);
		CHECK(get(s2, "g", keys[NG + i]) == (long)(NG + i));
	}
	CHECK(get(s2, "g", "between") == 42);
	CHECK(head_rev(s2, "g") == base + NG + 4);
	CHECK(count_of(s2, "g") == NG + 5);
done:
	opt_txn_group_free(g);
	/* the store leaves group mode with the group */
	CHECK_RC(put(s, "elsewhere", "x", 1, NULL));
	CHECK(verify_ok(s, "g"));
	opt_store_free(s2);
	opt_store_free(s);
}

/* A flush that fails commits nothing, and its failure sticks: a flush
 * after it must not report the staged transactions committed (the store
 * had dropped them, so a second flush had nothing to write). */
TEST(group_failure_sticks)
{
	struct opt_store *s = new_store("gfail/.opt"), *s2 = NULL;
	struct opt_txn_group *g = NULL;
	struct opt_txn_opts o = { OPT_TYPE_TREE, "grouped", 100, 0 };
	struct put p[4] = { { "a", 1, 0, NULL, NULL, 0, 0 }, { "b", 2, 0, NULL, NULL, 0, 0 },
			    { "c", 3, 0, NULL, NULL, 0, 0 }, { "d", 4, 0, NULL, NULL, 0, 0 } };
	char lock[4200];
	FILE *f;
	long base;
	size_t i;

	CHECK_RC(put(s, "g", "seed", 0, NULL));
	CHECK_RC(opt_store_open(&s2, at("gfail/.opt")));
	CHECK_RC(opt_txn_group_new(&g, s, "g", &o));
	if (!g || !s2)
		goto done;
	base = head_rev(s, "g");
	/* another writer holds the ref's lock */
	snprintf(lock, sizeof(lock), "%s/refs/opt/collections/g.lock", at("gfail/.opt"));
	f = fopen(lock, "w");
	CHECK(f != NULL);
	if (f)
		fclose(f);
	for (i = 0; i < 3; i++)
		CHECK_RC(opt_txn_group_add(g, put_fn, &p[i], NULL));
	CHECK(opt_txn_group_flush(g) == OPT_EBUSY);
	CHECK(strstr(opt_error_last(), "its ref is locked") != NULL);
	for (i = 0; i < 3; i++)
		CHECK(opt_txn_group_result(g, i) == NULL);
	/* the failure sticks, even once the lock is gone */
	CHECK(opt_txn_group_flush(g) == OPT_EBUSY);
	unlink(lock);
	CHECK(opt_txn_group_flush(g) == OPT_EBUSY);
	CHECK(opt_txn_group_add(g, put_fn, &p[3], NULL) == OPT_EBUSY);
	CHECK(opt_txn_group_result(g, 0) == NULL);
	CHECK(head_rev(s2, "g") == base);
	CHECK(get(s2, "g", "a") == -1);
	/* the clear drops them; the group starts over */
	opt_txn_group_clear(g);
	CHECK(opt_txn_group_flush(g) == 0);
	CHECK(head_rev(s2, "g") == base);
	CHECK_RC(opt_txn_group_add(g, put_fn, &p[3], NULL));
	CHECK(opt_txn_group_flush(g) == 1);
	CHECK(opt_txn_group_result(g, 0) && opt_txn_group_result(g, 0)->rev == base + 1);
	CHECK(head_rev(s2, "g") == base + 1);
	CHECK(get(s2, "g", "d") == 4 && get(s2, "g", "a") == -1 && get(s2, "g", "c") == -1);

	/* a clear before the flush drops what is staged: never written */
	opt_txn_group_clear(g);
	CHECK_RC(opt_txn_group_add(g, put_fn, &p[0], NULL));
	opt_txn_group_clear(g);
	CHECK_RC(opt_txn_group_add(g, put_fn, &p[1], NULL));
	CHECK(opt_txn_group_flush(g) == 1);
	CHECK(head_rev(s2, "g") == base + 2);
	CHECK(get(s2, "g", "a") == -1 && get(s2, "g", "b") == 2);
done:
	opt_txn_group_free(g);
	CHECK(verify_ok(s, "g"));
	opt_store_free(s2);
	opt_store_free(s);
}

TEST(multi)
{
	struct opt_store *s = new_store("multi/.opt");
	struct put pa = { "ka", 1, 0, NULL, NULL, 0, 0 }, pc = { "kc", 3, 0, NULL, NULL, 0, 0 };
	/* given out of order: the primary is the last by name, "c" */
	struct opt_txn_part parts[3] = {
		{ "c", OPT_TYPE_TREE, put_fn, &pc, { 0 } },
		{ "a", OPT_TYPE_TREE, put_fn, &pa, { 0 } },
		{ "b", OPT_TYPE_DIARY, append_fn, (void *)"entry one", { 0 } },
	};
	char trx[OPT_ID_LEN + 1], buf[128];
	json_t *st = NULL;
	size_t i;

	CHECK_RC(opt_txn_multi(s, parts, 3, NULL, trx));
	CHECK(opt_id_valid(trx));
	for (i = 0; i < 3; i++) {
		CHECK(parts[i].res.committed == 1);
		CHECK(parts[i].res.rev == 1);
		CHECK(strcmp(parts[i].res.trx, trx) == 0);
	}
	CHECK(get(s, "a", "ka") == 1 && get(s, "c", "kc") == 3);
	{
		struct opt_snap *snap = NULL;
		size_t n = 0;
		CHECK_RC(opt_snap_open(&snap, s, "b", 0));
		CHECK(snap && opt_diary_count(snap, &n) == 0 && n == 1);
		opt_snap_free(snap);
	}
	CHECK(strcmp(status_of(s, trx, &st), "committed") == 0);
	{
		json_t *want = json_pack("[s,s,s]", "a", "b", "c");
		CHECK(json_equal(json_object_get(st, "collections"), want));
		CHECK(json_string_value(json_object_get(st, "primary")) &&
		      strcmp(json_string_value(json_object_get(st, "primary")), "c") == 0);
		CHECK(json_object_get(st, "expired") == NULL);
		json_decref(want);
	}
	json_decref(st);
	/* pends on a and b, the decision on c */
	trailer_at(s, "a", 1, "Opt-Status", buf, sizeof(buf));
	CHECK(strcmp(buf, "pending") == 0);
	trailer_at(s, "b", 1, "Opt-Primary", buf, sizeof(buf));
	CHECK(strcmp(buf, "c") == 0);
	trailer_at(s, "b", 1, "Opt-Collections", buf, sizeof(buf));
	CHECK(strcmp(buf, "a,b,c") == 0);
	trailer_at(s, "c", 1, "Opt-Status", buf, sizeof(buf));
	CHECK(strcmp(buf, "committed") == 0);
	trailer_at(s, "a", 1, "Opt-Primary-Base", buf, sizeof(buf));
	CHECK(strcmp(buf, "none") == 0); /* c did not exist */
	CHECK(open_rev(s, "a") == 1 && open_rev(s, "b") == 1);

	/* two collections, existing: revisions 2, with the primary's base */
	{
		char cbase[41];
		struct opt_txn_part two[2] = {
			{ "a", OPT_TYPE_TREE, put_fn, &pa, { 0 } },
			{ "c", OPT_TYPE_TREE, put_fn, &pc, { 0 } },
		};
		head_commit(s, "c", cbase);
		pa.value = 10;
		pc.value = 30;
		CHECK_RC(opt_txn_multi(s, two, 2, NULL, trx));
		CHECK(two[0].res.rev == 2 && two[1].res.rev == 2);
		CHECK(get(s, "a", "ka") == 10 && get(s, "c", "kc") == 30);
		trailer_at(s, "a", 2, "Opt-Primary-Base", buf, sizeof(buf));
		CHECK(strcmp(buf, cbase) == 0);
		CHECK(strcmp(status_of(s, trx, &st), "committed") == 0);
		json_decref(st);
	}
	/* one collection: a plain commit */
	{
		struct opt_txn_part one[1] = { { "a", OPT_TYPE_TREE, put_fn, &pa, { 0 } } };
		pa.value = 11;
		CHECK_RC(opt_txn_multi(s, one, 1, NULL, trx));
		CHECK(one[0].res.rev == 3 && one[0].res.committed);
		/* protocol.md: Opt-Primary and Opt-Collections are for
		 * multi-collection transactions only; Opt-Status absent means
		 * committed */
		trailer_at(s, "a", 3, "Opt-Status", buf, sizeof(buf));
		CHECK(strcmp(buf, "(none)") == 0 || strcmp(buf, "committed") == 0);
		trailer_at(s, "a", 3, "Opt-Collections", buf, sizeof(buf));
		if (strcmp(buf, "(none)") != 0)
			printf("# single-collection opt_txn_multi wrote 'Opt-Collections: %s'\n", buf);
		CHECK(strcmp(buf, "(none)") == 0);
		trailer_at(s, "a", 3, "Opt-Primary", buf, sizeof(buf));
		if (strcmp(buf, "(none)") != 0)
			printf("# single-collection opt_txn_multi wrote 'Opt-Primary: %s'\n", buf);
		CHECK(strcmp(buf, "(none)") == 0);
		CHECK(strcmp(status_of(s, trx, &st), "committed") == 0);
		json_decref(st);
	}
	CHECK(verify_ok(s, "a") && verify_ok(s, "b") && verify_ok(s, "c"));

	/* refused before anything is written */
	{
		char ca[41], cb[41], cc[41], after[41];
		json_t *names0 = NULL, *names1 = NULL;
		struct put pn = { "kn", 1, 0, NULL, NULL, 0, 0 }, pb = { "kb", 1, 0, NULL, NULL, 0, 0 };
		struct opt_txn_part bad[3] = {
			{ "new", OPT_TYPE_TREE, put_fn, &pn, { 0 } },
			{ "b", OPT_TYPE_TREE, put_fn, &pb, { 0 } },   /* b is a diary */
			{ "a", OPT_TYPE_TREE, put_fn, &pa, { 0 } },
		};
		struct opt_txn_part dup[2] = {
			{ "a", OPT_TYPE_TREE, put_fn, &pa, { 0 } },
			{ "a", OPT_TYPE_TREE, put_fn, &pa, { 0 } },
		};
		struct opt_txn_part badname[2] = {
			{ "a", OPT_TYPE_TREE, put_fn, &pa, { 0 } },
			{ "x/../y", OPT_TYPE_TREE, put_fn, &pa, { 0 } },
		};
		head_commit(s, "a", ca);
		head_commit(s, "b", cb);
		head_commit(s, "c", cc);
		CHECK_RC(opt_store_list(s, &names0));
		pa.calls = pn.calls = pb.calls = 0;
		CHECK(opt_txn_multi(s, bad, 3, NULL, trx) == OPT_EINVAL);
		CHECK(strstr(opt_error_last(), "'b' is a diary collection, not a tree collection") != NULL);
		CHECK(opt_txn_multi(s, dup, 2, NULL, trx) == OPT_EINVAL);
		CHECK(strstr(opt_error_last(), "named twice") != NULL);
		CHECK(opt_txn_multi(s, badname, 2, NULL, trx) == OPT_EINVAL);
		CHECK(opt_txn_multi(s, bad, 0, NULL, trx) == OPT_EINVAL);
		CHECK(pa.calls == 0 && pn.calls == 0 && pb.calls == 0);
		head_commit(s, "a", after);
		CHECK(strcmp(after, ca) == 0);
		head_commit(s, "b", after);
		CHECK(strcmp(after, cb) == 0);
		head_commit(s, "c", after);
		CHECK(strcmp(after, cc) == 0);
		CHECK_RC(opt_store_list(s, &names1));
		CHECK(json_equal(names0, names1));
		CHECK(head_rev(s, "new") == -1);
		json_decref(names0);
		json_decref(names1);
	}
	/* a function that fails after the pends: aborted and reverted */
	{
		struct put ok = { "kz", 1, 0, NULL, NULL, 0, 0 }, fails = { "kz", 1, 0, NULL, NULL, 0, OPT_ENOTFOUND };
		struct opt_txn_part two[2] = {
			{ "a", OPT_TYPE_TREE, put_fn, &ok, { 0 } },
			{ "c", OPT_TYPE_TREE, put_fn, &fails, { 0 } },
		};
		long ra = head_rev(s, "a");
		CHECK(opt_txn_multi(s, two, 2, NULL, trx) == OPT_ENOTFOUND);
		/* nothing of it is committed, whatever the pend did */
		if (two[0].res.committed || two[1].res.committed)
			printf("# aborted opt_txn_multi: parts report committed %d (rev %ld), %d (rev %ld)\n",
			       two[0].res.committed, two[0].res.rev, two[1].res.committed, two[1].res.rev);
		CHECK(two[0].res.committed == 0 && two[1].res.committed == 0);
		CHECK(get(s, "a", "kz") == -1);
		CHECK(strcmp(status_of(s, trx, &st), "aborted") == 0);
		json_decref(st);
		/* a holds the pend and its revert */
		CHECK(head_rev(s, "a") == ra + 2);
		trailer_at(s, "a", ra + 2, "Opt-Status", buf, sizeof(buf));
		CHECK(strcmp(buf, "aborted") == 0);
		CHECK(get(s, "a", "ka") == 11);
		CHECK(verify_ok(s, "a") && verify_ok(s, "c"));
	}
	/* unknown and invalid transaction IDs */
	CHECK(opt_txn_status(s, "aaaaaaaaaaaaaaaaaaaaaaaaaa", &st) == OPT_ENOTFOUND);
	CHECK(opt_txn_status(s, "NOT-AN-ID", &st) == OPT_EINVAL);
	opt_store_free(s);
}

TEST(recover_expired_pend)
{
	struct opt_store *s = new_store("recover/.opt");
	struct opt_txn_result res;
	char trx[OPT_ID_LEN + 1], bbase[41], buf[128];
	json_t *st = NULL;
	long rev = 0;

	setenv("OPT_TXN_TTL", "50", 1);
	CHECK_RC(put(s, "a", "base", 1, NULL));
	CHECK_RC(put(s, "b", "base", 1, NULL));
	head_commit(s, "b", bbase);
	/* a coordinator of a, b pended on a and died: its pend expired */
	opt_id_new(trx);
	CHECK_RC(hand_commit(s, "a", trx, "pending", "b", "a,b", opt_now_ms() - 1000, bbase, "k", 2, &rev));
	CHECK(rev == 2);
	CHECK(head_rev(s, "a") == 2);
	CHECK(open_rev(s, "a") == 1);
	CHECK(get(s, "a", "k") == -1);
	CHECK(strcmp(status_of(s, trx, &st), "pending") == 0);
	CHECK(json_is_true(json_object_get(st, "expired")));
	json_decref(st);
	/* the hand-made pend is a well-formed one */
	CHECK(verify_ok(s, "a"));

	/* the next writer of a aborts it on b, reverts a, then commits */
	CHECK_RC(put(s, "a", "x", 3, &res));
	CHECK(res.committed && res.rev == 4);
	CHECK(res.attempts == 2);
	CHECK(head_rev(s, "a") == 4);
	trailer_at(s, "a", 3, "Opt-Status", buf, sizeof(buf));
	CHECK(strcmp(buf, "aborted") == 0);
	trailer_at(s, "a", 3, "Opt-Trx", buf, sizeof(buf));
	CHECK(strcmp(buf, trx) == 0);
	CHECK(get(s, "a", "k") == -1);
	CHECK(get(s, "a", "x") == 3);
	CHECK(get(s, "a", "base") == 1);
	CHECK(count_of(s, "a") == 2);
	/* the abort record on the primary */
	CHECK(head_rev(s, "b") == 2);
	trailer_at(s, "b", 2, "Opt-Trx", buf, sizeof(buf));
	CHECK(strcmp(buf, trx) == 0);
	trailer_at(s, "b", 2, "Opt-Status", buf, sizeof(buf));
	CHECK(strcmp(buf, "aborted") == 0);
	CHECK(get(s, "b", "base") == 1 && count_of(s, "b") == 1);
	{
		int d = 0;
		CHECK_RC(opt_store_decision_at(s, "b", trx, bbase, &d));
		CHECK(d == -1);
	}
	CHECK(strcmp(status_of(s, trx, &st), "aborted") == 0);
	{
		json_t *want = json_pack("[s,s]", "a", "b");
		CHECK(json_equal(json_object_get(st, "collections"), want));
		json_decref(want);
	}
	json_decref(st);
	/* readers asking for the pending revision get its parent */
	{
		struct opt_snap *snap = NULL;
		CHECK_RC(opt_snap_open(&snap, s, "a", 2));
		CHECK(snap && opt_snap_rev(snap) == 1);
		opt_snap_free(snap);
	}
	CHECK(verify_ok(s, "a"));
	CHECK(verify_ok(s, "b"));
	/* the primary goes on as usual */
	CHECK_RC(put(s, "b", "more", 5, &res));
	CHECK(res.rev == 3 && get(s, "b", "more") == 5);
	unsetenv("OPT_TXN_TTL");
	opt_store_free(s);
}

TEST(recover_decided_pend)
{
	struct opt_store *s = new_store("decided/.opt");
	struct opt_txn_result res;
	char trx[OPT_ID_LEN + 1], dbase[41];
	json_t *st = NULL;
	long rev = 0;

	setenv("OPT_TXN_TTL", "50", 1);
	CHECK_RC(put(s, "c", "base", 1, NULL));
	CHECK_RC(put(s, "d", "base", 1, NULL));
	head_commit(s, "d", dbase);
	/* the coordinator pended on c and decided on d, then died: even
	 * past its expiry, the transaction is committed */
	opt_id_new(trx);
	CHECK_RC(hand_commit(s, "c", trx, "pending", "d", "c,d", opt_now_ms() - 1000, dbase, "k", 5, &rev));
	CHECK(rev == 2);
	CHECK(open_rev(s, "c") == 1);
	CHECK_RC(hand_commit(s, "d", trx, "committed", "d", "c,d", 0, NULL, "k", 6, &rev));
	CHECK(rev == 2);
	CHECK(open_rev(s, "c") == 2);
	CHECK(get(s, "c", "k") == 5);
	CHECK(get(s, "d", "k") == 6);
	CHECK(strcmp(status_of(s, trx, &st), "committed") == 0);
	json_decref(st);
	/* the writer builds on the pending revision */
	CHECK_RC(put(s, "c", "y", 7, &res));
	CHECK(res.committed && res.rev == 3 && res.attempts == 1);
	CHECK(open_rev(s, "c") == 3);
	CHECK(get(s, "c", "k") == 5 && get(s, "c", "y") == 7 && get(s, "c", "base") == 1);
	CHECK(count_of(s, "c") == 3);
	CHECK(head_rev(s, "d") == 2);
	CHECK(strcmp(status_of(s, trx, &st), "committed") == 0);
	json_decref(st);
	CHECK(verify_ok(s, "c"));
	CHECK(verify_ok(s, "d"));
	unsetenv("OPT_TXN_TTL");
	opt_store_free(s);
}

TEST(pend_in_flight)
{
	struct opt_store *s = new_store("flight/.opt");
	struct opt_txn_result res;
	struct opt_txn_opts o = { OPT_TYPE_TREE, "put", 200, 0 };
	struct put p = { "y", 1, 0, NULL, NULL, 0, 0 };
	char trx[OPT_ID_LEN + 1], fbase[41];
	json_t *st = NULL;
	long rev = 0;

	CHECK_RC(put(s, "e", "base", 1, NULL));
	CHECK_RC(put(s, "f", "base", 1, NULL));
	head_commit(s, "f", fbase);
	opt_id_new(trx);
	CHECK_RC(hand_commit(s, "e", trx, "pending", "f", "e,f", opt_now_ms() + 600000, fbase, "k", 5, &rev));
	/* undecided and not expired: writers wait (and give up), readers
	 * read the parent */
	CHECK(opt_txn_run(s, "e", put_fn, &p, &o, &res) == OPT_EBUSY);
	CHECK(p.calls == 0);
	CHECK(strstr(opt_error_last(), "in flight") != NULL);
	CHECK(head_rev(s, "e") == 2 && open_rev(s, "e") == 1);
	CHECK(strcmp(status_of(s, trx, &st), "pending") == 0);
	CHECK(json_object_get(st, "expired") == NULL);
	json_decref(st);
	/* once decided, the writer goes on */
	CHECK_RC(hand_commit(s, "f", trx, "committed", "f", "e,f", 0, NULL, "k", 6, &rev));
	CHECK_RC(opt_txn_run(s, "e", put_fn, &p, &o, &res));
	CHECK(res.rev == 3 && p.calls == 1);
	CHECK(get(s, "e", "k") == 5 && get(s, "e", "y") == 1);
	CHECK(verify_ok(s, "e") && verify_ok(s, "f"));
	opt_store_free(s);
}

/* A coordinator killed right after its pend (the library's fault point
 * txn:pended) on collections that did not exist: the next writer of the
 * pended one aborts the transaction on the primary (which gets a
 * placeholder header) and reverts the pend back to a bare header. */
TEST(recover_killed_coordinator)
{
	struct opt_store *s = new_store("killed/.opt");
	struct opt_txn_result res;
	char trx[OPT_ID_LEN + 8], buf[64];
	json_t *st = NULL;
	int status = 0;
	pid_t pid;

	if (!s)
		return;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		/* a fresh process: the fault point reads its setting once */
		setenv("OPT_TXN_TTL", "50", 1);
		setenv("OPT_TEST_CRASH", "txn:pended", 1);
		execl("/proc/self/exe", "test-txn", "--coordinator", at("killed/.opt"), (char *)NULL);
		_exit(127);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK(head_rev(s, "n1") == 1);
	CHECK(head_rev(s, "n2") == -1);
	CHECK(open_rev(s, "n1") == -1); /* no collection yet, for readers */
	trailer_at(s, "n1", 1, "Opt-Trx", trx, sizeof(trx));
	CHECK(strcmp(status_of(s, trx, &st), "pending") == 0);
	json_decref(st);
	opt_sleep_ms(80);
	setenv("OPT_TXN_TTL", "50", 1);
	CHECK_RC(put(s, "n1", "x", 2, &res));
	CHECK(res.rev == 3);
	trailer_at(s, "n1", 2, "Opt-Status", buf, sizeof(buf));
	CHECK(strcmp(buf, "aborted") == 0);
	CHECK(get(s, "n1", "k") == -1 && get(s, "n1", "x") == 2 && count_of(s, "n1") == 1);
	CHECK(head_rev(s, "n2") == 1);
	CHECK(strcmp(status_of(s, trx, &st), "aborted") == 0);
	json_decref(st);
	/* the placeholder primary becomes a diary with its first append */
	{
		struct opt_txn_opts o = { OPT_TYPE_DIARY, "append", 0, 0 };
		struct opt_snap *snap = NULL;
		size_t n = 0;
		CHECK_RC(opt_txn_run(s, "n2", append_fn, (void *)"first", &o, &res));
		CHECK(res.rev == 2);
		CHECK_RC(opt_snap_open(&snap, s, "n2", 0));
		CHECK(snap && opt_diary_count(snap, &n) == 0 && n == 1);
		opt_snap_free(snap);
	}
	CHECK(verify_ok(s, "n1") && verify_ok(s, "n2"));
	unsetenv("OPT_TXN_TTL");
	opt_store_free(s);
}

/* Put k -> 1, after another handle made the collection clash names with
 * ours ('p/q' for 'p/q/r'): between the coordinator's check and its
 * decision. */
struct clash {
	struct opt_store *other;
	const char *name;
};

static int clash_fn(struct opt_txn *x, void *arg)
{
	struct clash *c = arg;
	struct put p = { "k", 1, 0, NULL, NULL, 0, 0 };
	struct opt_txn_opts o = { OPT_TYPE_TREE, "the other writer", 0, 0 };
	struct opt_txn_result res;
	int rc;

	if (c->other && (rc = opt_txn_run(c->other, c->name, put_fn, &p, &o, &res)) < 0)
		return rc;
	c->other = NULL;
	return put_fn(x, &p);
}

/* A collection whose name clashes with the primary's ('p/q', primary
 * 'p/q/r', which does not exist yet) comes after the pends: the decision
 * can never be written, nor an abort record.  The transaction is aborted
 * (the clash stands for its abort record: collections are never
 * removed), the coordinator says why and reverts its pend, and the pended
 * collection takes writes again at once. */
TEST(multi_primary_clash)
{
	struct opt_store *s = new_store("clash/.opt"), *o2 = NULL;
	struct put p1 = { "k", 1, 0, NULL, NULL, 0, 0 };
	struct clash c = { NULL, "p/q" };
	struct opt_txn_part parts[2] = {
		{ "aa", OPT_TYPE_TREE, put_fn, &p1, { 0 } },
		{ "p/q/r", OPT_TYPE_TREE, clash_fn, &c, { 0 } },
	};
	struct opt_txn_result res;
	char trx[OPT_ID_LEN + 1], buf[64];
	json_t *st = NULL;
	int rc;

	if (!s)
		return;
	CHECK_RC(opt_store_open(&o2, at("clash/.opt")));
	CHECK_RC(put(s, "aa", "k", 0, NULL));
	c.other = o2;
	rc = opt_txn_multi(s, parts, 2, NULL, trx);
	CHECK(rc == OPT_EINVAL);
	if (!strstr(opt_error_last(), "collection 'p/q/r' cannot be created: collection 'p/q' exists"))
		printf("# the coordinator said: %s\n", opt_error_last());
	CHECK(strstr(opt_error_last(), "collection 'p/q/r' cannot be created: collection 'p/q' exists") != NULL);
	CHECK(!parts[0].res.committed && !parts[1].res.committed);
	CHECK(head_rev(s, "p/q/r") == -1 && get(s, "p/q", "k") == 1);
	/* the pend (rev 2) was reverted (rev 3) by the coordinator */
	CHECK(head_rev(s, "aa") == 3);
	trailer_at(s, "aa", 3, "Opt-Status", buf, sizeof(buf));
	CHECK(strcmp(buf, "aborted") == 0);
	CHECK(strcmp(status_of(s, trx, &st), "aborted") == 0);
	json_decref(st);
	CHECK(get(s, "aa", "k") == 0);
	setenv("OPT_BUSY_TIMEOUT", "2000", 1);
	CHECK_RC(put(s, "aa", "k", 2, &res));
	unsetenv("OPT_BUSY_TIMEOUT");
	CHECK(res.rev == 4 && get(s, "aa", "k") == 2);
	CHECK(verify_ok(s, "aa") && verify_ok(s, "p/q"));
	opt_store_free(o2);
	opt_store_free(s);
}

/* The coordinator of recover_killed_coordinator, in its own process. */
static int coordinator(const char *dir)
{
	struct opt_store *s = NULL;
	struct put p1 = { "k", 1, 0, NULL, NULL, 0, 0 };
	struct opt_txn_part parts[2] = {
		{ "n1", OPT_TYPE_TREE, put_fn, &p1, { 0 } },
		{ "n2", OPT_TYPE_DIARY, append_fn, (void *)"e", { 0 } },
	};
	char t[OPT_ID_LEN + 1];
	int rc;

	if (opt_store_open(&s, dir) < 0)
		return 2;
	rc = opt_txn_multi(s, parts, 2, NULL, t); /* killed before it returns */
	opt_store_free(s);
	return rc < 0 ? 3 : 0;
}

int main(int argc, char **argv)
{
	int rc;

	if (argc == 3 && strcmp(argv[1], "--coordinator") == 0)
		return coordinator(argv[2]);

	setenv("OPT_FSYNC", "0", 1);
	unsetenv("OPT_TXN_TTL");
	unsetenv("OPT_BUSY_TIMEOUT");
	opt_util_init();
	snprintf(root, sizeof(root), "/tmp/opt-test-txn-XXXXXX");
	if (!mkdtemp(root)) {
		printf("Bail out! cannot make a temporary directory: %s\n", strerror(errno));
		return 1;
	}
	RUN(run_basic);
	RUN(actions_json_or_text);
	RUN(run_replays_after_a_lost_race);
	RUN(run_creation_race);
	RUN(group);
	RUN(group_failure_sticks);
	RUN(multi);
	RUN(recover_expired_pend);
	RUN(recover_decided_pend);
	RUN(pend_in_flight);
	RUN(recover_killed_coordinator);
	RUN(multi_primary_clash);
	rc = DONE();
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}
