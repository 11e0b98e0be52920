/* fuzz-log.c - libFuzzer harness for the readers of stored structures:
 * the transaction log (opt_log_verify and friends), chains (iterators in
 * both directions, positions) and B+trees (opt_btree_check, cursors, get,
 * count), all reading hostile blocks.
 *
 * Input: a JSON object {id: block, ...}, read through an in-memory source
 * (opt_source_object).  The header is the first key, and each of the next
 * three keys in turn (to reach chain and tree blocks directly).
 *
 * Work is bounded: the source counts block reads per library call and a
 * call that reads more than a linear bound (a few reads per block for chain
 * walks, one per block for opt_btree_check, MAX_DEPTH per node reference
 * for cursors) aborts: cycles and shared nodes in hostile data must be
 * caught by the library, never looped over.
 *
 * Properties checked (a broken one aborts):
 *  - chain: when the forward and the backward walks both end without an
 *    error they give the same entries in opposite orders; opt_chain_count,
 *    opt_chain_first and opt_chain_last agree with them; a position from
 *    opt_chain_iter_pos reopens (opt_chain_iter_open_at) at the same entry.
 *  - log: when opt_log_verify accepts n entries, opt_log_rev is n and
 *    opt_log_last is the last entry verified (a reader must not be shown
 *    entries the verification did not see); a callback's non-zero value
 *    stops it and is returned.
 *  - btree: when opt_btree_check accepts a tree of n entries, cursors give
 *    the n entries in strictly increasing (reverse: decreasing) key order,
 *    opt_btree_count is n, opt_btree_get finds each key with its value, and
 *    bounded ranges give the expected slices.
 *  - writers over the blocks as found (first header only, through a
 *    tracker): opt_log_append, opt_chain_pop, opt_chain_dequeue,
 *    opt_chain_add, opt_btree_put and opt_btree_del either fail and leave
 *    the tracker as it was, or (on a log that verified, whose header's
 *    logRev/logHash agree with it; on a tree that checked) leave a log that
 *    verifies one more entry, a tree that checks with one more (one fewer)
 *    entry.
 *  - the readers of stored text agree with the parsing ones on canonical
 *    text (each block as opt_json_canon writes it): opt_log_verify on text
 *    accepts the same entries as opt_log_verify (or fails as it does,
 *    with the same message, its first 60 bytes: a long ID in it may be
 *    cut short), opt_btree_check on text the same tree.
 *  - no reader changes the blocks.
 *
 * Known, reported library bugs can be tolerated while they are open (see
 * docs/fuzzing.md; none is open now): OPT_FUZZ_KNOWN, a comma-separated
 * list of chain-ends, btree-shared, log-rev-overflow, turns the matching
 * property off, makes the read bound fail the library call with an error
 * instead of aborting, or skips the call that would overflow. */
#include "block.h"
#include "btree.h"
#include "chain.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "util.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...) do { fprintf(stderr, "fuzz-log: " __VA_ARGS__); \
	fputc('\n', stderr); abort(); } while (0)
#define ASSERT(c) do { if (!(c)) FAIL("assertion failed: %s (line %d)", #c, __LINE__); } while (0)

#define HEADERS 4
#define MAX_DEPTH 64     /* btree.c's bound on the depth of a tree */
#define ENTRIES_KEPT 256 /* chain entries compared between directions */
#define KEYS_KEPT 4096   /* tree entries kept from a scan */

static int known_chain_ends, known_btree_shared, known_log_rev_overflow;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *k = getenv("OPT_FUZZ_KNOWN");

	(void)argc;
	(void)argv;
	if (opt_util_init() < 0)
		FAIL("cannot initialise libsodium");
	known_chain_ends = k && strstr(k, "chain-ends") != NULL;
	known_btree_shared = k && strstr(k, "btree-shared") != NULL;
	known_log_rev_overflow = k && strstr(k, "log-rev-overflow") != NULL;
	return 0;
}

/* ---- a source that counts reads ---- */

struct counted {
	json_t *blocks;
	const char *call;       /* the library call being made */
	unsigned long reads, limit;
	int soft;               /* past the limit: fail the read, do not abort */
};

