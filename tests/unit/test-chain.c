#include "harness.h"
#include "block.h"
#include "chain.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <stdint.h>
#include <time.h>

/* ---- a small reproducible PRNG ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static size_t rnd_below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

/* ---- a model deque ---- */

struct model {
	long *v;
	size_t start, end, cap;
};

static size_t m_size(const struct model *m)
{
	return m->end - m->start;
}

static long m_at(const struct model *m, size_t i)
{
	return m->v[m->start + i];
}

static void m_push(struct model *m, long x)
{
	if (m->end == m->cap) {
		if (m->start > 0) {
			memmove(m->v, m->v + m->start, m_size(m) * sizeof(long));
			m->end -= m->start;
			m->start = 0;
		} else {
			m->cap = m->cap ? m->cap * 2 : 64;
			m->v = realloc(m->v, m->cap * sizeof(long));
		}
	}
	m->v[m->end++] = x;
}

/* ---- a store: committed blocks plus a tracker over them ---- */

struct store {
	json_t *blocks;              /* committed: id -> block */
	struct opt_source src;
	struct opt_tracker *t;
	char hid[OPT_ID_MAX + 1];    /* the chain header */
};

static int commit_cb(const char *id, const json_t *block, void *arg)
{
	json_t *blocks = arg;

	if (block)
		json_object_set_new(blocks, id, json_deep_copy(block));
	else
		json_object_del(blocks, id);
	return 0;
}

static void store_open(struct store *s)
{
	json_t *h;

	memset(s, 0, sizeof(*s));
	s->blocks = json_object();
	s->src = opt_source_object(s->blocks);
	CHECK_RC(opt_tracker_new(&s->t, &s->src));
	CHECK_RC(opt_block_new(&h, NULL, "CHH", "coll"));
	snprintf(s->hid, sizeof(s->hid), "%s", opt_block_id(h));
	CHECK_RC(opt_tracker_insert_new(s->t, h));
	CHECK_RC(opt_chain_create(s->t, s->hid, NULL, "CHD"));
}

/* Write the tracker's changes into the committed blocks and start a fresh
 * tracker (the old one caches source blocks). */
static void store_commit(struct store *s)
{
	opt_tracker_foreach(s->t, commit_cb, s->blocks);
	opt_tracker_free(s->t);
	CHECK_RC(opt_tracker_new(&s->t, &s->src));
}

static void store_close(struct store *s)
{
	opt_tracker_free(s->t);
	json_decref(s->blocks);
}

static int view_cb(const char *id, const json_t *block, void *arg)
{
	if (block)
		json_object_set(arg, id, (json_t *)block);
	else
		json_object_del(arg, id);
	return 0;
}

/* Every live block: the committed ones with the tracker's changes. */
static json_t *store_view(struct store *s)
{
	json_t *view = json_copy(s->blocks);

	opt_tracker_foreach(s->t, view_cb, view);
	return view;
}

static const char *str(const json_t *b, const char *f)
{
	return json_string_value(json_object_get(b, f));
}

/* strcmp that takes NULL (as a string of its own) */
static int eq(const char *a, const char *b)
{
	return a && b ? strcmp(a, b) == 0 : a == b;
}

