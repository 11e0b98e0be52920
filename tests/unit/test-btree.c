#include "harness.h"
#include "block.h"
#include "btree.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <stdint.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* The randomized runs and the bulk load are long: make check runs a part
 * of them under ASan (a quarter), make soak (OPT_TEST_LONG=1) all of
 * them in both builds. */
static int long_run(void)
{
	const char *e = getenv("OPT_TEST_LONG");

	return e && *e && strcmp(e, "0") != 0;
}

static long scaled(long n)
{
	return UNDER_ASAN && !long_run() ? n / 4 : n;
}

/* ---- jansson allocation accounting (for the bounded-memory scan) ---- */

static size_t mem_now, mem_peak;

static void *count_malloc(size_t n)
{
	size_t *p = malloc(n + 16);

	if (!p)
		return NULL;
	p[0] = n;
	mem_now += n;
	if (mem_now > mem_peak)
		mem_peak = mem_now;
	return (char *)p + 16;
}

static void count_free(void *q)
{
	size_t *p;

	if (!q)
		return;
	p = (size_t *)((char *)q - 16);
	mem_now -= p[0];
	free(p);
}

/* ---- random numbers (seeded, re-runnable) ---- */

static uint64_t seed, rng;

static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rn(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static void shuffle(long *a, size_t n)
{
	size_t i;

	for (i = n; i > 1; i--) {
		size_t j = (size_t)(rnd() % i);
		long x = a[i - 1];
		a[i - 1] = a[j];
		a[j] = x;
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- a store: an object source under a tracker ---- */

struct store {
	json_t *base;
	struct opt_source bsrc, tsrc;
	struct opt_tracker *t;
	char hid[OPT_ID_MAX + 1];
};

static int store_open(struct store *s, int cap)
{
	json_t *h;
	int rc;

	memset(s, 0, sizeof(*s));
	s->base = json_object();
	s->bsrc = opt_source_object(s->base);
	if ((rc = opt_tracker_new(&s->t, &s->bsrc)) < 0)
		return rc;
	s->tsrc = opt_tracker_source(s->t);
	if ((rc = opt_block_new(&h, NULL, "TR", "c")) < 0)
		return rc;
	strcpy(s->hid, opt_block_id(h));
	if ((rc = opt_tracker_insert_new(s->t, h)) < 0)
		return rc;
	return opt_btree_create(s->t, s->hid, "c", cap);
}

static int flush_cb(const char *id, const json_t *block, void *arg)
{
	json_t *base = arg;

	if (block)
		json_object_set(base, id, (json_t *)block);
	else
		json_object_del(base, id);
	return 0;
}

/* "Commit": move the tracker's changes into the base and start a new
 * tracker over it (a fresh one: the old one caches base blocks). */
static int store_flush(struct store *s)
{
	int rc;

	opt_tracker_foreach(s->t, flush_cb, s->base);
	opt_tracker_free(s->t);
	s->t = NULL;
	if ((rc = opt_tracker_new(&s->t, &s->bsrc)) < 0)
		return rc;
	s->tsrc = opt_tracker_source(s->t);
	return 0;
}

static void store_close(struct store *s)
{
	opt_tracker_free(s->t);
	json_decref(s->base);
}

/* The blocks reachable from the header (the header included). */
static size_t reachable(const json_t *base, const char *id)
{
	const json_t *b = json_object_get(base, id), *nodes;
	size_t n = 1, i;

	if (!b)
		return 0;
	if (json_object_get(b, "rootId"))
		return 1 + reachable(base, json_string_value(json_object_get(b, "rootId")));
	nodes = json_object_get(b, "nodes");
	for (i = 0; i < json_array_size(nodes); i++)
		n += reachable(base, json_string_value(json_array_get(nodes, i)));
	return n;
}

/* After a flush: every live block is reachable from the header. */
static int no_leaked_blocks(struct store *s)
{
	size_t r = reachable(s->base, s->hid), live = json_object_size(s->base);

	if (r != live)
		printf("# %zu blocks live, %zu reachable\n", live, r);
	return r == live;
}

/* The root block of the tree (borrowed from the tracker). */
static const json_t *root_block(struct store *s)
{
	const json_t *h, *r = NULL;

	if (opt_tracker_get(s->t, s->hid, &h) < 0)
		return NULL;
	if (opt_tracker_get(s->t, json_string_value(json_object_get(h, "rootId")), &r) < 0)
		return NULL;
	return r;
}

/* ---- the model: a sorted array ---- */

struct model {
	json_t **k, **v;
	size_t n, cap;
};

static size_t model_lower(const struct model *m, const json_t *key, int upper)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = opt_key_cmp(m->k[mid], key);
		if (c < 0 || (upper && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int model_has(const struct model *m, const json_t *key, size_t *at)
{
	size_t i = model_lower(m, key, 0);

	*at = i;
	return i < m->n && opt_key_cmp(m->k[i], key) == 0;
}

/* 1 if replaced */
static int model_put(struct model *m, json_t *key, json_t *value)
{
	size_t i;

	if (model_has(m, key, &i)) {
		json_decref(m->k[i]);
		json_decref(m->v[i]);
		m->k[i] = json_incref(key);
		m->v[i] = json_incref(value);
		return 1;
	}
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 64;
		m->k = realloc(m->k, m->cap * sizeof(*m->k));
		m->v = realloc(m->v, m->cap * sizeof(*m->v));
	}
	memmove(m->k + i + 1, m->k + i, (m->n - i) * sizeof(*m->k));
	memmove(m->v + i + 1, m->v + i, (m->n - i) * sizeof(*m->v));
	m->k[i] = json_incref(key);
	m->v[i] = json_incref(value);
	m->n++;
	return 0;
}

static int model_del(struct model *m, const json_t *key)
{
	size_t i;

	if (!model_has(m, key, &i))
		return 0;
	json_decref(m->k[i]);
	json_decref(m->v[i]);
	memmove(m->k + i, m->k + i + 1, (m->n - i - 1) * sizeof(*m->k));
	memmove(m->v + i, m->v + i + 1, (m->n - i - 1) * sizeof(*m->v));
	m->n--;
	return 1;
}

static void model_free(struct model *m)
{
	size_t i;

	for (i = 0; i < m->n; i++) {
		json_decref(m->k[i]);
		json_decref(m->v[i]);
	}
	free(m->k);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

/* ---- keys ---- */

/* A key for n: integers, reals (some equal to integers), strings with
 * shared prefixes and multi-byte characters, and composite keys. */
static json_t *key_of(unsigned n)
{
	unsigned q = n / 7;
	char buf[64];

	switch (n % 7) {
	case 0:
		return json_integer((json_int_t)q - 100);
	case 1:
		return json_real(q * 0.5 - 40.25);
	case 2:
		return json_real((double)((int)(q % 50) - 25)); /* equal to an integer key */
	case 3:
		snprintf(buf, sizeof(buf), "k%u", q);
		return json_string(buf);
	case 4:
		if (q % 9 == 0)
			return json_string(q % 2 ? "" : "k");
		if (q % 9 == 4) {
			/* escapes in the stored text: compared parsed, not as bytes */
			snprintf(buf, sizeof(buf), "k\"q\\%u\n", q % 31);
			return json_string(buf);
		}
		snprintf(buf, sizeof(buf), "\xc3\xa9t\xc3\xa9%u", q % 97);
		return json_string(buf);
	case 5:
		snprintf(buf, sizeof(buf), "x%u", q / 5);
		return json_pack("[i,s]", (int)(q % 5), buf);
	default:
		switch (q % 4) {
		case 0:
			return json_pack("[i]", (int)(q % 5));
		case 1:
			return json_pack("[]");
		case 2:
			return json_pack("[[i],i]", (int)(q % 3), (int)(q / 3));
		default:
			snprintf(buf, sizeof(buf), "%u", q);
			return json_pack("[s,f]", buf, q * 0.25);
		}
	}
}

/* A bound: often a key that may be in the tree, sometimes one between
 * keys (a real with a .1 fraction, a string with a suffix). */
static json_t *bound_of(unsigned domain, const struct model *m)
{
	char buf[64];

	switch (rn(5)) {
	case 0:
		if (m->n)
			return json_deep_copy(m->k[rn((unsigned)m->n)]);
		/* fall through */
	case 1:
		return key_of(rn(domain));
	case 2:
		return json_real((double)rn(300) * 0.3 - 130.1);
	case 3:
		snprintf(buf, sizeof(buf), "k%u~", rn(domain / 7 + 1));
		return json_string(buf);
	default:
		return json_pack("[i,s]", (int)rn(6), "x");
	}
}

/* ---- checks against the model ---- */

/* Free what json_dumps gave (jansson's allocator, maybe count_malloc). */
static void jfree(void *p)
{
	json_malloc_t m;
	json_free_t f;

	json_get_alloc_funcs(&m, &f);
	f(p);
}

static char failure[512];

#define FAIL(...) do { snprintf(failure, sizeof(failure), __VA_ARGS__); return 0; } while (0)

/* Scan range r and compare with the model. */
static int check_range(const struct opt_source *src, const char *hid, const struct model *m,
		       const struct opt_btree_range *r)
{
	struct opt_btree_cursor *c;
	const json_t *k, *v;
	size_t from = 0, to = m->n, i, got = 0;
	int rc;

	if (r->lo)
		from = model_lower(m, r->lo, !r->lo_incl);
	if (r->hi)
		to = model_lower(m, r->hi, r->hi_incl);
	if (to < from)
		to = from;
	if ((rc = opt_btree_cursor_open(&c, src, hid, r)) < 0)
		FAIL("cursor_open: %s", opt_error_last());
	while ((rc = opt_btree_cursor_next(c, &k, &v)) == 1) {
		if (from + got >= to) {
			opt_btree_cursor_free(c);
			FAIL("range (reverse %d) yields more than the model's %zu entries", r->reverse, to - from);
		}
		i = r->reverse ? to - 1 - got : from + got;
		if (!json_equal(k, m->k[i]) || !json_equal(v, m->v[i])) {
			char *a = json_dumps(k, JSON_ENCODE_ANY), *b = json_dumps(m->k[i], JSON_ENCODE_ANY);
			snprintf(failure, sizeof(failure), "range (reverse %d) entry %zu: key %s, model %s",
				 r->reverse, got, a, b);
			jfree(a);
			jfree(b);
			opt_btree_cursor_free(c);
			return 0;
		}
		got++;
	}
	opt_btree_cursor_free(c);
	if (rc < 0)
		FAIL("cursor_next: %s", opt_error_last());
	if (got != to - from)
		FAIL("range (reverse %d) yields %zu entries, the model %zu", r->reverse, got, to - from);
	return 1;
}

/* A source over the committed blocks that hands out leaves as their
 * canonical text, as a store does: readers scan them instead. */
static void free_text(void *p)
{
	free(p);
}

static int text_get(void *ctx, const char *id, json_t **out)
{
	json_t *b = json_object_get(ctx, id);

	*out = NULL;
	if (!b)
		return OPT_ENOTFOUND;
	*out = json_incref(b);
	return 0;
}

static int text_get_raw(void *ctx, const char *id, json_t **out, struct opt_bytes *raw)
{
	json_t *b = json_object_get(ctx, id);
	char *t;
	size_t n;

	*out = NULL;
	memset(raw, 0, sizeof(*raw));
	if (!b)
		return OPT_ENOTFOUND;
	if (!json_object_get(b, "entries")) {
		*out = json_incref(b);
		return 0;
	}
	if (opt_json_canon(&t, &n, b) < 0)
		return OPT_EIO;
	raw->data = t;
	raw->len = n;
	raw->release = free_text;
	raw->owner = t;
	return 0;
}

/* After a flush: every reader that scans leaves as text agrees with the
 * model (lookups of every key and of absent ones, both scans as values
 * and as text, count). */
static int check_text_reads(struct store *s, const struct model *m, unsigned domain)
{
	struct opt_source src = { text_get, s->base, text_get_raw };
	struct opt_btree_range fwd = { NULL, 0, NULL, 0, 0 }, rev = { NULL, 0, NULL, 0, 1 };
	struct opt_btree_cursor *c;
	const char *k, *v;
	size_t kl, vl, i, n, got = 0;
	int rc;

	for (i = 0; i < m->n; i++) {
		json_t *val = NULL;
		char *t = NULL, *want = NULL;
		size_t tl;
		if (opt_btree_get(&src, s->hid, m->k[i], &val) < 0 || !json_equal(val, m->v[i])) {
			json_decref(val);
			FAIL("text source: get of a present key");
		}
		json_decref(val);
		if (opt_btree_get_text(&src, s->hid, m->k[i], &t, &tl) < 0 || opt_json_canon(&want, NULL, m->v[i]) < 0 ||
		    strcmp(t, want) != 0 || tl != strlen(want)) {
			free(t);
			free(want);
			FAIL("text source: get_text of a present key");
		}
		free(t);
		free(want);
	}
	for (i = 0; i < 20; i++) {
		json_t *key = key_of(rn(domain)), *val = NULL;
		size_t j;
		int want = model_has(m, key, &j) ? 0 : OPT_ENOTFOUND;
		rc = opt_btree_get(&src, s->hid, key, &val);
		json_decref(val);
		json_decref(key);
		if (rc != want)
			FAIL("text source: get of a random key: rc %d, model %d", rc, want);
	}
	if (opt_btree_count(&src, s->hid, &n) < 0 || n != m->n)
		FAIL("text source: count");
	if (!check_range(&src, s->hid, m, &fwd) || !check_range(&src, s->hid, m, &rev))
		return 0;
	if (opt_btree_cursor_open(&c, &src, s->hid, NULL) < 0)
		FAIL("text source: cursor_open: %s", opt_error_last());
	while ((rc = opt_btree_cursor_next_text(c, &k, &kl, &v, &vl)) == 1) {
		char *wk = NULL, *wv = NULL;
		int same = got < m->n && opt_json_canon(&wk, NULL, m->k[got]) == 0 &&
			   opt_json_canon(&wv, NULL, m->v[got]) == 0 && strlen(wk) == kl && memcmp(wk, k, kl) == 0 &&
			   strlen(wv) == vl && memcmp(wv, v, vl) == 0;
		free(wk);
		free(wv);
		if (!same) {
			opt_btree_cursor_free(c);
			FAIL("text source: next_text entry %zu differs from the model", got);
		}
		got++;
	}
	opt_btree_cursor_free(c);
	if (rc < 0 || got != m->n)
		FAIL("text source: next_text gave %zu entries (rc %d), model %zu", got, rc, m->n);
	return 1;
}

static int check_count(struct store *s, const struct model *m)
{
	size_t n;

	if (opt_btree_count(&s->tsrc, s->hid, &n) < 0)
		FAIL("count: %s", opt_error_last());
	if (n != m->n)
		FAIL("count %zu, model %zu", n, m->n);
	return 1;
}

/* The stored bytes of a block of s: its canonical JSON, or (the one
 * block named by s_pretty) an indented text of the same value. */
static const char *s_pretty;

static void free_bytes(void *p)
{
	free(p);
}

static int canon_text(void *ctx, const char *id, char **buf, size_t *len);

static int canon_bytes(void *ctx, const char *id, struct opt_bytes *out)
{
	char *buf = NULL;
	size_t len = 0;
	int rc = canon_text(ctx, id, &buf, &len);

	memset(out, 0, sizeof(*out));
	if (rc < 0)
		return rc;
	out->data = buf;
	out->len = len;
	out->release = free_bytes;
	out->owner = buf;
	return 0;
}

static int canon_text(void *ctx, const char *id, char **buf, size_t *len)
{
	struct store *s = ctx;
	const json_t *b;

	if (opt_tracker_get(s->t, id, &b) < 0)
		return OPT_ENOTFOUND;
	if (s_pretty && strcmp(id, s_pretty) == 0) {
		/* "{ ...": the same value, with a space */
		char *c = NULL;
		size_t cl = 0;
		int rc = opt_json_canon(&c, &cl, b);
		if (rc < 0)
			return rc;
		*buf = malloc(cl + 2);
		if (!*buf) {
			free(c);
			return OPT_EIO;
		}
		(*buf)[0] = '{';
		(*buf)[1] = ' ';
		memcpy(*buf + 2, c + 1, cl - 1);
		(*buf)[cl + 1] = '\0';
		*len = cl + 1;
		free(c);
		return 0;
	}
	return opt_json_canon(buf, len, b);
}

/* opt_btree_check on the text (opts.bytes) judges s as parsed: the same
 * result, count and message. */
static int check_text_same(struct store *s)
{
	char msg[512];
	size_t n1 = 0, n2 = 0;
	int rc1, rc2;

	rc1 = opt_btree_check(&s->tsrc, s->hid, NULL, &n1);
	snprintf(msg, sizeof(msg), "%s", rc1 < 0 ? opt_error_last() : "");
	rc2 = opt_btree_check(&s->tsrc, s->hid, &(struct opt_btree_check_opts){ .bytes = canon_bytes, .bctx = s }, &n2);
	if (rc1 != rc2 || n1 != n2 || (rc1 < 0 && strcmp(msg, opt_error_last()) != 0))
		FAIL("text check: %d %zu '%.200s', parsed: %d %zu '%.200s'", rc2, n2, rc2 < 0 ? opt_error_last() : "", rc1, n1, msg);
	return 1;
}

static int check_full(struct store *s, const struct model *m)
{
	struct opt_btree_range fwd = { NULL, 0, NULL, 0, 0 }, rev = { NULL, 0, NULL, 0, 1 };
	size_t n;

	if (opt_btree_check(&s->tsrc, s->hid, NULL, &n) < 0)
		FAIL("check: %s", opt_error_last());
	if (n != m->n)
		FAIL("check counts %zu, model %zu", n, m->n);
	if (!check_text_same(s))
		return 0;
	return check_range(&s->tsrc, s->hid, m, &fwd) && check_range(&s->tsrc, s->hid, m, &rev);
}

/* A random range: wide (either bound open, or anywhere), or narrow (a
 * window of up to 24 entries from a bound that may fall between keys). */
static int check_random_range(struct store *s, const struct model *m, unsigned domain, int wide)
{
	struct opt_btree_range r;
	json_t *lo = NULL, *hi = NULL;
	int ok;

	if (wide) {
		lo = rn(5) ? bound_of(domain, m) : NULL;
		hi = rn(5) ? bound_of(domain, m) : NULL;
	} else {
		size_t j;
		lo = bound_of(domain, m);
		j = model_lower(m, lo, 0) + rn(24);
		hi = j < m->n ? json_incref(m->k[j]) : NULL;
	}
	r.lo = lo;
	r.hi = hi;
	r.lo_incl = (int)rn(2);
	r.hi_incl = (int)rn(2);
	r.reverse = (int)rn(2);
	ok = check_range(&s->tsrc, s->hid, m, &r);
	if (!ok) {
		char *a = lo ? json_dumps(lo, JSON_ENCODE_ANY) : NULL, *b = hi ? json_dumps(hi, JSON_ENCODE_ANY) : NULL;
		printf("# range lo %s (incl %d) hi %s (incl %d) reverse %d\n", a ? a : "-", r.lo_incl,
		       b ? b : "-", r.hi_incl, r.reverse);
		jfree(a);
		jfree(b);
	}
	json_decref(lo);
	json_decref(hi);
	return ok;
}

static int check_lookup(struct store *s, const struct model *m, const json_t *key)
{
	json_t *v = NULL;
	size_t i;
	int rc = opt_btree_get(&s->tsrc, s->hid, key, &v), has = model_has(m, key, &i), ok = 1;

	if (has && (rc < 0 || !json_equal(v, m->v[i]))) {
		snprintf(failure, sizeof(failure), "get of a present key: rc %d", rc);
		ok = 0;
	} else if (!has && rc != OPT_ENOTFOUND) {
		snprintf(failure, sizeof(failure), "get of an absent key: rc %d", rc);
		ok = 0;
	}
	json_decref(v);
	return ok;
}

/* ---- randomized runs ---- */

static long total_ops;

/* ops operations on a tree of capacity cap over keys key_of(0..domain),
 * in phases that grow and shrink the tree; full scans every full_every
 * operations (count, lookups and a random range every operation). */
static void random_run(int cap, long ops, unsigned domain, long phase_len, long full_every)
{
	static const int put_pct[] = { 70, 48, 22 }, del_pct[] = { 20, 45, 70 };
	struct store s;
	struct model m = { 0 };
	long op;
	int ok = 1, max_depth = 0;
	size_t max_n = 0, empties = 0;

	CHECK_RC(store_open(&s, cap));
	for (op = 0; op < ops && ok; op++) {
		int ph = (int)((op / phase_len) % 3), r = (int)rn(100);
		json_t *key = NULL, *val = NULL;
		const char *what = "range";

		if (r < put_pct[ph]) {
			int rep = -1, mrep;
			what = "put";
			key = key_of(rn(domain));
			val = rn(8) ? json_integer(op) : json_pack("{s:I,s:[i]}", "op", (json_int_t)op, "c", cap);
			if (opt_btree_put(s.t, s.hid, key, val, &rep) < 0) {
				snprintf(failure, sizeof(failure), "put: %s", opt_error_last());
				ok = 0;
			}
			mrep = model_put(&m, key, val);
			if (ok && rep != mrep) {
				snprintf(failure, sizeof(failure), "put replaced %d, model %d", rep, mrep);
				ok = 0;
			}
		} else if (r == 99) {
			/* a batch with duplicates, like puts in turn */
			json_t *bk[40], *bv[40];
			unsigned nb = 1 + rn(40), j;
			what = "put_many";
			for (j = 0; j < nb; j++) {
				bk[j] = j && rn(4) == 0 ? json_incref(bk[rn(j)]) : key_of(rn(domain));
				bv[j] = json_pack("[I,i]", (json_int_t)op, (int)j);
			}
			if (opt_btree_put_many(s.t, s.hid, (const json_t *const *)bk, (const json_t *const *)bv,
					       nb) < 0) {
				snprintf(failure, sizeof(failure), "put_many: %s", opt_error_last());
				ok = 0;
			}
			for (j = 0; j < nb; j++)
				model_put(&m, bk[j], bv[j]);
			for (j = 0; j < nb && ok; j++)
				ok = check_lookup(&s, &m, bk[j]);
			for (j = 0; j < nb; j++) {
				json_decref(bk[j]);
				json_decref(bv[j]);
			}
		} else if (r < put_pct[ph] + del_pct[ph]) {
			int rc, had;
			what = "del";
			key = m.n && rn(5) ? json_incref(m.k[rn((unsigned)m.n)]) : key_of(rn(domain));
			rc = opt_btree_del(s.t, s.hid, key);
			had = model_del(&m, key);
			if (had && m.n == 0)
				empties++;
			if ((had && rc != 0) || (!had && rc != OPT_ENOTFOUND)) {
				snprintf(failure, sizeof(failure), "del: rc %d, model had %d: %s", rc, had,
					 opt_error_last());
				ok = 0;
			}
		}
		if (ok && key)
			ok = check_lookup(&s, &m, key);
		if (ok)
			ok = check_count(&s, &m) &&
			     check_random_range(&s, &m, domain, full_every == 1 || op % 25 == 0) &&
			     check_random_range(&s, &m, domain, 0);
		if (ok && (op % full_every == 0 || m.n == 0))
			ok = check_full(&s, &m);
		if (ok && op % 997 == 996) {
			CHECK_RC(store_flush(&s));
			ok = no_leaked_blocks(&s);
			if (!ok)
				snprintf(failure, sizeof(failure), "leaked blocks");
			else
				ok = check_text_reads(&s, &m, domain);
		}
		if (m.n > max_n)
			max_n = m.n;
		if (op % 64 == 0) {
			const json_t *b = root_block(&s);
			int depth = 1;
			while (b && json_object_get(b, "nodes")) {
				const json_t *c = NULL;
				opt_tracker_get(s.t, json_string_value(json_array_get(json_object_get(b, "nodes"), 0)), &c);
				b = c;
				depth++;
			}
			if (depth > max_depth)
				max_depth = depth;
		}
		if (!ok) {
			char *k = key ? json_dumps(key, JSON_ENCODE_ANY) : NULL;
			printf("# capacity %d, operation %ld (%s %s): %s\n", cap, op, what, k ? k : "",
			       failure);
			jfree(k);
		}
		json_decref(key);
		json_decref(val);
	}
	CHECK(ok);
	total_ops += op;
	/* delete everything: back to one empty leaf root, no leaked blocks */
	while (ok && m.n) {
		json_t *key = json_incref(m.k[rn((unsigned)m.n)]);
		CHECK(opt_btree_del(s.t, s.hid, key) == 0);
		model_del(&m, key);
		json_decref(key);
		if (m.n % 50 == 0)
			ok = check_full(&s, &m);
	}
	if (ok) {
		const json_t *root = root_block(&s);
		CHECK(root && strcmp(opt_block_type(root), "TL") == 0 &&
		      json_array_size(json_object_get(root, "entries")) == 0);
		CHECK_RC(store_flush(&s));
		CHECK(no_leaked_blocks(&s));
		CHECK(json_object_size(s.base) == 2);
	} else {
		printf("# %s\n", failure);
		CHECK(0);
	}
	printf("# capacity %d: %ld operations, largest tree %zu entries, depth up to %d, emptied %zu times\n",
	       cap, op, max_n, max_depth, empties);
	model_free(&m);
	store_close(&s);
}

TEST(random_cap4)
{
	random_run(4, scaled(50000), 160, 300, 1);
}

TEST(random_cap5)
{
	random_run(5, scaled(45000), 200, 400, 1);
}

TEST(random_cap8)
{
	random_run(8, scaled(45000), 500, 800, 2);
}

TEST(random_cap64)
{
	random_run(64, scaled(65000), 40000, 8000, 250);
}

TEST(random_total)
{
	printf("# %ld randomized operations in all\n", total_ops);
	CHECK(total_ops >= scaled(200000));
}

/* ---- specific cases ---- */

static void put_int(struct store *s, long k, long v)
{
	json_t *key = json_integer(k), *val = json_integer(v);

	CHECK_RC(opt_btree_put(s->t, s->hid, key, val, NULL));
	json_decref(key);
	json_decref(val);
}

static int get_int(struct store *s, long k, long *v)
{
	json_t *key = json_integer(k), *val = NULL;
	int rc = opt_btree_get(&s->tsrc, s->hid, key, &val);

	if (rc == 0)
		*v = (long)json_integer_value(val);
	json_decref(key);
	json_decref(val);
	return rc;
}

/* Scan everything forward and backward: the keys must be 0..n-1 with
 * values 10 * key. */
static void scan_ints(struct store *s, long n)
{
	struct opt_btree_range rev = { NULL, 0, NULL, 0, 1 };
	struct opt_btree_cursor *c;
	const json_t *k, *v;
	long i = 0;
	size_t cnt;

	CHECK_RC(opt_btree_cursor_open(&c, &s->tsrc, s->hid, NULL));
	while (opt_btree_cursor_next(c, &k, &v) == 1) {
		CHECK(json_integer_value(k) == i && json_integer_value(v) == 10 * i);
		i++;
	}
	opt_btree_cursor_free(c);
	CHECK(i == n);
	CHECK_RC(opt_btree_cursor_open(&c, &s->tsrc, s->hid, &rev));
	while (opt_btree_cursor_next(c, &k, &v) == 1) {
		i--;
		CHECK(json_integer_value(k) == i);
	}
	opt_btree_cursor_free(c);
	CHECK(i == 0);
	CHECK_RC(opt_btree_count(&s->tsrc, s->hid, &cnt));
	CHECK(cnt == (size_t)n);
	cnt = 0;
	CHECK_RC(opt_btree_check(&s->tsrc, s->hid, NULL, &cnt));
	CHECK(cnt == (size_t)n);
}

TEST(regression_out_of_order)
{
	static const long keys[] = { 5, 9, 8, 10, 7, 3, 0, 1, 2, 6, 4 };
	struct store s;
	size_t i;
	long v;

	CHECK_RC(store_open(&s, 4));
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		put_int(&s, keys[i], keys[i] * 10);
		CHECK_RC(opt_btree_check(&s.tsrc, s.hid, NULL, NULL));
	}
	for (i = 0; i <= 10; i++) {
		CHECK(get_int(&s, (long)i, &v) == 0 && v == (long)i * 10);
	}
	CHECK(get_int(&s, 11, &v) == OPT_ENOTFOUND);
	CHECK(get_int(&s, -1, &v) == OPT_ENOTFOUND);
	scan_ints(&s, 11);
	store_close(&s);
}

TEST(shuffled_10000)
{
	struct store s;
	long *keys = malloc(10000 * sizeof(*keys)), i, v, found = 0;
	const json_t *root;

	CHECK_RC(store_open(&s, 64));
	for (i = 0; i < 10000; i++)
		keys[i] = i;
	shuffle(keys, 10000);
	for (i = 0; i < 10000; i++)
		put_int(&s, keys[i], keys[i] * 10);
	for (i = 0; i < 10000; i++)
		found += get_int(&s, i, &v) == 0 && v == i * 10;
	CHECK(found == 10000);
	scan_ints(&s, 10000);
	root = root_block(&s);
	CHECK(root && strcmp(opt_block_type(root), "TB") == 0);
	/* and delete them all in another order, through a committed base */
	CHECK_RC(store_flush(&s));
	CHECK(no_leaked_blocks(&s));
	shuffle(keys, 10000);
	for (i = 0; i < 10000; i++) {
		json_t *k = json_integer(keys[i]);
		CHECK(opt_btree_del(s.t, s.hid, k) == 0);
		json_decref(k);
		if (i % 500 == 0)
			CHECK_RC(opt_btree_check(&s.tsrc, s.hid, NULL, NULL));
		if (i == 5000) {
			CHECK_RC(store_flush(&s));
			CHECK(no_leaked_blocks(&s));
		}
	}
	root = root_block(&s);
	CHECK(root && strcmp(opt_block_type(root), "TL") == 0 &&
	      json_array_size(json_object_get(root, "entries")) == 0);
	CHECK_RC(store_flush(&s));
	CHECK(json_object_size(s.base) == 2);
	free(keys);
	store_close(&s);
}

/* Ascending and descending runs of puts and deletes drive the borrow and
 * merge paths one side at a time. */
TEST(sequential)
{
	static const int caps[] = { 4, 5, 6, 7, 16 };
	size_t ci;

	for (ci = 0; ci < sizeof(caps) / sizeof(caps[0]); ci++) {
		int pass;
		for (pass = 0; pass < 4; pass++) {
			struct store s;
			const long n = 600;
			long i, bad = 0;
			size_t cnt;
			CHECK_RC(store_open(&s, caps[ci]));
			for (i = 0; i < n; i++)
				put_int(&s, pass & 1 ? n - 1 - i : i, (pass & 1 ? n - 1 - i : i) * 10);
			scan_ints(&s, n);
			for (i = 0; i < n; i++) {
				long k = pass & 2 ? n - 1 - i : i;
				json_t *key = json_integer(k);
				bad += opt_btree_del(s.t, s.hid, key) != 0;
				json_decref(key);
				if (opt_btree_check(&s.tsrc, s.hid, NULL, &cnt) < 0 || cnt != (size_t)(n - 1 - i)) {
					printf("# capacity %d pass %d after deleting %ld: %s\n", caps[ci], pass, k,
					       opt_error_last());
					bad++;
					break;
				}
			}
			CHECK(bad == 0);
			CHECK_RC(store_flush(&s));
			CHECK(json_object_size(s.base) == 2);
			store_close(&s);
		}
	}
}

TEST(ascending_split_like_original)
{
	/* 0..64 ascending at capacity 64: leaves [0..31] and [32..64] */
	struct store s;
	const json_t *root, *l, *r;
	long i;

	CHECK_RC(store_open(&s, 64));
	for (i = 0; i <= 64; i++)
		put_int(&s, i, i * 10);
	root = root_block(&s);
	CHECK(root && json_array_size(json_object_get(root, "nodes")) == 2);
	if (root && json_array_size(json_object_get(root, "nodes")) == 2) {
		CHECK(json_integer_value(json_array_get(json_object_get(root, "partitions"), 0)) == 32);
		CHECK(opt_tracker_get(s.t, json_string_value(json_array_get(json_object_get(root, "nodes"), 0)), &l) == 0);
		CHECK(opt_tracker_get(s.t, json_string_value(json_array_get(json_object_get(root, "nodes"), 1)), &r) == 0);
		CHECK(json_array_size(json_object_get(l, "entries")) == 32);
		CHECK(json_array_size(json_object_get(r, "entries")) == 33);
	}
	scan_ints(&s, 65);
	store_close(&s);
}

TEST(create_and_errors)
{
	struct store s;
	json_t *h, *k = json_integer(1), *obj = json_object(), *v = NULL;
	const json_t *hb;
	struct opt_btree_cursor *c;
	struct opt_btree_range r = { NULL, 0, NULL, 0, 0 };
	char id[OPT_ID_MAX + 1];

	CHECK_RC(store_open(&s, OPT_BTREE_DEFAULT_CAPACITY));
	CHECK(opt_tracker_get(s.t, s.hid, &hb) == 0);
	CHECK(json_integer_value(json_object_get(hb, "capacity")) == 64);
	CHECK(opt_btree_create(s.t, s.hid, "c", 64) == OPT_EINVAL); /* already a tree */
	CHECK(opt_btree_create(s.t, "nosuchblock", "c", 64) == OPT_ENOTFOUND);
	CHECK_RC(opt_block_new(&h, NULL, "TR", "c"));
	strcpy(id, opt_block_id(h));
	CHECK_RC(opt_tracker_insert_new(s.t, h));
	CHECK(opt_btree_create(s.t, id, "c", 3) == OPT_EINVAL);
	CHECK(opt_btree_create(s.t, id, "c", 4097) == OPT_EINVAL);
	CHECK(opt_btree_create(s.t, id, "c", 0) == OPT_EINVAL);
	CHECK(opt_btree_get(&s.tsrc, id, k, &v) == OPT_EINTEGRITY); /* no tree there */
	CHECK_RC(opt_btree_create(s.t, id, "c", 4));
	CHECK(opt_btree_create(s.t, id, "c", 4) == OPT_EINVAL);
	/* invalid keys */
	CHECK(opt_btree_put(s.t, s.hid, obj, k, NULL) == OPT_EINVAL);
	CHECK(opt_btree_put(s.t, s.hid, json_true(), k, NULL) == OPT_EINVAL);
	CHECK(opt_btree_get(&s.tsrc, s.hid, obj, &v) == OPT_EINVAL);
	CHECK(opt_btree_del(s.t, s.hid, obj) == OPT_EINVAL);
	r.lo = obj;
	CHECK(opt_btree_cursor_open(&c, &s.tsrc, s.hid, &r) == OPT_EINVAL);
	{
		/* a batch with an invalid key changes nothing */
		const json_t *bk[2] = { k, obj }, *bv[2] = { k, k };
		CHECK(opt_btree_put_many(s.t, s.hid, bk, bv, 2) == OPT_EINVAL);
		CHECK(opt_btree_put_many(s.t, s.hid, bk, bv, 0) == 0);
	}
	/* empty tree */
	CHECK(opt_btree_get(&s.tsrc, s.hid, k, &v) == OPT_ENOTFOUND);
	CHECK(opt_btree_del(s.t, s.hid, k) == OPT_ENOTFOUND);
	CHECK_RC(opt_btree_cursor_open(&c, &s.tsrc, s.hid, NULL));
	{
		const json_t *ck, *cv;
		CHECK(opt_btree_cursor_next(c, &ck, &cv) == 0);
		CHECK(opt_btree_cursor_next(c, &ck, &cv) == 0);
	}
	opt_btree_cursor_free(c);
	opt_btree_cursor_free(NULL);
	/* values of any type, null included; replace reports it */
	{
		int rep = -1;
		CHECK_RC(opt_btree_put(s.t, s.hid, k, json_null(), &rep));
		CHECK(rep == 0);
		CHECK_RC(opt_btree_put(s.t, s.hid, k, obj, &rep));
		CHECK(rep == 1);
		CHECK_RC(opt_btree_get(&s.tsrc, s.hid, k, &v));
		CHECK(json_is_object(v));
		json_decref(v);
		v = NULL;
	}
	CHECK(opt_btree_get(&s.tsrc, "nosuchblock", k, &v) == OPT_ENOTFOUND);
	json_decref(k);
	json_decref(obj);
	store_close(&s);
}

/* Corrupt one block in various ways: the check must name it. */
TEST(check_detects_corruption)
{
	struct store s;
	json_t *blk;
	const json_t *root, *b;
	char leaf[OPT_ID_MAX + 1], branch[OPT_ID_MAX + 1];
	long i;
	int kind;

	CHECK_RC(store_open(&s, 4));
	for (i = 0; i < 40; i++)
		put_int(&s, i, i * 10);
	CHECK_RC(opt_btree_check(&s.tsrc, s.hid, NULL, NULL));
	root = root_block(&s);
	strcpy(branch, opt_block_id(root));
	b = root;
	while (json_object_get(b, "nodes"))
		opt_tracker_get(s.t, json_string_value(json_array_get(json_object_get(b, "nodes"), 1)), &b);
	strcpy(leaf, opt_block_id(b));
	for (kind = 0; kind < 11; kind++) {
		json_t *op = NULL;
		size_t tok;
		int rc;

		opt_tracker_mark(s.t, &tok);
		switch (kind) {
		case 0: /* swap two entries: out of order */
			CHECK_RC(opt_tracker_get(s.t, leaf, &b));
			op = json_pack("[s,i,i,[O,O]]", "entries", 0, 2,
				       json_array_get(json_object_get(b, "entries"), 1),
				       json_array_get(json_object_get(b, "entries"), 0));
			break;
		case 1: /* a key outside its parent's bounds */
			op = json_pack("[s,i,i,[[i,i]]]", "entries", 0, 1, -5, 0);
			break;
		case 2: /* underfull leaf */
			CHECK_RC(opt_tracker_get(s.t, leaf, &b));
			op = json_pack("[s,i,I,[]]", "entries", 0,
				       (json_int_t)json_array_size(json_object_get(b, "entries")) - 1);
			break;
		case 3: /* a wrong type */
			op = json_pack("[s,i,i,[]]", "entries", 0, 0);
			CHECK_RC(opt_tracker_get(s.t, leaf, &b));
			blk = json_deep_copy(b);
			json_object_set_new(json_object_get(blk, "header"), "type", json_string("XX"));
			CHECK_RC(opt_tracker_insert_new(s.t, blk));
			break;
		case 4: /* a partition out of order in the root */
			CHECK_RC(opt_tracker_get(s.t, branch, &b));
			op = json_pack("[s,i,i,[i]]", "partitions", 0, 1, 1000);
			break;
		case 5: /* a missing child */
			op = json_pack("[s,i,i,[s]]", "nodes", 0, 1, "missingblock");
			break;
		case 6: /* another collection */
			op = json_pack("[s,i,i,[]]", "entries", 0, 0);
			CHECK_RC(opt_tracker_get(s.t, leaf, &b));
			blk = json_deep_copy(b);
			json_object_set_new(json_object_get(blk, "header"), "collection", json_string("other"));
			CHECK_RC(opt_tracker_insert_new(s.t, blk));
			break;
		case 7: /* a separator that does not route: the root's first
			 * partition moved below the keys it sends left */
			CHECK_RC(opt_tracker_get(s.t, branch, &b));
			op = json_pack("[s,i,i,[i]]", "partitions", 0, 1, -1);
			break;
		case 8: /* an entry that is not a pair */
			op = json_pack("[s,i,i,[[i]]]", "entries", 0, 1, 0);
			break;
		case 9: /* a key that is no key */
			CHECK_RC(opt_tracker_get(s.t, leaf, &b));
			op = json_pack("[s,i,i,[[{},i]]]", "entries", 0, 1, 0);
			break;
		case 10: /* too many entries in a leaf (capacity 4) */
			CHECK_RC(opt_tracker_get(s.t, leaf, &b));
			op = json_pack("[s,i,i,[[f,i],[f,i],[f,i],[f,i]]]", "entries", 1, 0, 10.1, 0, 10.2, 0, 10.3, 0, 10.4, 0);
			break;
		}
		CHECK_RC(opt_tracker_update(s.t, (kind >= 4 && kind <= 5) || kind == 7 ? branch : leaf, op));
		rc = opt_btree_check(&s.tsrc, s.hid, NULL, NULL);
		CHECK(rc == OPT_EINTEGRITY);
		CHECK(check_text_same(&s));
		rc = opt_btree_check(&s.tsrc, s.hid, NULL, NULL);
		CHECK(strstr(opt_error_last(), kind >= 4 && kind <= 5 ? branch : leaf) != NULL || kind == 7 ||
		      strstr(opt_error_last(), "missingblock") != NULL);
		printf("# corruption %d: %s\n", kind, opt_error_last());
		json_decref(op);
		opt_tracker_rollback(s.t, tok);
		CHECK_RC(opt_btree_check(&s.tsrc, s.hid, NULL, NULL));
	}
	/* a node stored as valid JSON, but not canonical, is refused by the
	 * text check (whose verdict stands on its canonical text) */
	s_pretty = leaf;
	CHECK(opt_btree_check(&s.tsrc, s.hid, &(struct opt_btree_check_opts){ .bytes = canon_bytes, .bctx = &s }, NULL) ==
	      OPT_EINTEGRITY);
	CHECK(strstr(opt_error_last(), "is not stored as canonical JSON") != NULL);
	s_pretty = NULL;
	CHECK(check_text_same(&s));
	scan_ints(&s, 40);
	store_close(&s);
}

/* Changes inside a savepoint roll back cleanly; a put and a del are each
 * all or nothing. */
TEST(rollback)
{
	struct store s;
	size_t tok;
	long i;

	CHECK_RC(store_open(&s, 5));
	for (i = 0; i < 300; i += 2)
		put_int(&s, i, i * 10);
	CHECK_RC(opt_tracker_mark(s.t, &tok));
	for (i = 1; i < 300; i += 2)
		put_int(&s, i, i * 10);
	for (i = 0; i < 300; i += 3) {
		json_t *k = json_integer(i);
		CHECK(opt_btree_del(s.t, s.hid, k) == 0);
		json_decref(k);
	}
	CHECK_RC(opt_btree_check(&s.tsrc, s.hid, NULL, NULL));
	opt_tracker_rollback(s.t, tok);
	{
		struct opt_btree_cursor *c;
		const json_t *k, *v;
		long n = 0;
		CHECK_RC(opt_btree_cursor_open(&c, &s.tsrc, s.hid, NULL));
		while (opt_btree_cursor_next(c, &k, &v) == 1) {
			CHECK(json_integer_value(k) == 2 * n);
			n++;
		}
		opt_btree_cursor_free(c);
		CHECK(n == 150);
	}
	CHECK_RC(opt_btree_check(&s.tsrc, s.hid, NULL, NULL));
	store_close(&s);
}

/* Ranges over a small tree, spelled out. */
TEST(ranges)
{
	struct store s;
	struct opt_btree_cursor *c;
	const json_t *k, *v;
	json_t *lo, *hi;
	long i;
	char got[256];

	CHECK_RC(store_open(&s, 4));
	for (i = 0; i < 20; i += 2)
		put_int(&s, i, i * 10);
	lo = json_integer(4);
	hi = json_real(9.5);
	{
		static const struct { int lo_incl, hi_incl, rev, use_lo, use_hi; const char *want; } cases[] = {
			{ 1, 1, 0, 1, 1, "4 6 8" },
			{ 0, 1, 0, 1, 1, "6 8" },
			{ 1, 1, 1, 1, 1, "8 6 4" },
			{ 0, 0, 1, 1, 1, "8 6" },
			{ 1, 0, 0, 1, 0, "4 6 8 10 12 14 16 18" },
			{ 0, 0, 1, 1, 0, "18 16 14 12 10 8 6" },
			{ 0, 1, 1, 0, 1, "8 6 4 2 0" },
			{ 0, 0, 0, 0, 1, "0 2 4 6 8" },
		};
		size_t j;
		for (j = 0; j < sizeof(cases) / sizeof(cases[0]); j++) {
			struct opt_btree_range r = { cases[j].use_lo ? lo : NULL, cases[j].lo_incl,
						     cases[j].use_hi ? hi : NULL, cases[j].hi_incl, cases[j].rev };
			got[0] = 0;
			CHECK_RC(opt_btree_cursor_open(&c, &s.tsrc, s.hid, &r));
			while (opt_btree_cursor_next(c, &k, &v) == 1)
				snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%ld", got[0] ? " " : "",
					 (long)json_integer_value(k));
			opt_btree_cursor_free(c);
			if (strcmp(got, cases[j].want) != 0)
				printf("# case %zu: got '%s', want '%s'\n", j, got, cases[j].want);
			CHECK(strcmp(got, cases[j].want) == 0);
		}
	}
	{
		/* lo > hi: empty; exclusive bounds on one key: empty */
		struct opt_btree_range r1 = { hi, 1, lo, 1, 0 }, r2 = { lo, 0, lo, 1, 1 };
		CHECK_RC(opt_btree_cursor_open(&c, &s.tsrc, s.hid, &r1));
		CHECK(opt_btree_cursor_next(c, &k, &v) == 0);
		opt_btree_cursor_free(c);
		CHECK_RC(opt_btree_cursor_open(&c, &s.tsrc, s.hid, &r2));
		CHECK(opt_btree_cursor_next(c, &k, &v) == 0);
		opt_btree_cursor_free(c);
	}
	json_decref(lo);
	json_decref(hi);
	store_close(&s);
}

/* A source that hands out a fresh copy of each block, so any block a
 * reader held on to would show in the allocation count. */
static int copying_get(void *ctx, const char *id, json_t **out)
{
	json_t *b = json_object_get(ctx, id);

	*out = NULL;
	if (!b)
		return OPT_ENOTFOUND;
	*out = json_deep_copy(b);
	return *out ? 0 : OPT_EIO;
}

TEST(bulk)
{
	/* 1,000,000 records in a long run; 200,000 (100,000 under ASan)
	 * in make check */
	const long n = long_run() ? 1000000 : UNDER_ASAN ? 100000 : 200000;
	struct store s;
	struct opt_source copying = { NULL, NULL, NULL };
	struct opt_btree_cursor *c;
	const json_t *k, *v;
	long *keys = malloc((size_t)n * sizeof(*keys)), i, prev = -1, seen = 0;
	json_t **jk = malloc((size_t)n * sizeof(*jk)), **jv = malloc((size_t)n * sizeof(*jv));
	double t0, t1;
	size_t cnt = 0, base_mem;
	int sorted = 1;

	CHECK_RC(store_open(&s, OPT_BTREE_DEFAULT_CAPACITY));
	for (i = 0; i < n; i++)
		keys[i] = i;
	shuffle(keys, (size_t)n);
	for (i = 0; i < n; i++) {
		jk[i] = json_integer(keys[i]);
		jv[i] = json_integer(keys[i] * 10);
	}
	/* one put at a time into a second tree (the common path) */
	{
		struct store s1;
		const long n1 = n / 5;
		CHECK_RC(store_open(&s1, OPT_BTREE_DEFAULT_CAPACITY));
		t0 = now_s();
		for (i = 0; i < n1; i++)
			if (opt_btree_put(s1.t, s1.hid, jk[i], jv[i], NULL) < 0)
				break;
		t1 = now_s();
		CHECK(i == n1);
		printf("# single put %ld: %.0f/s (%.2f s)%s\n", n1, (double)n1 / (t1 - t0), t1 - t0,
		       UNDER_ASAN ? " under ASan" : "");
		CHECK_RC(opt_btree_check(&s1.tsrc, s1.hid, NULL, &cnt));
		CHECK(cnt == (size_t)n1);
		store_close(&s1);
	}
	/* the whole batch at once */
	t0 = now_s();
	CHECK_RC(opt_btree_put_many(s.t, s.hid, (const json_t *const *)jk, (const json_t *const *)jv, (size_t)n));
	t1 = now_s();
	printf("# bulk put %ld: %.0f/s (%.2f s)%s\n", n, (double)n / (t1 - t0), t1 - t0,
	       UNDER_ASAN ? " under ASan" : "");
	for (i = 0; i < n; i++) {
		json_decref(jk[i]);
		json_decref(jv[i]);
	}
	free(jk);
	free(jv);
	CHECK_RC(opt_btree_check(&s.tsrc, s.hid, NULL, &cnt));
	CHECK(cnt == (size_t)n);
	CHECK_RC(store_flush(&s));
	CHECK(no_leaked_blocks(&s));

	/* a full scan through a copying source runs in bounded memory */
	copying.get = copying_get;
	copying.ctx = s.base;
	base_mem = mem_now;
	mem_peak = mem_now;
	t0 = now_s();
	CHECK_RC(opt_btree_cursor_open(&c, &copying, s.hid, NULL));
	while (opt_btree_cursor_next(c, &k, &v) == 1) {
		sorted &= json_integer_value(k) == prev + 1 && json_integer_value(v) == 10 * json_integer_value(k);
		prev = (long)json_integer_value(k);
		seen++;
	}
	opt_btree_cursor_free(c);
	t1 = now_s();
	CHECK(sorted && seen == n);
	printf("# scan %ld through a copying source: %.2f s, peak %zu bytes over the base\n", seen, t1 - t0,
	       mem_peak - base_mem);
	CHECK(mem_peak - base_mem < 512 * 1024);
	CHECK(mem_now == base_mem);
	mem_peak = mem_now;
	CHECK_RC(opt_btree_count(&copying, s.hid, &cnt));
	CHECK(cnt == (size_t)n);
	CHECK(mem_peak - base_mem < 512 * 1024);
	free(keys);
	store_close(&s);
}

/* ---- a bulk load of text into an empty tree ---- */

static int canon_text_cb(const char *id, const json_t *block, const struct opt_block_text *text, void *arg)
{
	json_t *v = NULL;
	char *s = NULL;
	size_t n = 0;
	int *bad = arg;

	(void)block;
	if (!text)
		return 0;
	if (opt_json_parse(&v, text->text, text->len) < 0 || opt_json_canon(&s, &n, v) < 0 || n != text->len ||
	    memcmp(s, text->text, n) != 0 || strcmp(opt_block_id(v), id) != 0 ||
	    strcmp(opt_block_type(v), text->type) != 0)
		(*bad)++;
	free(s);
	json_decref(v);
	return 0;
}

/* n entries from a small domain (duplicates), loaded as text into one
 * tree and put with opt_btree_put_many into another: the same entries
 * (keys and values byte for byte), a tree that checks out, full leaves,
 * canonical blocks. */
static json_t *plain_key(unsigned mode, unsigned n)
{
	char buf[64];

	if (n % 4 == 1 && mode != 1) {
		/* longer than the 16 bytes sorted by prefix, sharing them */
		snprintf(buf, sizeof(buf), "a-key-longer-than-16-bytes-%u%s", n % 1000, n % 3 ? "" : "x");
		return json_string(buf);
	}
	if (mode == 1 || (mode == 3 && n % 2)) {
		long long v = (long long)n * 7919 - 3000000;
		return json_integer(n % 5 == 0 ? v * 1000000000LL : v);
	}
	snprintf(buf, sizeof(buf), n % 3 ? "u%u" : "\xc3\xa9%u~", n);
	return json_string(buf);
}

/* mode 0: every kind of key (key_of); 1: integers; 2: strings without
 * escapes; 3: both (compared without parsing) */
static void load_one(int cap, size_t n, unsigned domain, unsigned mode)
{
	struct store a, b;
	json_t **keys = malloc((n + 1) * sizeof(*keys)), **vals = malloc((n + 1) * sizeof(*vals));
	struct opt_kv_text *kv = malloc((n + 1) * sizeof(*kv));
	char **texts = malloc((2 * n + 1) * sizeof(*texts));
	struct opt_btree_cursor *ca = NULL, *cb = NULL;
	size_t i, count = 0, ca_n = 0, cb_n = 0, check_n = 0, leaves;
	int bad = 0, ra, rb;

	CHECK_RC(store_open(&a, cap));
	CHECK_RC(store_open(&b, cap));
	for (i = 0; i < n; i++) {
		keys[i] = mode ? plain_key(mode, rn(domain)) : key_of(rn(domain));
		switch (rn(3)) {
		case 0: vals[i] = json_integer((json_int_t)rn(1000)); break;
		case 1: vals[i] = json_pack("{s:i,s:[s,n]}", "z", (int)rn(9), "a", "t\xc3\xa9xt\n", NULL); break;
		default: vals[i] = json_pack("s", "v"); break;
		}
		/* the key's text right before the value's, as the reader
		 * keeps them: not NUL-terminated */
		CHECK(opt_json_canon(&texts[2 * i], &kv[i].kl, keys[i]) == 0);
		CHECK(opt_json_canon(&texts[2 * i + 1], &kv[i].vl, vals[i]) == 0);
		texts[2 * i] = realloc(texts[2 * i], kv[i].kl + kv[i].vl);
		memcpy(texts[2 * i] + kv[i].kl, texts[2 * i + 1], kv[i].vl);
		kv[i].k = texts[2 * i];
		kv[i].v = texts[2 * i] + kv[i].kl;
	}
	CHECK_RC(opt_btree_put_many(a.t, a.hid, (const json_t *const *)keys, (const json_t *const *)vals, n));
	CHECK(opt_btree_load_text(b.t, b.hid, kv, n, &count) == 0);
	opt_tracker_foreach_text(b.t, canon_text_cb, &bad);
	CHECK(bad == 0);
	CHECK_RC(opt_btree_check(&b.tsrc, b.hid, NULL, &check_n));
	CHECK(check_n == count);
	CHECK_RC(opt_btree_cursor_open(&ca, &a.tsrc, a.hid, NULL));
	CHECK_RC(opt_btree_cursor_open(&cb, &b.tsrc, b.hid, NULL));
	for (;;) {
		const char *ka, *va, *kb, *vb;
		size_t kal, val, kbl, vbl;
		ra = opt_btree_cursor_next_text(ca, &ka, &kal, &va, &val);
		rb = opt_btree_cursor_next_text(cb, &kb, &kbl, &vb, &vbl);
		CHECK(ra == rb);
		if (ra != 1 || rb != 1)
			break;
		ca_n++;
		cb_n++;
		if (kal != kbl || memcmp(ka, kb, kal) != 0 || val != vbl || memcmp(va, vb, val) != 0) {
			printf("# cap %d n %zu: entry %zu differs: %.*s %.*s / %.*s %.*s\n", cap, n, ca_n, (int)kal, ka,
			       (int)val, va, (int)kbl, kb, (int)vbl, vb);
			CHECK(0);
			break;
		}
	}
	CHECK(ca_n == count && cb_n == count);
	/* full leaves: as few as the count allows */
	leaves = opt_tracker_count(b.t) - 1 - (count > (size_t)cap ? 1 : 0);
	if (count > (size_t)cap * (size_t)cap)
		leaves = 0;  /* more than one branch: not counted here */
	if (leaves)
		CHECK(leaves == (count + (size_t)cap - 1) / (size_t)cap || (count == 0 && leaves == 1));
	/* a tree that is not empty any more is not loaded again */
	if (count > 0)
		CHECK(opt_btree_load_text(b.t, b.hid, kv, n, &count) == 1);
	opt_btree_cursor_free(ca);
	opt_btree_cursor_free(cb);
	for (i = 0; i < n; i++) {
		json_decref(keys[i]);
		json_decref(vals[i]);
		free(texts[2 * i]);
		free(texts[2 * i + 1]);
	}
	free(keys);
	free(vals);
	free(kv);
	free(texts);
	store_close(&a);
	store_close(&b);
}

TEST(load_text)
{
	static const int caps[] = { 4, 5, 8, 64 };
	size_t ci, n;
	unsigned mode;

	for (ci = 0; ci < 4; ci++) {
		int cap = caps[ci];
		for (mode = 0; mode < 4; mode++) {
			for (n = 0; n <= (size_t)cap * 3 + 2; n++)
				load_one(cap, n, 100000, mode);
			load_one(cap, (size_t)cap * cap + 1, 100000, mode);
			load_one(cap, 3000, 100000, mode);
			load_one(cap, 3000, 300, mode);  /* many equal keys: the last wins */
		}
	}
	{
		/* an invalid key: nothing changes */
		struct store s;
		struct opt_kv_text kv[2] = { { "1", "1", 1, 1 }, { "{}", "2", 2, 1 } };
		size_t count = 9, before;
		CHECK_RC(store_open(&s, 4));
		before = opt_tracker_count(s.t);
		CHECK(opt_btree_load_text(s.t, s.hid, kv, 2, &count) == OPT_EINVAL);
		CHECK(count == 0 && opt_tracker_count(s.t) == before);
		store_close(&s);
	}
}

/* A batch of n entries for the merge test: keys from domain, their text
 * in kv (texts[] to free). */
static void batch_make(size_t n, unsigned domain, unsigned mode, json_t **keys, json_t **vals,
		       struct opt_kv_text *kv, char **texts)
{
	size_t i;

	for (i = 0; i < n; i++) {
		keys[i] = mode ? plain_key(mode, rn(domain)) : key_of(rn(domain));
		vals[i] = rn(2) ? json_integer((json_int_t)rn(1000)) : json_pack("{s:i,s:s}", "z", (int)rn(9), "a", "\xc3\xa9\n");
		CHECK(opt_json_canon(&texts[2 * i], &kv[i].kl, keys[i]) == 0);
		CHECK(opt_json_canon(&texts[2 * i + 1], &kv[i].vl, vals[i]) == 0);
		kv[i].k = texts[2 * i];
		kv[i].v = texts[2 * i + 1];
	}
}

static void batch_free(size_t n, json_t **keys, json_t **vals, char **texts)
{
	size_t i;

	for (i = 0; i < n; i++) {
		json_decref(keys[i]);
		json_decref(vals[i]);
		free(texts[2 * i]);
		free(texts[2 * i + 1]);
	}
}

/* A tree made by opt_btree_put_many, then batches merged as text into
 * one copy and put with opt_btree_put_many into another: the same
 * entries, *added the new keys, a tree that checks out, canonical text. */
static void merge_one(int cap, size_t n0, size_t nb, int batches, unsigned domain, unsigned mode)
{
	struct store a, b;
	size_t cnt = n0 > nb ? n0 : nb;
	json_t **keys = malloc((cnt + 1) * sizeof(*keys)), **vals = malloc((cnt + 1) * sizeof(*vals));
	struct opt_kv_text *kv = malloc((cnt + 1) * sizeof(*kv));
	char **texts = malloc((2 * cnt + 1) * sizeof(*texts));
	struct opt_btree_cursor *ca = NULL, *cb = NULL;
	size_t ca_n = 0, cb_n = 0, before = 0, after = 0, added = 0;
	int bad = 0, ra, rb, k;

	CHECK_RC(store_open(&a, cap));
	CHECK_RC(store_open(&b, cap));
	batch_make(n0, domain, mode, keys, vals, kv, texts);
	CHECK_RC(opt_btree_put_many(a.t, a.hid, (const json_t *const *)keys, (const json_t *const *)vals, n0));
	CHECK_RC(opt_btree_put_many(b.t, b.hid, (const json_t *const *)keys, (const json_t *const *)vals, n0));
	batch_free(n0, keys, vals, texts);
	for (k = 0; k < batches; k++) {
		batch_make(nb, domain, mode, keys, vals, kv, texts);
		CHECK_RC(opt_btree_check(&b.tsrc, b.hid, NULL, &before));
		CHECK_RC(opt_btree_put_many(a.t, a.hid, (const json_t *const *)keys, (const json_t *const *)vals, nb));
		CHECK(opt_btree_merge_text(b.t, NULL, b.hid, kv, nb, &added) == 0);
		CHECK_RC(opt_btree_check(&b.tsrc, b.hid, NULL, &after));
		CHECK(after == before + added);
		batch_free(nb, keys, vals, texts);
	}
	opt_tracker_foreach_text(b.t, canon_text_cb, &bad);
	CHECK(bad == 0);
	CHECK_RC(opt_btree_cursor_open(&ca, &a.tsrc, a.hid, NULL));
	CHECK_RC(opt_btree_cursor_open(&cb, &b.tsrc, b.hid, NULL));
	for (;;) {
		const char *ka, *va, *kb, *vb;
		size_t kal, val, kbl, vbl;
		ra = opt_btree_cursor_next_text(ca, &ka, &kal, &va, &val);
		rb = opt_btree_cursor_next_text(cb, &kb, &kbl, &vb, &vbl);
		CHECK(ra == rb);
		if (ra != 1 || rb != 1)
			break;
		ca_n++;
		cb_n++;
		if (kal != kbl || memcmp(ka, kb, kal) != 0 || val != vbl || memcmp(va, vb, val) != 0) {
			printf("# merge cap %d: entry %zu differs: %.*s %.*s / %.*s %.*s\n", cap, ca_n, (int)kal, ka,
			       (int)val, va, (int)kbl, kb, (int)vbl, vb);
			CHECK(0);
			break;
		}
	}
	CHECK(ca_n == after && cb_n == after);
	opt_btree_cursor_free(ca);
	opt_btree_cursor_free(cb);
	free(keys);
	free(vals);
	free(kv);
	free(texts);
	store_close(&a);
	store_close(&b);
}

TEST(merge_text)
{
	static const int caps[] = { 4, 5, 8, 64 };
	size_t ci;
	unsigned mode;

	for (ci = 0; ci < 4; ci++) {
		int cap = caps[ci];
		for (mode = 0; mode < 4; mode++) {
			merge_one(cap, 1, 1, 3, 1000, mode);
			merge_one(cap, 3, 7, 4, 1000, mode);
			merge_one(cap, (size_t)cap * 3, (size_t)cap, 5, 100000, mode);
			merge_one(cap, 500, 100, 5, 100000, mode);
			merge_one(cap, 500, 300, 3, 600, mode);     /* replacements, duplicates */
			merge_one(cap, 50, 2000, 2, 100000, mode);  /* leaves cut in many pieces */
		}
	}
}

int main(void)
{
	const char *env = getenv("OPT_TEST_SEED");

	json_set_alloc_funcs(count_malloc, count_free);
	opt_util_init();
	seed = env && *env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
	rng = seed;
	printf("# seed %llu\n", (unsigned long long)seed);
	RUN(regression_out_of_order);
	RUN(shuffled_10000);
	RUN(sequential);
	RUN(ascending_split_like_original);
	RUN(create_and_errors);
	RUN(ranges);
	RUN(check_detects_corruption);
	RUN(rollback);
	RUN(random_cap4);
	RUN(random_cap5);
	RUN(random_cap8);
	RUN(random_cap64);
	RUN(random_total);
	RUN(bulk);
	RUN(load_text);
	RUN(merge_text);
	return DONE();
}