static int counted_get(void *ctx, const char *id, json_t **out)
{
	struct counted *c = ctx;
	json_t *b;

	*out = NULL;
	if (++c->reads > c->limit) {
		if (!c->soft || c->reads > 2 * c->limit + 64)
			FAIL("%s reads more than %lu blocks (at '%.80s'): unbounded work on a cycle or shared nodes",
			     c->call, c->limit, id);
		return opt_error_set(OPT_EIO, "fuzz: read bound exceeded");
	}
	b = json_object_get(c->blocks, id);
	if (!b)
		return opt_error_set(OPT_ENOTFOUND, "no block '%s'", id);
	*out = json_incref(b);
	return 0;
}

/* A block's bytes as stored: its canonical text (read like counted_get). */
static void free_text(void *p)
{
	free(p);
}

static int counted_bytes(void *ctx, const char *id, struct opt_bytes *out)
{
	struct counted *c = ctx;
	json_t *b = NULL;
	char *s = NULL;
	size_t len = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = counted_get(ctx, id, &b)) < 0)
		return rc;
	(void)c;
	rc = opt_json_canon(&s, &len, b);
	json_decref(b);
	if (rc < 0)
		return rc;
	out->data = s;
	out->len = len;
	out->release = free_text;
	out->owner = s;
	return 0;
}

/* Start a library call with a read bound. */
static void begin(struct counted *c, const char *call, unsigned long limit, int soft)
{
	c->call = call;
	c->reads = 0;
	c->limit = limit;
	c->soft = soft;
}

static char *canon(const json_t *v)
{
	char *s = NULL;

	if (opt_json_canon(&s, NULL, v) < 0)
		FAIL("opt_json_canon failed: %s", opt_error_last());
	return s;
}

static int same_json(const json_t *a, const json_t *b)
{
	char *x = canon(a), *y = canon(b);
	int eq = strcmp(x, y) == 0;

	free(x);
	free(y);
	return eq;
}

/* Bounds, from the input's size. */
struct bounds {
	unsigned long blocks;   /* number of blocks */
	unsigned long refs;     /* node references in branch-shaped blocks */
};

/* ---- chains ---- */

/* Walk the whole chain of hid in one direction: 0 at the end, <0 on error,
 * 1 when the chain is longer than what is kept (not compared).  The first
 * ENTRIES_KEPT entries go to kept (new references). */
static int walk(struct counted *c, const struct opt_source *src, const char *hid, int forward,
		json_t *kept, unsigned long limit)
{
	struct opt_chain_iter *it = NULL;
	struct opt_chain_pos pos[8];
	const json_t *e;
	size_t n = 0, npos = 0, i;
	int rc;

	begin(c, forward ? "chain iteration (forward)" : "chain iteration (backward)", limit, 0);
	if ((rc = opt_chain_iter_open(&it, src, hid, forward)) < 0)
		return rc;
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		ASSERT(e != NULL);
		if (npos < 8 && opt_chain_iter_pos(it, &pos[npos]) == 0)
			npos++;
		if (n < ENTRIES_KEPT)
			json_array_append(kept, (json_t *)e);
		n++;
	}
	ASSERT(rc <= 0);
	/* the iterator stays at its end */
	ASSERT(opt_chain_iter_next(it, &e) <= 0 && e == NULL);
	opt_chain_iter_free(it);
	/* positions reopen at the same entry, in both directions */
	for (i = 0; i < npos; i++) {
		int dir;
		for (dir = 0; dir < 2; dir++) {
			const json_t *e2;
			int rc2;
			begin(c, "opt_chain_iter_open_at", limit, 0);
			if (opt_chain_iter_open_at(&it, src, &pos[i], dir) < 0)
				FAIL("opt_chain_iter_open_at fails on a position the iterator gave: %s",
				     opt_error_last());
			rc2 = opt_chain_iter_next(it, &e2);
			ASSERT(rc2 == 1);
			if (i < json_array_size(kept) && !same_json(e2, json_array_get(kept, i)))
				FAIL("opt_chain_iter_open_at gives another entry than the iterator");
			while (opt_chain_iter_next(it, &e2) == 1)
				;
			opt_chain_iter_free(it);
			it = NULL;
		}
	}
	return rc < 0 ? rc : n > ENTRIES_KEPT ? 1 : 0;
}