#define OPEN_OR_RETURN(expr) do { int o_rc_ = (expr); if (o_rc_ < 0) { \
	printf("# %s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, o_rc_, opt_error_last()); \
	h_failed_now = 1; return; } } while (0)

/* Walk the blocks of view from the header and check the layout: links both
 * ways, at most 32 entries, full middle blocks, non-empty ends (unless the
 * chain is one block), and no data block outside the chain.  Returns the
 * number of blocks. */
static size_t check_layout(json_t *view, const char *hid, size_t total)
{
	const json_t *h = json_object_get(view, hid), *b, *v;
	const char *cur, *prev = NULL, *id;
	size_t nblocks = 0, sum = 0, ndata = 0;

	CHECK(h != NULL);
	if (!h)
		return 0;
	cur = str(h, "headId");
	CHECK(cur && str(h, "tailId"));
	while (cur && nblocks < 1000000) {
		size_t len;
		b = json_object_get(view, cur);
		CHECK(b != NULL);
		if (!b)
			return nblocks;
		nblocks++;
		len = json_array_size(json_object_get(b, "entries"));
		sum += len;
		CHECK(len <= OPT_CHAIN_ENTRIES);
		CHECK(eq(opt_block_type(b), "CHD"));
		if (prev)
			CHECK(eq(str(b, "priorId"), prev));
		else
			CHECK(json_object_get(b, "priorId") == NULL);
		if (str(b, "nextId")) {
			if (prev)
				CHECK(len == OPT_CHAIN_ENTRIES);  /* middle */
			else
				CHECK(len > 0);                   /* head of several */
		} else {
			CHECK(json_object_get(b, "nextId") == NULL);
			CHECK(eq(cur, str(h, "tailId")));
			if (prev)
				CHECK(len > 0);                   /* tail of several */
		}
		prev = cur;
		cur = str(b, "nextId");
	}
	CHECK(sum == total);
	json_object_foreach(view, id, v)
		if (eq(opt_block_type(v), "CHD"))
			ndata++;
	CHECK(ndata == nblocks);  /* no leaked blocks */
	return nblocks;
}

/* Iterate src both ways and compare with the model. */
static void check_iter(const struct opt_source *src, const char *hid, const struct model *m)
{
	struct opt_chain_iter *it;
	const json_t *e;
	size_t i = 0, n = m_size(m), cnt;
	int rc, ok = 1;

	OPEN_OR_RETURN(opt_chain_iter_open(&it, src, hid, 1));
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		if (i >= n || json_integer_value(e) != m_at(m, i))
			ok = 0;
		i++;
	}
	CHECK(rc == 0);
	CHECK(ok && i == n);
	opt_chain_iter_free(it);

	OPEN_OR_RETURN(opt_chain_iter_open(&it, src, hid, 0));
	i = n;
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		if (i == 0 || json_integer_value(e) != m_at(m, i - 1))
			ok = 0;
		i--;
	}
	CHECK(rc == 0);
	CHECK(ok && i == 0);
	opt_chain_iter_free(it);

	CHECK_RC(opt_chain_count(src, hid, &cnt));
	CHECK(cnt == n);
	if (n) {
		json_t *l, *f;
		CHECK_RC(opt_chain_last(src, hid, &l));
		CHECK_RC(opt_chain_first(src, hid, &f));
		CHECK(json_integer_value(l) == m_at(m, n - 1));
		CHECK(json_integer_value(f) == m_at(m, 0));
		json_decref(l);
		json_decref(f);
	} else {
		json_t *l;
		CHECK(opt_chain_last(src, hid, &l) == OPT_ENOTFOUND);
		CHECK(l == NULL);
	}
}

/* Start iterating at model index k (found through a forward pass) both
 * ways. */
static void check_position(const struct opt_source *src, const char *hid, const struct model *m, size_t k)
{
	struct opt_chain_iter *it;
	struct opt_chain_pos pos;
	const json_t *e;
	size_t i;
	int rc, ok = 1;

	OPEN_OR_RETURN(opt_chain_iter_open(&it, src, hid, 1));
	CHECK(opt_chain_iter_pos(it, &pos) == OPT_EINVAL);
	for (i = 0; i <= k; i++)
		CHECK(opt_chain_iter_next(it, &e) == 1);
	CHECK_RC(opt_chain_iter_pos(it, &pos));
	opt_chain_iter_free(it);

	OPEN_OR_RETURN(opt_chain_iter_open_at(&it, src, &pos, 1));
	for (i = k; (rc = opt_chain_iter_next(it, &e)) == 1; i++)
		if (i >= m_size(m) || json_integer_value(e) != m_at(m, i))
			ok = 0;
	CHECK(rc == 0 && i == m_size(m));
	opt_chain_iter_free(it);

	OPEN_OR_RETURN(opt_chain_iter_open_at(&it, src, &pos, 0));
	for (i = k + 1; (rc = opt_chain_iter_next(it, &e)) == 1; i--)
		if (i == 0 || json_integer_value(e) != m_at(m, i - 1))
			ok = 0;
	CHECK(rc == 0 && i == 0);
	CHECK(ok);
	opt_chain_iter_free(it);
}

