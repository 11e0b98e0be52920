#include "harness.h"
#include "block.h"
#include "chain.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "util.h"

/* A committed store of blocks holding a collection header and its log. */
struct store {
	json_t *blocks;
	struct opt_source src;
	char hid[OPT_ID_MAX + 1];
	char hashes[101][65];   /* hashes[rev] as appended */
};

static int commit_cb(const char *id, const json_t *block, void *arg)
{
	if (block)
		json_object_set_new(arg, id, json_deep_copy(block));
	else
		json_object_del(arg, id);
	return 0;
}

static json_t *fields_for(long i)
{
	char trx[OPT_ID_LEN + 1], blk[OPT_ID_LEN + 1], hash[65];
	json_t *f;

	opt_id_new(trx);
	opt_id_new(blk);
	opt_sha256_hex(hash, &i, sizeof(i));
	f = json_pack("{s:s,s:[{s:s,s:I,s:s}],s:{s:s,s:n}}",
		      "trx", trx,
		      "actions", "type", "put", "key", (json_int_t)i, "value", "v",
		      "blocks", blk, hash, "aaaaaaaaaaaaaaaaaaaaaaaaaa");
	return f;
}

/* Build a log of n entries on a fresh header and commit it. */
static void store_build(struct store *s, long n)
{
	struct opt_tracker *t;
	json_t *h, *f, *e;
	char prev[65] = "";
	long i;

	memset(s, 0, sizeof(*s));
	s->blocks = json_object();
	s->src = opt_source_object(s->blocks);
	CHECK_RC(opt_tracker_new(&t, &s->src));
	CHECK_RC(opt_block_new(&h, NULL, "TRE", "coll"));
	snprintf(s->hid, sizeof(s->hid), "%s", opt_block_id(h));
	CHECK_RC(opt_tracker_insert_new(t, h));
	for (i = 1; i <= n; i++) {
		f = fields_for(i);
		e = NULL;
		CHECK_RC(opt_log_append(t, s->hid, f, &e));
		if (!e) {
			json_decref(f);
			break;
		}
		CHECK(json_integer_value(json_object_get(e, "rev")) == i);
		CHECK(strcmp(json_string_value(json_object_get(e, "prior")), prev) == 0);
		snprintf(prev, sizeof(prev), "%s", json_string_value(json_object_get(e, "hash")));
		if (i <= 100)
			snprintf(s->hashes[i], 65, "%s", json_string_value(json_object_get(e, "hash")));
		json_decref(f);
		json_decref(e);
	}
	opt_tracker_foreach(t, commit_cb, s->blocks);
	opt_tracker_free(t);
}

static void store_close(struct store *s)
{
	json_decref(s->blocks);
}

struct revs {
	long n, bad;
};

static int revs_cb(const json_t *e, void *arg)
{
	struct revs *r = arg;

	if (json_integer_value(json_object_get(e, "rev")) != ++r->n)
		r->bad++;
	return 0;
}