static void check_chain(struct counted *c, const struct opt_source *src, const char *hid,
			const struct bounds *b)
{
	unsigned long limit = 4 * (b->blocks + 4);
	json_t *fw = json_array(), *bw = json_array(), *first = NULL, *last = NULL;
	size_t n, cnt = 0, i;
	int rf, rb, rc;

	begin(c, "opt_chain_has", 2, 0);
	if (opt_chain_has(src, hid) <= 0)
		goto done;
	rf = walk(c, src, hid, 1, fw, limit);
	rb = walk(c, src, hid, 0, bw, limit);
	begin(c, "opt_chain_count", limit, 0);
	rc = opt_chain_count(src, hid, &cnt);
	if (rf == 0 && rc < 0)
		FAIL("opt_chain_count fails (%s) where the forward iteration succeeds", opt_error_last());
	if (rf == 0 && cnt != json_array_size(fw))
		FAIL("opt_chain_count is %zu, the forward iteration gives %zu entries", cnt,
		     json_array_size(fw));
	begin(c, "opt_chain_first", limit, 0);
	rc = opt_chain_first(src, hid, &first);
	if (rf == 0 && json_array_size(fw) && (rc < 0 || !same_json(first, json_array_get(fw, 0))))
		FAIL("opt_chain_first is not the first entry of the forward iteration");
	begin(c, "opt_chain_last", limit, 0);
	rc = opt_chain_last(src, hid, &last);
	if (rb == 0 && json_array_size(bw) && (rc < 0 || !same_json(last, json_array_get(bw, 0))))
		FAIL("opt_chain_last is not the first entry of the backward iteration");
	if (rf == 0 && rb == 0 && !known_chain_ends) {
		n = json_array_size(fw);
		if (n != json_array_size(bw))
			FAIL("chain '%s': forward iteration gives %zu entries, backward %zu: the walks from headId and tailId end at different blocks without an error",
			     hid, n, json_array_size(bw));
		for (i = 0; i < n; i++)
			if (!same_json(json_array_get(fw, i), json_array_get(bw, n - 1 - i)))
				FAIL("chain '%s': entry %zu differs between the forward and backward iterations",
				     hid, i);
	}
done:
	json_decref(first);
	json_decref(last);
	json_decref(fw);
	json_decref(bw);
}

/* ---- the log ---- */

struct vstate {
	json_t *last;   /* the last entry verified (a copy) */
	long seen, stop_at, stop_value;
};

static int verify_cb(const json_t *entry, void *arg)
{
	struct vstate *v = arg;

	ASSERT(json_is_object(entry));
	v->seen++;
	json_decref(v->last);
	v->last = opt_json_copy(entry);
	if (v->stop_at && v->seen == v->stop_at)
		return (int)v->stop_value;
	return 0;
}