static void check_all(struct store *s, const struct model *m)
{
	json_t *view = store_view(s);
	struct opt_source tsrc = opt_tracker_source(s->t), vsrc = opt_source_object(view);

	check_layout(view, s->hid, m_size(m));
	check_iter(&tsrc, s->hid, m);
	check_iter(&vsrc, s->hid, m);
	if (m_size(m) && rnd_below(4) == 0)
		check_position(&vsrc, s->hid, m, rnd_below(m_size(m)));
	json_decref(view);
}

static json_t *ints(long from, size_t n)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; i < n; i++)
		json_array_append_new(a, json_integer(from + (long)i));
	return a;
}

static size_t draw_count(void)
{
	switch (rnd_below(8)) {
	case 0: return 0;
	case 1: return 1;
	case 2: return 31 + rnd_below(3);     /* around one block */
	case 3: return 63 + rnd_below(3);     /* around two */
	case 4: return 100 + rnd_below(100);
	default: return rnd_below(40);
	}
}

TEST(randomized_against_model)
{
	struct store s;
	struct model m = { 0 };
	long next = 0;
	int step, ok = 1;

	store_open(&s);
	check_all(&s, &m);
	for (step = 0; step < 1500 && ok; step++) {
		size_t n = draw_count(), i;
		json_t *got = NULL;
		unsigned what = (unsigned)rnd_below(4);

		if (what <= 1) {
			json_t *a = ints(next, n);
			CHECK_RC(opt_chain_add(s.t, s.hid, a));
			json_decref(a);
			for (i = 0; i < n; i++)
				m_push(&m, next++);
		} else if (what == 2) {
			size_t k = n < m_size(&m) ? n : m_size(&m);
			CHECK_RC(opt_chain_pop(s.t, s.hid, n, &got));
			CHECK(json_array_size(got) == k);
			for (i = 0; i < k && got; i++)
				if (json_integer_value(json_array_get(got, i)) != m_at(&m, m_size(&m) - k + i))
					ok = 0;
			m.end -= k;
		} else {
			size_t k = n < m_size(&m) ? n : m_size(&m);
			CHECK_RC(opt_chain_dequeue(s.t, s.hid, n, &got));
			CHECK(json_array_size(got) == k);
			for (i = 0; i < k && got; i++)
				if (json_integer_value(json_array_get(got, i)) != m_at(&m, i))
					ok = 0;
			m.start += k;
		}
		json_decref(got);
		if (rnd_below(40) == 0)
			store_commit(&s);
		check_all(&s, &m);
		if (h_failed_now)
			ok = 0;
	}
	CHECK(ok);
	if (!ok)
		printf("# failed at step %d\n", step);
	store_close(&s);
	free(m.v);
}

static json_t *strs(const char *a, const char *b, const char *c)
{
	return json_pack("[s,s,s]", a, b, c);
}