TEST(append_and_verify)
{
	struct store s;
	struct revs r = { 0, 0 };
	struct opt_chain_iter *it;
	const json_t *e, *h, *v;
	const char *id;
	long n = -1, expect = 100, rev;
	size_t cnt, nlgd = 0;
	int rc;

	store_build(&s, 100);
	CHECK_RC(opt_log_verify(&s.src, s.hid, &(struct opt_log_verify_opts){ .cb = revs_cb, .arg = &r }, &n));
	CHECK(n == 100 && r.n == 100 && r.bad == 0);
	CHECK_RC(opt_log_verify(&s.src, s.hid, NULL, NULL));
	CHECK_RC(opt_log_rev(&s.src, s.hid, &rev));
	CHECK(rev == 100);

	/* several blocks of type LGD in the header's collection */
	CHECK_RC(opt_chain_count(&s.src, s.hid, &cnt));
	CHECK(cnt == 100);
	json_object_foreach(s.blocks, id, v)
		if (strcmp(opt_block_type(v), OPT_LOG_DATA_TYPE) == 0) {
			nlgd++;
			CHECK(strcmp(opt_block_collection(v), "coll") == 0);
		}
	CHECK(nlgd == 4);
	h = json_object_get(s.blocks, s.hid);
	CHECK(strcmp(opt_block_type(h), "TRE") == 0);
	CHECK(json_object_size(h) == 6);  /* header, headId, tailId, logRev, logHash, logBig */

	/* newest first, prior links */
	if (opt_chain_iter_open(&it, &s.src, s.hid, 0) < 0) {
		CHECK(!"open the log");
		store_close(&s);
		return;
	}
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		CHECK(json_integer_value(json_object_get(e, "rev")) == expect);
		CHECK(strcmp(json_string_value(json_object_get(e, "hash")), s.hashes[expect]) == 0);
		CHECK(strcmp(json_string_value(json_object_get(e, "prior")),
			     expect > 1 ? s.hashes[expect - 1] : "") == 0);
		expect--;
	}
	CHECK(rc == 0 && expect == 0);
	opt_chain_iter_free(it);
	store_close(&s);
}

TEST(entry_hash_definition)
{
	struct store s;
	json_t *e = NULL, *copy, *f;
	struct opt_tracker *t;
	char h[65], want[65];

	store_build(&s, 3);
	CHECK_RC(opt_tracker_new(&t, &s.src));
	f = fields_for(4);
	json_object_set_new(f, "author", json_string("ed25519:abc"));
	json_object_set_new(f, "collections", json_pack("[s,s]", "a", "b"));
	json_object_set_new(f, "time", json_integer(1234));
	json_object_set_new(f, "rev", json_integer(4));
	CHECK_RC(opt_log_append(t, s.hid, f, &e));
	json_decref(f);
	CHECK(json_integer_value(json_object_get(e, "time")) == 1234);
	CHECK(strcmp(json_string_value(json_object_get(e, "prior")), s.hashes[3]) == 0);
	/* actionsHash is the hash of the actions; hash covers all but three */
	CHECK_RC(opt_json_hash(want, json_object_get(e, "actions")));
	CHECK(strcmp(json_string_value(json_object_get(e, "actionsHash")), want) == 0);
	copy = json_deep_copy(e);
	json_object_del(copy, "hash");
	json_object_del(copy, "actions");
	CHECK_RC(opt_json_hash(want, copy));
	CHECK(strcmp(json_string_value(json_object_get(e, "hash")), want) == 0);
	json_object_set_new(copy, "sig", json_string("anything"));
	json_object_set_new(copy, "hash", json_string("whatever"));
	CHECK_RC(opt_log_entry_hash(copy, h));
	CHECK(strcmp(h, want) == 0);
	json_object_set_new(copy, "author", json_string("ed25519:other"));
	CHECK_RC(opt_log_entry_hash(copy, h));
	CHECK(strcmp(h, want) != 0);
	json_decref(copy);
	CHECK(opt_log_entry_hash(json_array_get(json_object_get(e, "actions"), 0), h) == 0);
	{
		json_t *arr = json_array();
		CHECK(opt_log_entry_hash(arr, h) == OPT_EINVAL);
		json_decref(arr);
	}
	json_decref(e);
	{
		struct opt_source src = opt_tracker_source(t);
		json_t *last;
		long n;
		CHECK_RC(opt_log_verify(&src, s.hid, NULL, &n));
		CHECK(n == 4);
		CHECK_RC(opt_log_last(&src, s.hid, &last));
		CHECK(json_integer_value(json_object_get(last, "rev")) == 4);
		CHECK(strcmp(json_string_value(json_object_get(last, "author")), "ed25519:other") != 0);
		json_decref(last);
	}
	opt_tracker_free(t);
	store_close(&s);
}