static long check_log(struct counted *c, const struct opt_source *src, const char *hid,
		      const struct bounds *b, char last_hash[65])
{
	unsigned long limit = 4 * (b->blocks + 4);
	struct vstate v = { NULL, 0, 0, 0 };
	json_t *last = NULL;
	char h[65], msg[1024];
	long n = -1, rev = -1;
	int rc, rl;

	begin(c, "opt_log_verify", limit, 0);
	rc = opt_log_verify(src, hid, &(struct opt_log_verify_opts){ .cb = verify_cb, .arg = &v }, &n);
	ASSERT(rc <= 0);
	ASSERT(n == v.seen);
	snprintf(msg, sizeof(msg), "%s", rc < 0 ? opt_error_last() : "");
	if (rc == 0) {
		begin(c, "opt_log_rev", limit, 0);
		rl = opt_log_rev(src, hid, &rev);
		if (!known_chain_ends && (rl < 0 || rev != n))
			FAIL("opt_log_verify accepts %ld entries, opt_log_rev gives %ld (%d)", n, rev, rl);
		begin(c, "opt_log_last", limit, 0);
		rl = opt_log_last(src, hid, &last);
		if (!known_chain_ends) {
			if (n > 0 && (rl < 0 || !json_equal(last, v.last)))
				FAIL("opt_log_verify accepts %ld entries, but opt_log_last gives another entry than the last verified one",
				     n);
			if (n == 0 && rl != OPT_ENOTFOUND)
				FAIL("opt_log_verify accepts an empty log, but opt_log_last gives %d", rl);
		}
		/* a callback's non-zero value stops the verification */
		if (n >= 2) {
			struct vstate s = { NULL, 0, 2, 7 };
			long n2 = 0;
			begin(c, "opt_log_verify", limit, 0);
			ASSERT(opt_log_verify(src, hid, &(struct opt_log_verify_opts){ .cb = verify_cb, .arg = &s }, &n2) == 7 && s.seen == 2 && n2 == 1);
			json_decref(s.last);
		}
	} else {
		begin(c, "opt_log_rev", limit, 0);
		(void)opt_log_rev(src, hid, &rev);
		begin(c, "opt_log_last", limit, 0);
		(void)opt_log_last(src, hid, &last);
	}
	{
		/* the same judgement on the blocks' canonical text */
		struct vstate t = { NULL, 0, 0, 0 };
		long nt = -1;
		int rt;
		begin(c, "opt_log_verify on text", 2 * limit, 0);
		rt = opt_log_verify(src, hid, &(struct opt_log_verify_opts){ .cb = verify_cb, .arg = &t, .bytes = counted_bytes, .bctx = c },
				    &nt);
		if ((rt < 0) != (rc < 0) || nt != n || (rc < 0 && strncmp(msg, opt_error_last(), 60) != 0))
			FAIL("opt_log_verify gives %d after %ld entries (%s), on text %d after %ld (%s)", rc, n,
			     msg, rt, nt, rt < 0 ? opt_error_last() : "");
		json_decref(t.last);
	}
	last_hash[0] = '\0';
	if (v.last && opt_log_entry_hash(v.last, h) == 0)
		memcpy(last_hash, h, sizeof(h));
	json_decref(last);
	json_decref(v.last);
	return rc == 0 ? n : -1;
}

/* ---- the btree ---- */

/* Scan with a cursor over range r, keeping up to KEYS_KEPT [key, value]
 * pairs in out (may be NULL): the number of entries or <0. */
static long scan(struct counted *c, const struct opt_source *src, const char *hid,
		 const struct opt_btree_range *r, json_t *out, const struct bounds *b)
{
	unsigned long limit = MAX_DEPTH * (b->refs + b->blocks + 2);
	struct opt_btree_cursor *cur = NULL;
	const json_t *k, *v;
	long n = 0;
	int rc;

	begin(c, "btree cursor scan", limit, known_btree_shared);
	if ((rc = opt_btree_cursor_open(&cur, src, hid, r)) < 0)
		return rc;
	while ((rc = opt_btree_cursor_next(cur, &k, &v)) == 1) {
		ASSERT(k && v);
		if (out && json_array_size(out) < KEYS_KEPT)
			json_array_append_new(out, json_pack("[OO]", k, v));
		n++;
	}
	if (rc < 0) {
		/* the error sticks */
		ASSERT(opt_btree_cursor_next(cur, &k, &v) == rc);
	}
	opt_btree_cursor_free(cur);
	return rc < 0 ? rc : n;
}