TEST(pop_and_dequeue_order)
{
	struct store s;
	json_t *a = strs("t1", "t2", "t3"), *got, *want;

	store_open(&s);
	CHECK_RC(opt_chain_add(s.t, s.hid, a));
	CHECK_RC(opt_chain_pop(s.t, s.hid, 2, &got));
	want = json_pack("[s,s]", "t2", "t3");
	CHECK(json_equal(got, want));
	json_decref(got);
	json_decref(want);
	CHECK_RC(opt_chain_pop(s.t, s.hid, 0, &got));
	CHECK(json_is_array(got) && json_array_size(got) == 0);
	json_decref(got);
	CHECK_RC(opt_chain_add(s.t, s.hid, a));
	CHECK_RC(opt_chain_dequeue(s.t, s.hid, 2, &got));
	want = json_pack("[s,s]", "t1", "t1");
	CHECK(json_equal(got, want));      /* [t1] + [t1,t2,t3] dequeue 2 */
	json_decref(got);
	json_decref(want);
	CHECK_RC(opt_chain_pop(s.t, s.hid, 1000, &got));  /* more than there is */
	want = json_pack("[s,s]", "t2", "t3");
	CHECK(json_equal(got, want));
	json_decref(got);
	json_decref(want);
	CHECK_RC(opt_chain_dequeue(s.t, s.hid, 5, &got));
	CHECK(json_array_size(got) == 0);
	json_decref(got);
	json_decref(a);
	store_close(&s);
}

static size_t nblocks(struct store *s, size_t total)
{
	json_t *view = store_view(s);
	size_t n = check_layout(view, s->hid, total);

	json_decref(view);
	return n;
}

TEST(boundaries)
{
	static const size_t sizes[] = { 0, 1, 31, 32, 33, 64, 65, 96, 97 };
	size_t i, j;

	for (i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		size_t n = sizes[i], want = n ? (n + 31) / 32 : 1;
		struct store s, s1;
		json_t *a = ints(0, n), *got;

		/* in one call and one at a time: the same layout */
		store_open(&s);
		store_open(&s1);
		CHECK_RC(opt_chain_add(s.t, s.hid, a));
		for (j = 0; j < n; j++) {
			json_t *one = ints((long)j, 1);
			CHECK_RC(opt_chain_add(s1.t, s1.hid, one));
			json_decref(one);
		}
		CHECK(nblocks(&s, n) == want);
		CHECK(nblocks(&s1, n) == want);
		if (n) {
			/* one pop: the tail block goes when it held one entry */
			CHECK_RC(opt_chain_pop(s.t, s.hid, 1, &got));
			CHECK(json_array_size(got) == 1 && json_integer_value(json_array_get(got, 0)) == (long)n - 1);
			json_decref(got);
			CHECK(nblocks(&s, n - 1) == (n - 1 ? (n - 1 + 31) / 32 : 1));
			/* one dequeue from the other: the head goes when it held one */
			CHECK_RC(opt_chain_dequeue(s1.t, s1.hid, 32, &got));
			CHECK(json_array_size(got) == (n < 32 ? n : 32));
			CHECK(json_integer_value(json_array_get(got, 0)) == 0);
			json_decref(got);
			CHECK(nblocks(&s1, n < 32 ? 0 : n - 32) == (n <= 32 ? 1 : want - 1));
			/* empty both exactly */
			CHECK_RC(opt_chain_dequeue(s.t, s.hid, n - 1, &got));
			CHECK(json_array_size(got) == n - 1);
			json_decref(got);
			CHECK(nblocks(&s, 0) == 1);
			CHECK_RC(opt_chain_pop(s1.t, s1.hid, n, &got));
			json_decref(got);
			CHECK(nblocks(&s1, 0) == 1);
			/* and use them again */
			CHECK_RC(opt_chain_add(s.t, s.hid, a));
			CHECK(nblocks(&s, n) == want);
		}
		json_decref(a);
		store_close(&s);
		store_close(&s1);
	}
}