/* Find the block and index of entry rev. */
static void find_rev(const struct opt_source *src, const char *hid, long rev, struct opt_chain_pos *pos)
{
	struct opt_chain_iter *it;
	const json_t *e;

	if (opt_chain_iter_open(&it, src, hid, 1) < 0) {
		CHECK(!"open the log");
		return;
	}
	while (opt_chain_iter_next(it, &e) == 1)
		if (json_integer_value(json_object_get(e, "rev")) == rev) {
			CHECK_RC(opt_chain_iter_pos(it, pos));
			break;
		}
	opt_chain_iter_free(it);
}

/* Replace entry rev by f(entry) (del: remove it) through a tracker op. */
static void tamper(struct opt_tracker *t, const char *hid, long rev,
		   void (*f)(json_t *entry), int del)
{
	struct opt_source src = opt_tracker_source(t);
	struct opt_chain_pos pos = { "", -1 };
	const json_t *b;
	json_t *e, *op;

	find_rev(&src, hid, rev, &pos);
	CHECK(pos.index >= 0);
	if (pos.index < 0)
		return;
	CHECK_RC(opt_tracker_get(t, pos.block_id, &b));
	e = json_deep_copy(json_array_get(json_object_get(b, "entries"), (size_t)pos.index));
	if (f)
		f(e);
	op = del ? json_pack("[s,I,i,[]]", "entries", (json_int_t)pos.index, 1)
		 : json_pack("[s,I,i,[o]]", "entries", (json_int_t)pos.index, 1, e);
	if (del)
		json_decref(e);
	CHECK_RC(opt_tracker_update(t, pos.block_id, op));
	json_decref(op);
}

static void change_actions(json_t *e)
{
	json_t *a = json_array_get(json_object_get(e, "actions"), 0);

	json_object_set_new(a, "value", json_string("evil"));
}

static void change_hash(json_t *e)
{
	json_object_set_new(e, "hash", json_string("0000000000000000000000000000000000000000000000000000000000000000"));
}

static void change_trx(json_t *e)
{
	json_object_set_new(e, "trx", json_string("evilevilevilevilevilevilev"));
}

static void change_trx_rehash(json_t *e)
{
	char h[65];

	change_trx(e);
	opt_log_entry_hash(e, h);
	json_object_set_new(e, "hash", json_string(h));
}

static void drop_actions(json_t *e)
{
	json_object_del(e, "actions");
}

static void change_sig(json_t *e)
{
	json_object_set_new(e, "sig", json_string("not checked here"));
}

static void change_rev(json_t *e)
{
	char h[65];

	json_object_set_new(e, "rev", json_integer(1000));
	opt_log_entry_hash(e, h);
	json_object_set_new(e, "hash", json_string(h));
}

/* Tamper with a fresh tracker over the store; verify; expect rc and a
 * message holding both words. */
static void expect_verify(struct store *s, long rev, void (*f)(json_t *), int del,
			  int want_rc, long want_n, const char *w1, const char *w2)
{
	struct opt_tracker *t;
	struct opt_source src;
	long n = -1;
	int rc;

	CHECK_RC(opt_tracker_new(&t, &s->src));
	src = opt_tracker_source(t);
	tamper(t, s->hid, rev, f, del);
	rc = opt_log_verify(&src, s->hid, NULL, &n);
	CHECK(rc == want_rc);
	CHECK(n == want_n);
	if (w1 && !strstr(opt_error_last(), w1))
		CHECK(!"message names the rev");
	if (w2 && !strstr(opt_error_last(), w2))
		CHECK(!"message names the problem");
	if (rc != want_rc || (w1 && !strstr(opt_error_last(), w1)))
		printf("# got %d: %s\n", rc, opt_error_last());
	opt_tracker_free(t);
}