static long check_btree(struct counted *c, const struct opt_source *src, const char *hid,
			const struct bounds *b)
{
	unsigned long scan_limit = MAX_DEPTH * (b->refs + b->blocks + 2);
	json_t *fw = json_array(), *bw = json_array(), *val = NULL, *part = NULL;
	struct opt_btree_range r;
	size_t count = 0, cnt = 0, n, i, j, lo, hi;
	long got;
	int rc, incl;

	begin(c, "opt_btree_check", b->blocks + 2, 0);
	rc = opt_btree_check(src, hid, NULL, &count);
	ASSERT(rc <= 0);
	{
		/* the same judgement on the nodes' canonical text */
		char msg[1024];
		size_t ct = 0;
		int rt;
		snprintf(msg, sizeof(msg), "%s", rc < 0 ? opt_error_last() : "");
		begin(c, "opt_btree_check on text", 2 * (b->blocks + 2), 0);
		rt = opt_btree_check(src, hid, &(struct opt_btree_check_opts){ .bytes = counted_bytes, .bctx = c }, &ct);
		if ((rt < 0) != (rc < 0) || ct != count || (rc < 0 && strncmp(msg, opt_error_last(), 60) != 0))
			FAIL("opt_btree_check gives %d, %zu entries (%s), on text %d, %zu (%s)", rc, count, msg,
			     rt, ct, rt < 0 ? opt_error_last() : "");
	}
	if (rc < 0) {
		/* a broken tree: readers may fail, but must not crash or hang */
		(void)scan(c, src, hid, NULL, fw, b);
		memset(&r, 0, sizeof(r));
		r.reverse = 1;
		(void)scan(c, src, hid, &r, NULL, b);
		begin(c, "opt_btree_count", scan_limit, known_btree_shared);
		(void)opt_btree_count(src, hid, &cnt);
		for (i = 0; i < json_array_size(fw) && i < 4; i++) {
			begin(c, "opt_btree_get", MAX_DEPTH + 2, 0);
			(void)opt_btree_get(src, hid, json_array_get(json_array_get(fw, i), 0), &val);
			json_decref(val);
			val = NULL;
		}
		goto done;
	}
	/* a valid tree */
	got = scan(c, src, hid, NULL, fw, b);
	if (got < 0 || (size_t)got != count)
		FAIL("opt_btree_check accepts %zu entries, a cursor gives %ld (%s)", count, got,
		     got < 0 ? opt_error_last() : "");
	memset(&r, 0, sizeof(r));
	r.reverse = 1;
	got = scan(c, src, hid, &r, bw, b);
	if (got < 0 || (size_t)got != count)
		FAIL("opt_btree_check accepts %zu entries, a reverse cursor gives %ld", count, got);
	begin(c, "opt_btree_count", scan_limit, 0);
	if (opt_btree_count(src, hid, &cnt) < 0 || cnt != count)
		FAIL("opt_btree_check accepts %zu entries, opt_btree_count gives %zu", count, cnt);
	n = json_array_size(fw);
	ASSERT(n == json_array_size(bw));
	for (i = 0; i < n; i++) {
		const json_t *e = json_array_get(fw, i), *eb = json_array_get(bw, n - 1 - i);
		if (i && opt_key_cmp(json_array_get(json_array_get(fw, i - 1), 0), json_array_get(e, 0)) >= 0)
			FAIL("a cursor over a checked tree gives keys out of order at %zu", i);
		if (!json_equal((json_t *)e, (json_t *)eb))
			FAIL("the reverse cursor differs from the forward one at %zu", i);
	}
	/* lookups */
	for (i = 0; i < n; i += 1 + n / 8) {
		const json_t *e = json_array_get(fw, i);
		begin(c, "opt_btree_get", MAX_DEPTH + 2, 0);
		rc = opt_btree_get(src, hid, json_array_get(e, 0), &val);
		if (rc < 0 || !json_equal(val, json_array_get(e, 1)))
			FAIL("opt_btree_get does not find the key of entry %zu of a checked tree (%d)", i, rc);
		json_decref(val);
		val = NULL;
	}
	/* ranges between two keys, all four bound kinds, both directions */
	if (n >= 2 && n < KEYS_KEPT) {
		lo = n / 3;
		hi = 2 * n / 3;
		for (incl = 0; incl < 8; incl++) {
			size_t want_from = lo + !(incl & 1), want_to = hi + !!(incl & 2);
			memset(&r, 0, sizeof(r));
			r.lo = json_array_get(json_array_get(fw, lo), 0);
			r.hi = json_array_get(json_array_get(fw, hi), 0);
			r.lo_incl = incl & 1;
			r.hi_incl = !!(incl & 2);
			r.reverse = !!(incl & 4);
			part = json_array();
			got = scan(c, src, hid, &r, part, b);
			if (got < 0 || (size_t)got != (want_to > want_from ? want_to - want_from : 0))
				FAIL("a range over a checked tree gives %ld entries, not %zu", got,
				     want_to > want_from ? want_to - want_from : 0);
			for (j = 0; j < json_array_size(part); j++) {
				size_t at = r.reverse ? want_to - 1 - j : want_from + j;
				if (!json_equal(json_array_get(part, j), json_array_get(fw, at)))
					FAIL("a range over a checked tree gives the wrong entry %zu", j);
			}
			json_decref(part);
			part = NULL;
		}
	}
done:
	json_decref(fw);
	json_decref(bw);
	return rc < 0 ? -1 : (long)count;
}