TEST(errors)
{
	struct store s;
	struct opt_source src;
	struct opt_chain_iter *it;
	json_t *h, *got, *a = ints(0, 3);
	char other[OPT_ID_MAX + 1];

	store_open(&s);
	src = opt_tracker_source(s.t);
	CHECK(opt_chain_has(&src, s.hid) == 1);
	CHECK(opt_chain_create(s.t, s.hid, NULL, "CHD") == OPT_EINVAL);
	CHECK(opt_chain_create(s.t, "nosuchblock", NULL, "CHD") == OPT_ENOTFOUND);
	CHECK(opt_chain_add(s.t, s.hid, h = json_object()) == OPT_EINVAL);
	json_decref(h);
	CHECK(opt_chain_add(s.t, "nosuchblock", a) == OPT_ENOTFOUND);
	CHECK(opt_chain_pop(s.t, "nosuchblock", 1, &got) == OPT_ENOTFOUND && got == NULL);
	CHECK(opt_chain_iter_open(&it, &src, "nosuchblock", 1) == OPT_ENOTFOUND && it == NULL);
	CHECK(opt_chain_has(&src, "nosuchblock") == OPT_ENOTFOUND);

	/* a block without a chain */
	CHECK_RC(opt_block_new(&h, NULL, "CHH", "coll"));
	snprintf(other, sizeof(other), "%s", opt_block_id(h));
	CHECK_RC(opt_tracker_insert_new(s.t, h));
	CHECK(opt_chain_has(&src, other) == 0);
	CHECK(opt_chain_iter_open(&it, &src, other, 0) == OPT_ENOTFOUND);
	CHECK(strstr(opt_error_last(), "holds no chain") != NULL);
	CHECK(opt_chain_add(s.t, other, a) == OPT_ENOTFOUND);
	CHECK(opt_chain_create(s.t, other, "elsewhere", "") == OPT_EINVAL);
	CHECK_RC(opt_chain_create(s.t, other, "elsewhere", "XYZ"));
	CHECK_RC(opt_chain_add(s.t, other, a));
	{
		const json_t *hb, *tb;
		CHECK_RC(opt_tracker_get(s.t, other, &hb));
		CHECK_RC(opt_tracker_get(s.t, str(hb, "tailId"), &tb));
		CHECK(strcmp(opt_block_type(tb), "XYZ") == 0);
		CHECK(strcmp(opt_block_collection(tb), "elsewhere") == 0);
	}
	json_decref(a);
	store_close(&s);
}

/* A chain of 3 full blocks; returns their IDs. */
static void three_blocks(struct store *s, char ids[3][OPT_ID_MAX + 1])
{
	json_t *a = ints(0, 96);
	struct opt_chain_iter *it;
	struct opt_source src;
	struct opt_chain_pos pos;
	const json_t *e;
	int i = 0;

	store_open(s);
	CHECK_RC(opt_chain_add(s->t, s->hid, a));
	json_decref(a);
	src = opt_tracker_source(s->t);
	OPEN_OR_RETURN(opt_chain_iter_open(&it, &src, s->hid, 1));
	while (opt_chain_iter_next(it, &e) == 1) {
		opt_chain_iter_pos(it, &pos);
		if (pos.index == 0 && i < 3)
			snprintf(ids[i++], OPT_ID_MAX + 1, "%s", pos.block_id);
	}
	opt_chain_iter_free(it);
	CHECK(i == 3);
}

static int drain(const struct opt_source *src, const char *hid, int forward, size_t *n)
{
	struct opt_chain_iter *it;
	const json_t *e;
	int rc;

	*n = 0;
	if ((rc = opt_chain_iter_open(&it, src, hid, forward)) < 0)
		return rc;
	while ((rc = opt_chain_iter_next(it, &e)) == 1)
		(*n)++;
	opt_chain_iter_free(it);
	return rc;
}

static json_t *set_op(const char *field, const char *value)
{
	return value ? json_pack("[s,i,i,s]", field, 0, 0, value) : json_pack("[s,i,i,n]", field, 0, 0);
}

static void update(struct opt_tracker *t, const char *id, const char *field, const char *value)
{
	json_t *op = set_op(field, value);

	CHECK_RC(opt_tracker_update(t, id, op));
	json_decref(op);
}