TEST(tampering)
{
	struct store s;

	store_build(&s, 100);
	expect_verify(&s, 7, change_actions, 0, OPT_EINTEGRITY, 6, "rev 7:", "actionsHash");
	expect_verify(&s, 40, change_hash, 0, OPT_EINTEGRITY, 39, "rev 40:", "hash mismatch");
	expect_verify(&s, 1, change_hash, 0, OPT_EINTEGRITY, 0, "rev 1:", "hash mismatch");
	expect_verify(&s, 100, change_trx, 0, OPT_EINTEGRITY, 99, "rev 100:", "hash mismatch");
	expect_verify(&s, 33, change_trx_rehash, 0, OPT_EINTEGRITY, 33, "rev 34:", "prior");
	expect_verify(&s, 60, NULL, 1, OPT_EINTEGRITY, 59, "rev 61:", "expected rev 60");
	expect_verify(&s, 64, change_rev, 0, OPT_EINTEGRITY, 63, "rev 1000:", "expected rev 64");
	/* what is not covered */
	expect_verify(&s, 50, change_sig, 0, 0, 100, NULL, NULL);
	/* dropping the newest entry: the header's note of the last entry catches it */
	expect_verify(&s, 100, NULL, 1, OPT_EINTEGRITY, 99, "rev 99:", "header says the log ends at rev 100");
	store_close(&s);
}

TEST(checkpoint_prune)
{
	struct store s;
	struct opt_tracker *t;
	struct opt_source src;
	long rev, n;

	store_build(&s, 100);
	CHECK_RC(opt_tracker_new(&t, &s.src));
	src = opt_tracker_source(t);
	for (rev = 1; rev <= 70; rev++)
		tamper(t, s.hid, rev, drop_actions, 0);
	CHECK_RC(opt_log_verify(&src, s.hid, NULL, &n));
	CHECK(n == 100);
	/* a pruned entry can still be appended after */
	{
		json_t *f = fields_for(101), *e;
		CHECK_RC(opt_log_append(t, s.hid, f, &e));
		CHECK(json_integer_value(json_object_get(e, "rev")) == 101);
		json_decref(e);
		json_decref(f);
	}
	CHECK_RC(opt_log_verify(&src, s.hid, NULL, &n));
	CHECK(n == 101);
	opt_tracker_free(t);
	store_close(&s);
}

static int stop_at_10(const json_t *e, void *arg)
{
	(void)arg;
	if (json_integer_value(json_object_get(e, "rev")) == 10)
		return opt_error_set(OPT_EINTEGRITY, "block hash mismatch at rev 10");
	return 0;
}

TEST(callback_stops)
{
	struct store s;
	long n;

	store_build(&s, 20);
	CHECK(opt_log_verify(&s.src, s.hid, &(struct opt_log_verify_opts){ .cb = stop_at_10, .arg = NULL }, &n) == OPT_EINTEGRITY);
	CHECK(n == 9);
	CHECK(strcmp(opt_error_last(), "block hash mismatch at rev 10") == 0);
	store_close(&s);
}

static int count_cb(const char *id, const json_t *b, void *arg)
{
	(*(size_t *)arg)++;
	return 0;
}