/* ---- writers over hostile blocks ---- */

/* The tracker's changes as one canonical string (caller frees). */
static int state_cb(const char *id, const json_t *block, void *arg)
{
	json_object_set_new(arg, id, block ? opt_json_copy(block) : json_null());
	return 0;
}

static char *tracker_state(struct opt_tracker *t)
{
	json_t *all = json_object();
	char *s;

	ASSERT(all && opt_tracker_foreach(t, state_cb, all) == 0);
	s = canon(all);
	json_decref(all);
	return s;
}

/* A writer's call failed: the tracker must be as before (all or nothing). */
static void unchanged(struct opt_tracker *t, const char *before, const char *call, int rc)
{
	char *now = tracker_state(t);

	if (strcmp(before, now) != 0)
		FAIL("%s failed (%d: %s) but changed the tracker", call, rc, opt_error_last());
	free(now);
}

/* The writers (log append, chain pop/dequeue/add, btree put/del) over the
 * blocks as found: they must fail cleanly or leave a structure that
 * verifies.  n: the entries opt_log_verify accepted (-1: none), last: the
 * hash of the last; count: the entries opt_btree_check accepted (-1). */
static void check_writers(json_t *blocks, const char *hid, long n, const char *last, long count)
{
	struct opt_source plain = opt_source_object(blocks), ts;
	struct opt_tracker *t = NULL;
	json_t *fields, *out = NULL, *key, *val, *ents;
	const json_t *h, *lr, *lh;
	char *before, *mid;
	size_t tok, cnt, i;
	long n2, base;
	int rc, replaced = 0, header_agrees = 1;

	ASSERT(opt_tracker_new(&t, &plain) == 0);
	ts = opt_tracker_source(t);
	before = tracker_state(t);

	/* the log: append one entry */
	if (opt_tracker_get(t, hid, &h) == 0) {
		lr = json_object_get(h, "logRev");
		lh = json_object_get(h, "logHash");
		if (lr || lh)
			header_agrees = json_is_integer(lr) && json_integer_value(lr) == n &&
					json_is_string(lh) && strcmp(json_string_value(lh), last) == 0;
	}
	fields = json_pack("{s:s,s:[{s:s,s:i,s:i}],s:{},s:i}", "trx", "fuzzaaaaaaaaaaaaaaaaaaaaaa",
			   "actions", "type", "put", "key", 1, "value", 2, "blocks", "time", 1);
	ASSERT(fields);
	if (known_log_rev_overflow && opt_tracker_get(t, hid, &h) == 0 &&
	    json_integer_value(json_object_get(h, "logRev")) == LONG_MAX)
		rc = OPT_EINVAL;        /* a known bug: rev + 1 overflows */
	else
		rc = opt_log_append(t, hid, fields, &out);
	if (rc < 0) {
		unchanged(t, before, "opt_log_append", rc);
	} else if (n >= 0 && header_agrees && !known_chain_ends) {
		/* a verified log with one more entry still verifies */
		rc = opt_log_verify(&ts, hid, NULL, &n2);
		if (rc < 0 || n2 != n + 1)
			FAIL("opt_log_append on a log of %ld verified entries gives a log that verifies %ld entries (%d: %s)",
			     n, n2, rc, rc < 0 ? opt_error_last() : "");
	}
	json_decref(out);
	json_decref(fields);
	opt_tracker_reset(t);

	/* the chain: pop, dequeue, add (each all or nothing) */
	opt_tracker_mark(t, &tok);
	out = NULL;
	if ((rc = opt_chain_pop(t, hid, 2, &out)) < 0)
		unchanged(t, before, "opt_chain_pop", rc);
	json_decref(out);
	out = NULL;
	mid = tracker_state(t);
	if ((rc = opt_chain_dequeue(t, hid, 3, &out)) < 0)
		unchanged(t, mid, "opt_chain_dequeue", rc);
	free(mid);
	json_decref(out);
	opt_tracker_rollback(t, tok);
	unchanged(t, before, "a rollback after opt_chain_pop and opt_chain_dequeue", 0);
	/* more than a block's worth: fills the tail, then adds blocks */
	ents = json_array();
	for (i = 0; i < OPT_CHAIN_ENTRIES + 3; i++)
		json_array_append_new(ents, json_integer((json_int_t)i));
	if ((rc = opt_chain_add(t, hid, ents)) < 0)
		unchanged(t, before, "opt_chain_add", rc);
	json_decref(ents);
	opt_tracker_reset(t);

	/* the tree: put, then delete, a key */
	key = json_integer(5);
	val = json_string("fuzz");
	rc = opt_btree_put(t, hid, key, val, &replaced);
	if (rc < 0) {
		unchanged(t, before, "opt_btree_put", rc);
	} else if (count >= 0) {
		rc = opt_btree_check(&ts, hid, NULL, &cnt);
		if (rc < 0 || cnt != (size_t)count + !replaced)
			FAIL("opt_btree_put on a checked tree of %ld entries gives a tree that %s (%zu entries)", count,
			     rc < 0 ? opt_error_last() : "checks", cnt);
		rc = opt_btree_del(t, hid, key);
		if (rc < 0)
			FAIL("opt_btree_del cannot delete the key just put (%d: %s)", rc, opt_error_last());
		rc = opt_btree_check(&ts, hid, NULL, &cnt);
		if (rc < 0 || cnt != (size_t)count + !replaced - 1)
			FAIL("opt_btree_del on a checked tree gives a tree that %s (%zu entries)",
			     rc < 0 ? opt_error_last() : "checks", cnt);
		if ((rc = opt_btree_del(t, hid, key)) != OPT_ENOTFOUND)
			FAIL("opt_btree_del of a deleted key gives %d, not OPT_ENOTFOUND", rc);
		/* delete the smallest and the largest keys (merges, borrows) */
		base = count + !replaced - 1;
		for (i = 0; i < 2 && base - (long)i > 0; i++) {
			struct opt_btree_cursor *cur = NULL;
			struct opt_btree_range r = { NULL, 0, NULL, 0, (int)i };
			const json_t *k, *v;
			json_t *kc = NULL;
			if (opt_btree_cursor_open(&cur, &ts, hid, &r) < 0 || opt_btree_cursor_next(cur, &k, &v) != 1)
				FAIL("a cursor over a checked tree after put and del gives no entry (%s)", opt_error_last());
			kc = opt_json_copy(k);
			opt_btree_cursor_free(cur);
			if ((rc = opt_btree_del(t, hid, kc)) < 0)
				FAIL("opt_btree_del of an existing key fails (%d: %s)", rc, opt_error_last());
			rc = opt_btree_check(&ts, hid, NULL, &cnt);
			if (rc < 0 || cnt != (size_t)(base - 1 - (long)i))
				FAIL("opt_btree_del of the %s key gives a tree that %s (%zu entries, not %ld)",
				     i ? "largest" : "smallest", rc < 0 ? opt_error_last() : "checks", cnt,
				     base - 1 - (long)i);
			json_decref(kc);
		}
	}
	json_decref(key);
	json_decref(val);
	free(before);
	opt_tracker_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *doc = NULL, *x;
	struct counted c = { NULL, "", 0, 0, 0 };
	struct opt_source src = { counted_get, &c, NULL };
	struct bounds b = { 0, 0 };
	const char *hid;
	char *before, *after;
	void *iter;
	int h;

	if (opt_json_parse(&doc, (const char *)data, size) < 0)
		return 0;
	if (!json_is_object(doc) || json_object_size(doc) == 0) {
		json_decref(doc);
		return 0;
	}
	c.blocks = doc;
	json_object_foreach(doc, hid, x) {
		b.blocks++;
		b.refs += json_array_size(json_object_get(x, "nodes"));
	}
	before = canon(doc);
	for (h = 0, iter = json_object_iter(doc); iter && h < HEADERS; h++, iter = json_object_iter_next(doc, iter)) {
		long n, count;
		char last[65];
		hid = json_object_iter_key(iter);
		n = check_log(&c, &src, hid, &b, last);
		check_chain(&c, &src, hid, &b);
		count = check_btree(&c, &src, hid, &b);
		if (h == 0)
			check_writers(doc, hid, n, last, count);
	}
	/* readers never write */
	after = canon(doc);
	if (strcmp(before, after) != 0)
		FAIL("a reader changed the blocks it read");
	free(before);
	free(after);
	json_decref(doc);
	return 0;
}