TEST(corruption)
{
	struct store s;
	struct opt_source src;
	char ids[3][OPT_ID_MAX + 1];
	size_t n;
	json_t *got;

	/* a missing middle block */
	three_blocks(&s, ids);
	src = opt_tracker_source(s.t);
	CHECK_RC(opt_tracker_delete(s.t, ids[1]));
	CHECK(drain(&src, s.hid, 1, &n) == OPT_EINTEGRITY && n == 32);
	CHECK(strstr(opt_error_last(), "missing") != NULL);
	CHECK(drain(&src, s.hid, 0, &n) == OPT_EINTEGRITY && n == 32);
	CHECK(opt_chain_count(&src, s.hid, &n) == OPT_EINTEGRITY);
	store_close(&s);

	/* a link that does not point back */
	three_blocks(&s, ids);
	src = opt_tracker_source(s.t);
	update(s.t, ids[2], "priorId", ids[0]);
	CHECK(drain(&src, s.hid, 1, &n) == OPT_EINTEGRITY && n == 64);
	CHECK(strstr(opt_error_last(), "does not link back") != NULL);
	store_close(&s);

	/* a tail with a nextId */
	three_blocks(&s, ids);
	src = opt_tracker_source(s.t);
	update(s.t, ids[2], "nextId", ids[0]);
	CHECK(drain(&src, s.hid, 0, &n) == OPT_EINTEGRITY && n == 0);
	CHECK(opt_chain_pop(s.t, s.hid, 1, &got) == OPT_EINTEGRITY);
	{
		json_t *a = ints(0, 1);
		CHECK(opt_chain_add(s.t, s.hid, a) == OPT_EINTEGRITY);
		json_decref(a);
	}
	store_close(&s);

	/* a consistent cycle, entered from a position */
	three_blocks(&s, ids);
	src = opt_tracker_source(s.t);
	update(s.t, ids[2], "nextId", ids[0]);
	update(s.t, ids[0], "priorId", ids[2]);
	CHECK(drain(&src, s.hid, 1, &n) == OPT_EINTEGRITY && n == 0); /* head with a priorId */
	{
		struct opt_chain_iter *it;
		struct opt_chain_pos pos;
		const json_t *e;
		int rc;
		size_t k = 0;

		snprintf(pos.block_id, sizeof(pos.block_id), "%s", ids[1]);
		pos.index = 5;
		OPEN_OR_RETURN(opt_chain_iter_open_at(&it, &src, &pos, 1));
		while ((rc = opt_chain_iter_next(it, &e)) == 1 && k < 100000)
			k++;
		CHECK(rc == OPT_EINTEGRITY);
		CHECK(strstr(opt_error_last(), "cycle") != NULL);
		opt_chain_iter_free(it);
		pos.index = 32;
		CHECK(opt_chain_iter_open_at(&it, &src, &pos, 1) == OPT_EINVAL);
		pos.index = -1;
		CHECK(opt_chain_iter_open_at(&it, &src, &pos, 0) == OPT_EINVAL);
		snprintf(pos.block_id, sizeof(pos.block_id), "nosuchblock");
		pos.index = 0;
		CHECK(opt_chain_iter_open_at(&it, &src, &pos, 0) == OPT_ENOTFOUND);
	}
	store_close(&s);
}

static int snapshot_cb(const char *id, const json_t *block, void *arg)
{
	json_object_set_new(arg, id, block ? json_deep_copy(block) : json_null());
	return 0;
}

static json_t *snapshot(struct opt_tracker *t)
{
	json_t *o = json_object();

	opt_tracker_foreach(t, snapshot_cb, o);
	return o;
}