TEST(empty_log_and_errors)
{
	json_t *blocks = json_object(), *h, *f, *e = NULL;
	struct opt_source src = opt_source_object(blocks), tsrc;
	struct opt_tracker *t;
	char hid[OPT_ID_MAX + 1];
	long rev = -1, n = -1;
	size_t changed = 0;

	CHECK_RC(opt_block_new(&h, NULL, "TRE", "coll"));
	snprintf(hid, sizeof(hid), "%s", opt_block_id(h));
	json_object_set_new(blocks, hid, h);
	CHECK_RC(opt_tracker_new(&t, &src));
	tsrc = opt_tracker_source(t);

	/* a header with no log yet */
	CHECK(opt_log_last(&src, hid, &e) == OPT_ENOTFOUND && e == NULL);
	CHECK_RC(opt_log_rev(&src, hid, &rev));
	CHECK(rev == 0);
	CHECK_RC(opt_log_verify(&src, hid, NULL, &n));
	CHECK(n == 0);
	CHECK(opt_log_verify(&src, "nosuchblock", NULL, &n) == OPT_ENOTFOUND);
	CHECK(opt_log_rev(&src, "nosuchblock", &rev) == OPT_ENOTFOUND);
	CHECK(opt_log_last(&src, "nosuchblock", &e) == OPT_ENOTFOUND);

	/* bad fields change nothing */
	f = fields_for(1);
	json_object_set_new(f, "hash", json_string("x"));
	CHECK(opt_log_append(t, hid, f, &e) == OPT_EINVAL && e == NULL);
	json_object_del(f, "hash");
	json_object_set_new(f, "trx", json_string("NOT/AN/ID"));
	CHECK(opt_log_append(t, hid, f, NULL) == OPT_EINVAL);
	json_decref(f);
	f = fields_for(1);
	json_object_del(f, "actions");
	CHECK(opt_log_append(t, hid, f, NULL) == OPT_EINVAL);
	json_decref(f);
	f = fields_for(1);
	json_object_set_new(json_object_get(f, "blocks"), "abc", json_string("nothex"));
	CHECK(opt_log_append(t, hid, f, NULL) == OPT_EINVAL);
	json_decref(f);
	f = fields_for(1);
	CHECK(opt_log_append(t, "nosuchblock", f, NULL) == OPT_ENOTFOUND);
	/* a stale rev: a conflict, and the chain created on the way is undone */
	json_object_set_new(f, "rev", json_integer(2));
	CHECK(opt_log_append(t, hid, f, NULL) == OPT_ECONFLICT);
	CHECK(opt_tracker_empty(t));
	opt_tracker_foreach(t, count_cb, &changed);
	CHECK(changed == 0);
	json_object_set_new(f, "rev", json_integer(1));
	CHECK_RC(opt_log_append(t, hid, f, NULL));
	CHECK(opt_tracker_count(t) == 2);  /* the header and one LGD block */
	CHECK(opt_log_append(t, hid, f, NULL) == OPT_ECONFLICT);
	json_object_del(f, "rev");
	CHECK_RC(opt_log_append(t, hid, f, NULL));  /* the same trx again: not our business */
	json_decref(f);
	CHECK_RC(opt_log_rev(&tsrc, hid, &rev));
	CHECK(rev == 2);
	CHECK_RC(opt_log_verify(&tsrc, hid, NULL, &n));
	CHECK(n == 2);
	opt_tracker_free(t);
	json_decref(blocks);
}

/* An entry that its log block could not hold readably (nested deeper than
 * the parser reads) is refused and changes nothing; one level less is
 * appended and reads back. */
TEST(too_deep)
{
	json_t *blocks = json_object(), *h, *f, *v;
	struct opt_source src = opt_source_object(blocks), tsrc;
	struct opt_tracker *t;
	char hid[OPT_ID_MAX + 1];
	long n = -1;
	int i;

	CHECK_RC(opt_block_new(&h, NULL, "TRE", "coll"));
	snprintf(hid, sizeof(hid), "%s", opt_block_id(h));
	json_object_set_new(blocks, hid, h);
	CHECK_RC(opt_tracker_new(&t, &src));
	tsrc = opt_tracker_source(t);
	/* a value 5 levels down: the block, "entries", the entry, "actions",
	 * the action */
	v = json_array();
	for (i = 1; i < OPT_JSON_MAX_DEPTH - OPT_LOG_ACTIONS_ABOVE - 2; i++)
		v = json_pack("[o]", v);
	f = fields_for(1);
	json_object_set(json_array_get(json_object_get(f, "actions"), 0), "value", v);
	CHECK(opt_log_append(t, hid, f, NULL) == 0);
	json_decref(f);
	/* (entries share their fields' values: a new one for the next) */
	v = json_pack("[o]", v);
	f = fields_for(2);
	json_object_set(json_array_get(json_object_get(f, "actions"), 0), "value", v);
	CHECK(opt_log_append(t, hid, f, NULL) == OPT_EINVAL);
	CHECK(strcmp(opt_error_last(), "nested too deeply: the log entry would nest more than 2048 levels, the most a stored document may") == 0);
	CHECK(opt_tracker_count(t) == 2);  /* the header and the first entry's block */
	CHECK_RC(opt_log_verify(&tsrc, hid, NULL, &n));
	CHECK(n == 1);
	/* what it stores parses back */
	{
		const json_t *b;
		char *text;
		size_t len;
		json_t *back;
		CHECK_RC(opt_tracker_get(t, hid, &b));
		CHECK_RC(opt_tracker_get(t, json_string_value(json_object_get(b, "tailId")), &b));
		CHECK_RC(opt_json_canon(&text, &len, b));
		CHECK(opt_json_parse(&back, text, len) == 0);
		json_decref(back);
		free(text);
	}
	json_decref(v);
	json_decref(f);
	opt_tracker_free(t);
	json_decref(blocks);
}

TEST(many_entries_streamed)
{
	struct store s;
	long n;
	size_t cnt;

	store_build(&s, 2000);
	CHECK_RC(opt_log_verify(&s.src, s.hid, NULL, &n));
	CHECK(n == 2000);
	CHECK_RC(opt_chain_count(&s.src, s.hid, &cnt));
	CHECK(cnt == 2000);
	store_close(&s);
}

/* The first revision an iterator started at (forward, start) gives, and
 * how many entries it gives in all. */
static long iter_first(struct opt_log_iter *it, int forward, long start, long *count)
{
	const json_t *e;
	long first = 0;
	int rc;

	*count = 0;
	CHECK_RC(opt_log_iter_start(it, forward, start));
	while ((rc = opt_log_iter_next(it, &e)) == 1) {
		if (!*count)
			first = (long)json_integer_value(json_object_get(e, "rev"));
		++*count;
	}
	CHECK(rc == 0);
	return first;
}

TEST(log_iter)
{
	struct store s;
	struct opt_log_iter *it = NULL;
	struct opt_tracker *t;
	json_t *h;
	long n;

	store_build(&s, 100);
	CHECK_RC(opt_log_iter_open(&it, &s.src, s.hid));
	CHECK(it && opt_log_iter_last(it) == 100);
	if (it) {
		/* far from the end the walk starts at: at the entry itself */
		CHECK(iter_first(it, 1, 95, &n) == 95 && n == 6);
		CHECK(iter_first(it, 0, 5, &n) == 5 && n == 5);
		/* near it: from that end (the caller skips to its range) */
		CHECK(iter_first(it, 1, 3, &n) == 1 && n == 100);
		CHECK(iter_first(it, 0, 98, &n) == 100 && n == 100);
		/* a revision that is not there: from the end */
		CHECK(iter_first(it, 1, 500, &n) == 1 && n == 100);
	}
	opt_log_iter_free(it);
	/* a header without a log: nothing to iterate; no header: not found */
	CHECK_RC(opt_tracker_new(&t, &s.src));
	CHECK_RC(opt_block_new(&h, NULL, "TRE", "other"));
	CHECK_RC(opt_tracker_insert_new(t, h));
	opt_tracker_foreach(t, commit_cb, s.blocks);
	it = (struct opt_log_iter *)1;
	CHECK(opt_log_iter_open(&it, &s.src, opt_block_id(h)) == 0 && it == NULL);
	CHECK(opt_log_iter_open(&it, &s.src, "nosuchblockaaaaaaaaaaaaaaa") == OPT_ENOTFOUND && it == NULL);
	opt_tracker_free(t);
	store_close(&s);
}

int main(void)
{
	opt_util_init();
	RUN(append_and_verify);
	RUN(entry_hash_definition);
	RUN(tampering);
	RUN(checkpoint_prune);
	RUN(callback_stops);
	RUN(empty_log_and_errors);
	RUN(many_entries_streamed);
	RUN(log_iter);
	RUN(too_deep);
	return DONE();
}