TEST(all_or_nothing)
{
	struct store s;
	char ids[3][OPT_ID_MAX + 1];
	json_t *before, *after, *got = NULL;

	/* pop all 96 fails when it reaches the missing head block: the tail
	 * and middle blocks must be left as they were */
	three_blocks(&s, ids);
	store_commit(&s);
	CHECK_RC(opt_tracker_delete(s.t, ids[0]));
	before = snapshot(s.t);
	CHECK(opt_chain_pop(s.t, s.hid, 96, &got) == OPT_EINTEGRITY);
	CHECK(got == NULL);
	after = snapshot(s.t);
	CHECK(json_equal(before, after));
	json_decref(before);
	json_decref(after);
	store_close(&s);

	/* the same with an outer savepoint held by the caller */
	three_blocks(&s, ids);
	{
		size_t tok;
		CHECK_RC(opt_tracker_delete(s.t, ids[0]));
		before = snapshot(s.t);
		opt_tracker_mark(s.t, &tok);
		CHECK(opt_chain_pop(s.t, s.hid, 2, &got) == 0);
		json_decref(got);
		CHECK(opt_chain_pop(s.t, s.hid, 96, &got) == OPT_EINTEGRITY);
		opt_tracker_rollback(s.t, tok);
		after = snapshot(s.t);
		CHECK(json_equal(before, after));
		json_decref(before);
		json_decref(after);
	}
	store_close(&s);
}

/* A source that hands out fresh copies and counts how many are still held
 * by the reader (refcount above its own). */
struct counting {
	json_t *blocks;
	json_t **out;
	size_t n, cap, gets;
};

static int counting_get(void *ctx, const char *id, json_t **out)
{
	struct counting *c = ctx;
	json_t *b = json_object_get(c->blocks, id);
	size_t i, k = 0;

	*out = NULL;
	if (!b)
		return OPT_ENOTFOUND;
	for (i = 0; i < c->n; i++) {     /* forget the released ones */
		if (c->out[i]->refcount == 1)
			json_decref(c->out[i]);
		else
			c->out[k++] = c->out[i];
	}
	c->n = k;
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 16;
		c->out = realloc(c->out, c->cap * sizeof(*c->out));
	}
	c->out[c->n++] = *out = json_deep_copy(b);
	json_incref(*out);
	c->gets++;
	return 0;
}

static size_t counting_held(struct counting *c)
{
	size_t i, k = 0;

	for (i = 0; i < c->n; i++)
		if (c->out[i]->refcount > 1)
			k++;
	return k;
}

TEST(streaming)
{
	struct store s;
	struct counting c = { 0 };
	struct opt_source src = { counting_get, &c, NULL };
	struct opt_chain_iter *it;
	const json_t *e;
	json_t *a = ints(0, 5000);
	size_t n = 0, max = 0, i;
	int rc, dir;

	store_open(&s);
	CHECK_RC(opt_chain_add(s.t, s.hid, a));
	json_decref(a);
	store_commit(&s);
	c.blocks = s.blocks;
	for (dir = 0; dir < 2; dir++) {
		OPEN_OR_RETURN(opt_chain_iter_open(&it, &src, s.hid, dir));
		n = 0;
		while ((rc = opt_chain_iter_next(it, &e)) == 1) {
			size_t h = counting_held(&c);
			if (h > max)
				max = h;
			if (json_integer_value(e) != (long)(dir ? n : 4999 - n))
				CHECK(0);
			n++;
		}
		CHECK(rc == 0 && n == 5000);
		opt_chain_iter_free(it);
		CHECK(counting_held(&c) == 0);
	}
	CHECK(max == 1);
	CHECK_RC(opt_chain_count(&src, s.hid, &n));
	CHECK(n == 5000);
	CHECK(counting_held(&c) == 0);
	for (i = 0; i < c.n; i++)
		json_decref(c.out[i]);
	free(c.out);
	store_close(&s);
}

/* Empty blocks inside a chain (not made by these functions, but valid)
 * are skipped by readers and dropped by pop and dequeue. */
TEST(empty_blocks_skipped)
{
	struct store s;
	struct model m = { 0 };
	char ids[3][OPT_ID_MAX + 1];
	json_t *op, *got;
	long i;

	for (i = 0; i < 96; i++)
		if (i < 32 || i >= 64)
			m_push(&m, i);
	three_blocks(&s, ids);
	op = json_pack("[s,i,i,[]]", "entries", 0, 32);
	CHECK_RC(opt_tracker_update(s.t, ids[1], op));
	json_decref(op);
	{
		struct opt_source src = opt_tracker_source(s.t);
		check_iter(&src, s.hid, &m);
		check_position(&src, s.hid, &m, 31);
		check_position(&src, s.hid, &m, 32);
	}
	CHECK_RC(opt_chain_pop(s.t, s.hid, 33, &got));
	CHECK(json_array_size(got) == 33);
	CHECK(json_integer_value(json_array_get(got, 0)) == 31);
	CHECK(json_integer_value(json_array_get(got, 1)) == 64);
	json_decref(got);
	CHECK(nblocks(&s, 31) == 1);
	store_close(&s);

	three_blocks(&s, ids);
	op = json_pack("[s,i,i,[]]", "entries", 0, 32);
	CHECK_RC(opt_tracker_update(s.t, ids[1], op));
	json_decref(op);
	CHECK_RC(opt_chain_dequeue(s.t, s.hid, 33, &got));
	CHECK(json_array_size(got) == 33);
	CHECK(json_integer_value(json_array_get(got, 31)) == 31);
	CHECK(json_integer_value(json_array_get(got, 32)) == 64);
	json_decref(got);
	CHECK(nblocks(&s, 31) == 1);
	store_close(&s);
	free(m.v);
}

/* Entries handed out are the caller's: changing them changes no block. */
TEST(popped_entries_are_copies)
{
	struct store s;
	json_t *a = json_pack("[{s:i},{s:i},{s:i},{s:i}]", "v", 1, "v", 2, "v", 3, "v", 4);
	json_t *before, *after, *got, *last;
	struct opt_source src;
	size_t i;

	store_open(&s);
	CHECK_RC(opt_chain_add(s.t, s.hid, a));
	/* entries are shared with the chain after add: the caller must not change them */
	store_commit(&s);
	before = json_deep_copy(s.blocks);
	CHECK_RC(opt_chain_pop(s.t, s.hid, 2, &got));
	for (i = 0; i < json_array_size(got); i++)
		json_object_set_new(json_array_get(got, i), "v", json_integer(-1));
	json_decref(got);
	CHECK_RC(opt_chain_dequeue(s.t, s.hid, 1, &got));
	CHECK(json_integer_value(json_object_get(json_array_get(got, 0), "v")) == 1);
	json_object_set_new(json_array_get(got, 0), "v", json_integer(-1));
	json_decref(got);
	src = opt_tracker_source(s.t);
	CHECK_RC(opt_chain_last(&src, s.hid, &last));
	json_object_set_new(last, "v", json_integer(-1));
	json_decref(last);
	CHECK_RC(opt_chain_first(&src, s.hid, &last));
	CHECK(json_integer_value(json_object_get(last, "v")) == 2);
	json_decref(last);
	after = json_deep_copy(s.blocks);
	CHECK(json_equal(before, after));  /* the committed blocks are untouched */
	json_decref(before);
	json_decref(after);
	json_decref(a);
	store_close(&s);
}

int main(void)
{
	const char *env = getenv("OPT_TEST_SEED");
	unsigned long long seed = env ? strtoull(env, NULL, 10)
				      : (unsigned long long)time(NULL) ^ ((unsigned long long)clock() << 20);

	if (!seed)
		seed = 1;
	printf("# seed %llu\n", seed);
	rng_state = seed;
	opt_util_init();
	RUN(randomized_against_model);
	RUN(pop_and_dequeue_order);
	RUN(boundaries);
	RUN(errors);
	RUN(corruption);
	RUN(all_or_nothing);
	RUN(streaming);
	RUN(popped_entries_are_copies);
	RUN(empty_blocks_skipped);
	return DONE();
}
