/* opt-tree - Tree collections: sorted key/value data (a B+tree of blocks)
 * with range queries. */
#include "common.h"
#include "collection.h"
#include "txn.h"

#include <poll.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

/* The values of the options (each row of the tables below binds one). */
static struct {
	const char *capacity, *rev, *from, *to, *after, *before, *limit;
	int each, json_keys, reverse;
} opt;

static const struct cmd_opt opts_put[] = {
	CMD_FLAG("each", 'e', "one transaction per input record instead of one for all", &opt.each),
	CMD_FLAG("json-keys", 'j', "KEY operands are JSON values, not strings", &opt.json_keys),
	CMD_VALUE("capacity", 0, "N", "entries per node of a new tree (default 64)", &opt.capacity),
	CMD_OPT_END,
};

static const struct cmd_opt opts_get[] = {
	CMD_FLAG("json-keys", 'j', "keys (operands and stdin lines) are JSON values, not strings", &opt.json_keys),
	CMD_VALUE("rev", 0, "N", "read the tree as it was at revision N", &opt.rev),
	CMD_OPT_END,
};

static const struct cmd_opt opts_del[] = {
	CMD_FLAG("json-keys", 'j', "keys (operands and stdin lines) are JSON values, not strings", &opt.json_keys),
	CMD_OPT_END,
};

static const struct cmd_opt opts_range[] = {
	CMD_VALUE("from", 0, "K", "start at K, inclusive", &opt.from),
	CMD_VALUE("to", 0, "K", "end at K, inclusive", &opt.to),
	CMD_VALUE("after", 0, "K", "start after K (exclusive)", &opt.after),
	CMD_VALUE("before", 0, "K", "end before K (exclusive)", &opt.before),
	CMD_FLAG("reverse", 'r', "from the highest key down", &opt.reverse),
	CMD_VALUE("limit", 'n', "N", "at most N records", &opt.limit),
	CMD_FLAG("json-keys", 'j', "bounds are JSON values, not strings", &opt.json_keys),
	CMD_VALUE("rev", 0, "N", "read the tree as it was at revision N", &opt.rev),
	CMD_OPT_END,
};

static const struct cmd_opt opts_rev[] = {
	CMD_VALUE("rev", 0, "N", "as it was at revision N", &opt.rev),
	CMD_OPT_END,
};

static const struct cmd_opt opts_none[] = {
	CMD_OPT_END,
};

/* ---- helpers ---- */

static int need_name(struct cmd *c, const char **name)
{
	if (c->npos < 1)
		return cmd_usage(c, "the tree's name is required");
	*name = c->pos[0];
	if (opt_store_name_check(*name) < 0)
		return cmd_usage(c, "%s", opt_error_last());
	return 0;
}

/* A key from the command line: a string, or JSON with --json-keys. */
static int key_arg(struct cmd *c, const char *text, json_t **out)
{
	int st;

	*out = NULL;
	if (!opt.json_keys) {
		*out = json_string(text);
		if (!*out)
			return cmd_fail(c, OPT_EINVAL, "key is not valid UTF-8: %s", opt_esc(text));
		return 0;
	}
	if ((st = cmd_json_arg(c, text, "key", out)))
		return st;
	if (!opt_key_valid(*out)) {
		json_decref(*out);
		*out = NULL;
		return cmd_fail(c, OPT_EINVAL, "'%s' is not a key: keys are numbers, strings or arrays of those", opt_esc(text));
	}
	return 0;
}

static int open_tree(struct cmd *c, const char *name, struct opt_snap **snap)
{
	long rev = 0;
	int st, rc;

	if (opt.rev && (st = cmd_long(c, &opt.rev, 0, 1, &rev)))
		return st;
	if ((st = cmd_store(c, 0)))
		return st;
	rc = opt_snap_open(snap, c->store, name, rev);
	if (rc < 0)
		return cmd_lib_fail(c, rc);
	rc = opt_coll_expect(*snap, OPT_TYPE_TREE);
	if (rc < 0) {
		opt_snap_free(*snap);
		*snap = NULL;
		return cmd_lib_fail(c, rc);
	}
	return 0;
}

/* Print {"key":K,"value":V} from canonical texts (the fast path: no
 * values built), or indented. */
static int print_kv_text(struct cmd *c, const char *k, size_t kl, const char *v, size_t vl)
{
	if (c->pretty) {
		/* indented from the stored text: numbers as they are stored */
		struct opt_text t = { NULL, 0, 0 };
		int st;
		if (opt_text_add(&t, "{\"key\":", 7) < 0 || opt_text_add(&t, k, kl) < 0 ||
		    opt_text_add(&t, ",\"value\":", 9) < 0 || opt_text_add(&t, v, vl) < 0 ||
		    opt_text_add(&t, "}", 1) < 0) {
			opt_text_free(&t);
			return cmd_lib_fail(c, OPT_EIO);
		}
		st = cmd_print_text(c, t.p, t.len);
		opt_text_free(&t);
		return st;
	}
	if (fwrite("{\"key\":", 1, 7, stdout) != 7 || fwrite(k, 1, kl, stdout) != kl ||
	    fwrite(",\"value\":", 1, 9, stdout) != 9 || fwrite(v, 1, vl, stdout) != vl ||
	    fwrite("}\n", 1, 2, stdout) != 2) {
		c->out_err = 1;
		return OPT_EXIT_OTHER;
	}
	return 0;
}

static int print_result(struct cmd *c, const char *name, long rev, const char *what, long n)
{
	json_t *o = json_pack("{s:s,s:I,s:I}", "collection", name, "rev", (json_int_t)rev, what, (json_int_t)n);
	int st = cmd_print(c, o);

	json_decref(o);
	return st;
}

/* ---- put ---- */

struct put_ctx {
	json_t **keys, **values;
	size_t n;
	int capacity;
};

static int put_fn(struct opt_txn *x, void *arg)
{
	struct put_ctx *p = arg;
	int rc;

	if ((rc = opt_tree_init(x, p->capacity)) < 0)
		return rc;
	if (p->n == 1)
		return opt_tree_put(x, p->keys[0], p->values[0]);
	return opt_tree_put_many(x, (const json_t *const *)p->keys, (const json_t *const *)p->values, p->n);
}

/* A batch of records as canonical text (the bulk path). */
struct put_text_ctx {
	const struct opt_kv_text *kv;
	size_t n;
	int capacity;
};

static int put_text_fn(struct opt_txn *x, void *arg)
{
	struct put_text_ctx *p = arg;
	int rc;

	if ((rc = opt_tree_init(x, p->capacity)) < 0)
		return rc;
	return opt_tree_put_text(x, p->kv, p->n);
}

/* A record has no members but "key" and "value": another is a mistake
 * (a misspelt name, a record of some other shape), not data to drop. */
static int record_members(json_t *v)
{
	const char *name;
	json_t *m;

	json_object_foreach(v, name, m) {
		if (strcmp(name, "key") != 0 && strcmp(name, "value") != 0)
			return opt_error_set(OPT_EINVAL, "unknown member '%s' in the record (a record is {\"key\": K, \"value\": V})",
					     opt_esc(name));
	}
	return 0;
}

/* A record from stdin: {"key": K, "value": V}; *key and *value borrowed. */
static int record(json_t *v, json_t **key, json_t **value)
{
	int rc;

	if (!json_is_object(v))
		return opt_error_set(OPT_EINVAL, "expected a record {\"key\": K, \"value\": V}");
	if ((rc = record_members(v)) < 0)
		return rc;
	*key = json_object_get(v, "key");
	*value = json_object_get(v, "value");
	if (!*key)
		return opt_error_set(OPT_EINVAL, "the record has no \"key\"");
	if (!*value)
		return opt_error_set(OPT_EINVAL, "the record has no \"value\"");
	if (!opt_key_valid(*key))
		return opt_error_set(OPT_EINVAL, "the record's key is not a key: keys are numbers, strings or arrays of those");
	if ((rc = opt_key_check(*key)) < 0)
		return rc;
	return opt_value_check(*value, "the value");
}

/* put --each: one document = one record = one transaction (cmd_each). */
struct each_put_arg {
	const char *name;
	int capacity;
};

struct each_put {
	struct put_ctx p;   /* first: the slot is put_fn's argument */
	json_t *key, *value;
};

static int each_put_stage(struct cmd *c, void *arg, json_t *doc, const char *where, void *slot)
{
	struct each_put *e = slot;

	if (record(doc, &e->key, &e->value) < 0)
		return opt_error_wrap(OPT_EINVAL, "%s", where);
	e->p.keys = &e->key;
	e->p.values = &e->value;
	e->p.n = 1;
	e->p.capacity = ((const struct each_put_arg *)arg)->capacity;
	return 0;
}

static int each_put_print(struct cmd *c, void *arg, const struct opt_txn_result *r, void *slot)
{
	struct each_put *e = slot;
	json_t *o = json_pack("{s:s,s:I,s:O}", "collection", ((const struct each_put_arg *)arg)->name, "rev",
			      (json_int_t)r->rev, "key", e->key);
	int st = cmd_print(c, o);

	json_decref(o);
	return st;
}

/* put NAME KEY VALUE: one record, one transaction. */
static int put_one(struct cmd *c, const char *name, int capacity)
{
	struct opt_txn_opts o = { OPT_TYPE_TREE, "opt-tree put", 0, 0 };
	struct opt_txn_result res;
	struct put_ctx p = { NULL, NULL, 1, capacity };
	json_t *key = NULL, *value = NULL;
	int st, rc;

	if ((st = key_arg(c, c->pos[1], &key)))
		return st;
	if ((st = cmd_json_arg(c, c->pos[2], "VALUE", &value))) {
		json_decref(key);
		return st;
	}
	if (opt_key_check(key) < 0 || opt_value_check(value, "the value") < 0) {
		json_decref(key);
		json_decref(value);
		return cmd_lib_fail(c, OPT_EINVAL);
	}
	p.keys = &key;
	p.values = &value;
	if ((st = cmd_store(c, 1)) == 0) {
		if ((rc = opt_txn_run(c->store, name, put_fn, &p, &o, &res)) < 0)
			st = cmd_lib_fail(c, rc);
		else
			st = print_result(c, name, res.rev, "put", 1);
	}
	json_decref(key);
	json_decref(value);
	return st;
}

/* put --each: a transaction per record (cmd_each). */
static int put_each(struct cmd *c, const char *name, int capacity, struct opt_jsonl *in)
{
	struct opt_txn_opts o = { OPT_TYPE_TREE, "opt-tree put", 0, 0 };
	struct each_put_arg ea = { name, capacity };
	struct cmd_each e = { 0 };

	e.in = in;
	e.coll = name;
	e.opts = o;
	e.fn = put_fn;
	e.slot_size = sizeof(struct each_put);
	e.max = 512;
	e.stage = each_put_stage;
	e.print = each_put_print;
	e.arg = &ea;
	return cmd_each(c, &e);
}

/* The records of one put from stdin, as canonical text. */
struct put_batch {
	struct opt_text arena;
	struct opt_text_rec *recs;
	size_t n, cap;
};

/* A record the fast path left (frc 0): parsed, checked, and its key and
 * value written to the arena as canonical text (into *r).  0, an exit
 * status after the message, or -1 with *rc set (a parse error). */
static int record_parsed(struct cmd *c, struct opt_jsonl *in, const char *text, size_t tlen, struct put_batch *b,
			 struct opt_text_rec *r, int *rc)
{
	json_t *k2, *v2, *v;
	char *ks = NULL, *vs = NULL;
	size_t kl = 0, vl = 0;
	int frc;

	if ((*rc = opt_jsonl_parse_text(in, text, tlen, &v)) < 0)
		return -1;
	if (record(v, &k2, &v2) < 0) {
		frc = cmd_fail(c, OPT_EINVAL, "line %ld: %s (nothing written)", opt_jsonl_line(in), opt_error_last());
		json_decref(v);
		return frc;
	}
	r->koff = b->arena.len;
	if ((frc = opt_json_canon(&ks, &kl, k2)) < 0 || (frc = opt_json_canon(&vs, &vl, v2)) < 0 ||
	    (frc = opt_text_add(&b->arena, ks, kl)) < 0 || (frc = opt_text_add(&b->arena, vs, vl)) < 0)
		frc = cmd_lib_fail(c, frc);
	r->klen = kl;
	r->voff = r->koff + kl;
	r->vlen = vl;
	free(ks);
	free(vs);
	json_decref(v);
	return frc;
}

/* Read every record of stdin into b: all are validated before anything
 * is committed, so that nothing of a rejected batch is.  Records are kept
 * as canonical text: the fast path makes it from the input text; what it
 * does not handle is parsed, checked and serialized.  0 or an exit
 * status after the message. */
static int read_records(struct cmd *c, struct opt_jsonl *in, struct put_batch *b)
{
	const char *text;
	size_t tlen;
	int rc, st;

	while ((rc = opt_jsonl_next_text(in, &text, &tlen)) == 1) {
		struct opt_text_rec r;
		int frc = opt_json_record_text(&b->arena, text, tlen, OPT_VALUE_MAX, &r);
		if (frc < 0)
			return cmd_lib_fail(c, frc);
		if (frc == 1 && r.klen > OPT_KEY_MAX)
			return cmd_fail(c, OPT_EINVAL, "line %ld: the key is %zu bytes; the limit is %d bytes of canonical JSON (nothing written)",
					opt_jsonl_line(in), r.klen, OPT_KEY_MAX);
		if (frc == 0 && (st = record_parsed(c, in, text, tlen, b, &r, &rc))) {
			if (st < 0)
				break;
			return st;
		}
		if ((rc = OPT_ALLOC_GROW(b->recs, b->n + 1, b->cap)) < 0)
			return cmd_lib_fail(c, rc);
		b->recs[b->n++] = r;
	}
	if (rc < 0)
		return cmd_fail(c, rc, "%s (nothing written)", opt_error_last());
	return 0;
}

/* Commit the records of b as one transaction, and print its record. */
static int put_batch_commit(struct cmd *c, const char *name, int capacity, const struct put_batch *b)
{
	struct opt_txn_opts o = { OPT_TYPE_TREE, "opt-tree put", 0, 0 };
	struct opt_txn_result res;
	struct put_text_ctx pt = { NULL, b->n, capacity };
	struct opt_kv_text *kv;
	size_t i;
	int rc, st;

	if (!(kv = malloc(b->n * sizeof(*kv))))
		return cmd_lib_fail(c, opt_error_oom());
	for (i = 0; i < b->n; i++) {
		kv[i].k = b->arena.p + b->recs[i].koff;
		kv[i].kl = b->recs[i].klen;
		kv[i].v = b->arena.p + b->recs[i].voff;
		kv[i].vl = b->recs[i].vlen;
	}
	pt.kv = kv;
	if ((rc = opt_txn_run(c->store, name, put_text_fn, &pt, &o, &res)) < 0)
		st = cmd_lib_fail(c, rc);
	else
		st = print_result(c, name, res.rev, "put", (long)b->n);
	free(kv);
	return st;
}

static int do_put(struct cmd *c)
{
	struct put_batch b = { { NULL, 0, 0 }, NULL, 0, 0 };
	struct opt_jsonl *in = NULL;
	const char *name;
	long capacity;
	int st;

	if ((st = need_name(c, &name)))
		return st;
	if ((st = cmd_long(c, &opt.capacity, 0, 0, &capacity)))
		return st;
	if (capacity && (capacity < OPT_BTREE_MIN_CAPACITY || capacity > OPT_BTREE_MAX_CAPACITY))
		return cmd_usage(c, "--capacity must be between %d and %d", OPT_BTREE_MIN_CAPACITY, OPT_BTREE_MAX_CAPACITY);
	if (c->npos != 1 && c->npos != 3)
		return cmd_usage(c, "put takes NAME KEY VALUE, or NAME alone to read records from stdin");
	if (c->npos == 3 && opt.each)
		return cmd_usage(c, "--each reads records from stdin");
	if (c->npos == 3)
		return put_one(c, name, (int)capacity);
	if ((st = cmd_store(c, 1)))
		return st;
	opt_jsonl_open(&in, stdin);
	if (opt.each)
		st = put_each(c, name, (int)capacity, in);
	else if ((st = read_records(c, in, &b)) == 0 && b.n > 0)
		st = put_batch_commit(c, name, (int)capacity, &b);
	free(b.recs);
	opt_text_free(&b.arena);
	opt_jsonl_free(in);
	return st;
}

/* ---- keys from operands or stdin ---- */

/* A key read from standard input with --json-keys: the value v (taken),
 * or the key of a record (range's and get's output work too). */
static int stdin_json_key(struct cmd_args *k, json_t *v, json_t **key)
{
	struct cmd *c = k->c;

	if (json_is_object(v) && json_object_get(v, "key")) {
		if (record_members(v) < 0) {
			json_decref(v);
			return -cmd_fail(c, OPT_EINVAL, "line %ld: %s", opt_jsonl_line(k->in), opt_error_last());
		}
		*key = json_incref(json_object_get(v, "key"));
		json_decref(v);
	} else {
		*key = v;
	}
	if (!opt_key_valid(*key)) {
		json_decref(*key);
		*key = NULL;
		return -cmd_fail(c, OPT_EINVAL, "line %ld: not a key", opt_jsonl_line(k->in));
	}
	return 1;
}

/* Next key, from the operands (from 1) and, for "-", stdin: one key a
 * line (a JSON string, as jq prints it, is that string, any other line
 * the key as it is), or JSON values with --json-keys.  1 with *key (new
 * reference), 0 at end, <0: -exit status. */
static int next_key(struct cmd_args *k, json_t **key)
{
	struct cmd *c = k->c;
	const char *s;
	size_t len;
	json_t *v;
	int rc, st;

	*key = NULL;
	if (opt.json_keys) {
		if ((rc = cmd_args_next_json(k, &s, &v)) < 0)
			return -cmd_lib_fail(c, rc);
		if (rc == 1 && !s)
			return stdin_json_key(k, v, key);
	} else {
		if ((rc = cmd_args_next(k, &s, &len)) == 1 && k->from_stdin) {
			*key = json_stringn(s, len);
			if (!*key)
				return -cmd_fail(c, OPT_EINVAL, "a key read from stdin is not valid UTF-8");
			return 1;
		}
	}
	if (rc != 1)
		return rc;
	if ((st = key_arg(c, s, key)))
		return -st;
	return 1;
}

/* ---- get ---- */

/* Keys are looked up in batches: as many as are at hand (operands, and
 * what standard input holds without waiting long: a file, or what comes
 * through a pipe; one key at a time when they come slowly), sorted, so
 * that the lookups walk the tree in order: each leaf is read once per
 * batch and visited while it is in the CPU's caches.  Records are printed
 * in the order given. */
#define GET_BATCH 131072

struct gkey {
	json_t *key;
	const char *ks;   /* a string key's bytes (else NULL) */
	size_t kl, pos;
	char *vs;
	size_t vl;
	int rc;
};

/* What the sort moves: a string key's first 16 bytes as two big-endian
 * numbers (most keys differ there), its rank (numbers, strings, arrays:
 * opt_key_cmp's order) and its place in the batch. */
struct gsort {
	uint64_t a, b;
	uint32_t pos;
	int rank;
};

static uint64_t be64(const char *s, size_t n)
{
	unsigned char b[8] = { 0 };
	uint64_t v = 0;
	size_t i;

	memcpy(b, s, n < 8 ? n : 8);
	for (i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static void gsort_set(struct gsort *g, const struct gkey *k)
{
	g->pos = (uint32_t)k->pos;
	g->a = g->b = 0;
	if (k->ks) {
		g->rank = 1;
		g->a = be64(k->ks, k->kl);
		if (k->kl > 8)
			g->b = be64(k->ks + 8, k->kl - 8);
	} else {
		g->rank = json_is_number(k->key) ? 0 : 2;
	}
}

static int gsort_cmp(const void *a, const void *b, void *ctx)
{
	const struct gsort *p = a, *q = b;
	const struct gkey *v = ctx, *x = &v[p->pos], *y = &v[q->pos];
	int c = 0;

	if (p->rank != q->rank)
		return p->rank < q->rank ? -1 : 1;
	if (p->rank == 1) {
		if (p->a != q->a)
			return p->a < q->a ? -1 : 1;
		if (p->b != q->b)
			return p->b < q->b ? -1 : 1;
		/* the same 16 bytes (zero-padded): a key of up to 16 is a
		 * prefix of the other */
		if (x->kl > 16 && y->kl > 16)
			c = memcmp(x->ks + 16, y->ks + 16, (x->kl < y->kl ? x->kl : y->kl) - 16);
		if (!c)
			c = x->kl < y->kl ? -1 : x->kl > y->kl;
	} else {
		c = opt_key_cmp(x->key, y->key);
	}
	return c ? c : p->pos < q->pos ? -1 : p->pos > q->pos;
}

/* More keys can be read without waiting. */
static int keys_waiting(struct cmd_args *k)
{
	static int file = -1;
	struct pollfd p = { 0, POLLIN, 0 };
	struct stat st;

	if (!k->from_stdin)
		return 1;
	if (file < 0)
		file = fstat(0, &st) == 0 && S_ISREG(st.st_mode);
	if (file)
		return 1;
	if (k->in && opt_jsonl_buffered(k->in))
		return 1;
	/* a writer into a pipe fills it in bursts: a key that comes within
	 * 2 ms is still at hand (a person typing keys does not notice) */
	return poll(&p, 1, 2) == 1 && (p.revents & POLLIN);
}

/* A string key that needs no escapes as canonical JSON text, in buf
 * (cap bytes): 1 and *len, else 0. */
static int key_text_plain(const json_t *key, char *buf, size_t cap, size_t *len)
{
	const char *s = json_string_value(key);
	size_t n = json_string_length(key), i;

	if (!s || n + 2 > cap)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == '"' || s[i] == '\\')
			return 0;
	buf[0] = '"';
	memcpy(buf + 1, s, n);
	buf[n + 1] = '"';
	*len = n + 2;
	return 1;
}

/* Print the result of looking key up (rc, the value's text vs). */
static int get_emit(struct cmd *c, const char *name, const json_t *key, int rc, const char *vs, size_t vl,
		    int *missing)
{
	char *ks = NULL, buf[256];
	size_t kl;
	int st = 0;

	if (rc == 0 && key_text_plain(key, buf, sizeof(buf), &kl)) {
		st = print_kv_text(c, buf, kl, vs, vl);
	} else if (rc == OPT_ENOTFOUND) {
		(*missing)++;
		opt_json_canon(&ks, NULL, key);
		/* the key as JSON (control characters escaped), cut short */
		cmd_fail(c, OPT_ENOTFOUND, "no key %.200s%s in tree '%s'", ks ? ks : "?",
			 ks && strlen(ks) > 200 ? "..." : "", name);
	} else if (rc < 0) {
		st = cmd_lib_fail(c, rc);
	} else if (opt_json_canon(&ks, &kl, key) < 0) {
		st = cmd_lib_fail(c, OPT_EIO);
	} else {
		st = print_kv_text(c, ks, kl, vs, vl);
	}
	free(ks);
	return st;
}

/* Look up and print the n keys of v. */
static int get_batch(struct cmd *c, const char *name, struct opt_snap *snap, struct gkey *v, struct gsort *order,
		     size_t n, int *missing)
{
	size_t i;
	int st = 0;

	for (i = 0; i < n; i++)
		gsort_set(&order[i], &v[i]);
	qsort_r(order, n, sizeof(*order), gsort_cmp, v);
	for (i = 0; i < n; i++) {
		struct gkey *k = &v[order[i].pos];
		/* the keys are all over memory: ask early */
		if (i + 16 < n)
			__builtin_prefetch(&v[order[i + 16].pos]);
		if (i + 8 < n)
			__builtin_prefetch(v[order[i + 8].pos].key);
		k->rc = opt_tree_get_text(snap, k->key, &k->vs, &k->vl);
		if (k->rc < 0 && k->rc != OPT_ENOTFOUND)
			break;
	}
	if (i < n) {
		/* a failure: as without batches, the keys before the first
		 * failing one (in the order given) are printed */
		for (i = 0; i < n && st == 0; i++) {
			free(v[i].vs);
			v[i].vs = NULL;
			v[i].rc = opt_tree_get_text(snap, v[i].key, &v[i].vs, &v[i].vl);
			st = get_emit(c, name, v[i].key, v[i].rc, v[i].vs, v[i].vl, missing);
		}
		return st;
	}
	for (i = 0; i < n && st == 0; i++) {
		if (i + 4 < n) {
			__builtin_prefetch(v[i + 4].vs);
			__builtin_prefetch(v[i + 4].key);
		}
		st = get_emit(c, name, v[i].key, v[i].rc, v[i].vs, v[i].vl, missing);
	}
	return st;
}

/* The next batch of keys into v[0..*n): as many as are at hand, up to
 * GET_BATCH.  A bad key's message goes to hold (a later message).
 * Returns what next_key last returned (1: more may follow). */
static int read_batch(struct cmd *c, struct cmd_args *k, struct gkey *v, size_t *n, FILE *hold)
{
	json_t *key;
	int rc = 1;

	c->err = hold;
	for (*n = 0; *n < GET_BATCH && (rc = next_key(k, &key)) == 1;) {
		struct gkey *g = &v[(*n)++];
		g->key = key;
		g->ks = json_string_value(key);
		g->kl = json_string_length(key);
		g->pos = *n - 1;
		g->vs = NULL;
		g->vl = 0;
		g->rc = 0;
		if (!keys_waiting(k))
			break;
	}
	c->err = NULL;
	return rc;
}

static int do_get(struct cmd *c)
{
	struct cmd_args k;
	struct opt_snap *snap = NULL;
	struct gkey *v = NULL;
	struct gsort *order = NULL;
	const char *name;
	size_t n, i, b, heldlen = 0;
	int st, rc = 1, missing = 0;
	char *held = NULL;
	FILE *hold = NULL;

	cmd_args_init(&k, c, 1);
	if ((st = need_name(c, &name)))
		return st;
	if (c->npos < 2)
		return cmd_usage(c, "no key given (use - to read keys from stdin)");
	if ((st = open_tree(c, name, &snap)))
		return st;
	v = malloc(GET_BATCH * sizeof(*v));
	order = malloc(GET_BATCH * sizeof(*order));
	if (!v || !order) {
		st = cmd_lib_fail(c, OPT_EIO);
		goto done;
	}
	/* a batch reads each leaf once, in order: a few leaves' bytes are
	 * enough; from a second batch on, leaves are read again: keep them */
	opt_snap_cache_bytes(snap, (size_t)8 << 20);
	/* a bad key ends the reading: its message is held until the keys
	 * before it are done (as when keys were looked up one by one) */
	hold = open_memstream(&held, &heldlen);
	for (b = 0; rc == 1 && st == 0; b++) {
		if (b == 1)
			opt_snap_cache_bytes(snap, (size_t)128 << 20);
		rc = read_batch(c, &k, v, &n, hold);
		st = get_batch(c, name, snap, v, order, n, &missing);
		for (i = 0; i < n; i++) {
			json_decref(v[i].key);
			free(v[i].vs);
		}
	}
	if (st == 0 && rc < 0) {
		st = -rc;
		if (hold && fflush(hold) == 0)
			fwrite(held, 1, heldlen, stderr);
	} else if (st == 0 && missing) {
		st = OPT_EXIT_NOTFOUND;
	}
done:
	if (hold)
		fclose(hold);
	free(held);
	free(v);
	free(order);
	cmd_args_free(&k);
	opt_snap_free(snap);
	return st;
}

/* ---- del ---- */

struct del_ctx {
	json_t *keys;   /* array */
	char *found;    /* per key: 1 if it was deleted */
	long deleted;
};

static int del_fn(struct opt_txn *x, void *arg)
{
	struct del_ctx *d = arg;
	size_t i;
	int rc, found;

	d->deleted = 0;
	if (!opt_txn_base(x))
		return opt_error_set(OPT_ENOTFOUND, "no collection '%s'", opt_txn_collection(x));
	for (i = 0; i < json_array_size(d->keys); i++) {
		if ((rc = opt_tree_del(x, json_array_get(d->keys, i), &found)) < 0)
			return rc;
		if (!found) {
			/* a key given twice: the first deleted it */
			json_t *v = NULL;
			rc = opt_tree_get(opt_txn_base(x), json_array_get(d->keys, i), &v);
			json_decref(v);
			if (rc < 0 && rc != OPT_ENOTFOUND)
				return rc;
			opt_error_clear();
			d->found[i] = rc == 0;
			continue;
		}
		d->found[i] = 1;
		d->deleted += found;
	}
	return 0;
}

/* A record per deleted key, {"collection","rev","key","deleted":true}, and
 * for an absent key a line on stderr, as get says it, in the order given. */
static int del_report(struct cmd *c, const char *name, long rev, struct del_ctx *d, int *missing)
{
	size_t i;
	int st = 0;

	for (i = 0; i < json_array_size(d->keys) && !st; i++) {
		json_t *key = json_array_get(d->keys, i), *o;
		if (!d->found[i]) {
			char *ks = NULL;
			(*missing)++;
			opt_json_canon(&ks, NULL, key);
			cmd_fail(c, OPT_ENOTFOUND, "no key %s in tree '%s'", ks ? ks : "?", name);
			free(ks);
			continue;
		}
		o = json_pack("{s:s,s:I,s:O,s:b}", "collection", name, "rev", (json_int_t)rev, "key", key, "deleted", 1);
		st = cmd_print(c, o);
		json_decref(o);
	}
	return st;
}

static int do_del(struct cmd *c)
{
	struct cmd_args k;
	struct opt_txn_opts o = { OPT_TYPE_TREE, "opt-tree del", 0, 0 };
	struct opt_txn_result res;
	struct del_ctx d = { json_array(), NULL, 0 };
	const char *name;
	json_t *key;
	int st, rc, missing = 0;

	cmd_args_init(&k, c, 1);
	if ((st = need_name(c, &name)))
		goto done;
	if (c->npos < 2) {
		st = cmd_usage(c, "no key given (use - to read keys from stdin)");
		goto done;
	}
	while ((rc = next_key(&k, &key)) == 1)
		json_array_append_new(d.keys, key);
	if (rc < 0) {
		st = -rc;
		goto done;
	}
	if (!(d.found = calloc(json_array_size(d.keys) + 1, 1))) {
		st = cmd_lib_fail(c, opt_error_oom());
		goto done;
	}
	if ((st = cmd_store(c, 0)))
		goto done;
	rc = opt_txn_run(c->store, name, del_fn, &d, &o, &res);
	if (rc < 0) {
		st = cmd_lib_fail(c, rc);
		goto done;
	}
	st = del_report(c, name, res.rev, &d, &missing);
	if (!st && missing)
		st = OPT_EXIT_NOTFOUND;
done:
	cmd_args_free(&k);
	free(d.found);
	json_decref(d.keys);
	return st;
}

/* ---- range ---- */

static int bound(struct cmd *c, const char *v, json_t **out)
{
	*out = NULL;
	if (!v)
		return 0;
	return key_arg(c, v, out);
}

/* The bounds of range (--from or --after, --to or --before) into r;
 * *lo and *hi hold them (new references, NULL when not given). */
static int range_bounds(struct cmd *c, struct opt_btree_range *r, json_t **lo, json_t **hi)
{
	const char *text[4] = { opt.from, opt.to, opt.after, opt.before };
	json_t *b[4] = { NULL, NULL, NULL, NULL };
	int i, st = 0;

	if (opt.from && opt.after)
		return cmd_usage(c, "--from and --after both set the lower bound: give one");
	if (opt.to && opt.before)
		return cmd_usage(c, "--to and --before both set the upper bound: give one");
	for (i = 0; i < 4 && !st; i++)
		st = bound(c, text[i], &b[i]);
	/* one of each pair at most was given */
	*lo = b[0] ? b[0] : b[2];
	*hi = b[1] ? b[1] : b[3];
	r->lo = *lo;
	r->lo_incl = b[0] != NULL;
	r->hi = *hi;
	r->hi_incl = b[1] != NULL;
	r->reverse = opt.reverse;
	if (!st && r->lo && r->hi && opt_key_cmp(r->lo, r->hi) > 0)
		st = cmd_usage(c, "the lower bound is above the upper bound");
	return st;
}

/* Print the records of cur, at most limit (<0: all). */
static int range_print(struct cmd *c, struct opt_btree_cursor *cur, long limit)
{
	const char *key, *value;
	size_t kl, vl;
	long n = 0;
	int rc = 0, st;

	while ((limit < 0 || n < limit) && (rc = opt_btree_cursor_next_text(cur, &key, &kl, &value, &vl)) == 1) {
		if ((st = print_kv_text(c, key, kl, value, vl)))
			return st;
		n++;
	}
	return rc < 0 ? cmd_lib_fail(c, rc) : 0;
}

static int do_range(struct cmd *c)
{
	struct opt_snap *snap = NULL;
	struct opt_btree_cursor *cur = NULL;
	struct opt_btree_range r;
	json_t *lo = NULL, *hi = NULL;
	const char *name;
	long limit;
	int st, rc;

	memset(&r, 0, sizeof(r));
	if ((st = need_name(c, &name)))
		return st;
	if (c->npos > 1)
		return cmd_usage(c, "range takes one tree name; bounds are options");
	if ((st = cmd_long(c, &opt.limit, -1, 0, &limit)))
		return st;
	if ((st = range_bounds(c, &r, &lo, &hi)) || (st = open_tree(c, name, &snap)))
		goto done;
	if ((rc = opt_tree_range(snap, &r, &cur)) < 0)
		st = cmd_lib_fail(c, rc);
	else
		st = range_print(c, cur, limit);
done:
	opt_btree_cursor_free(cur);
	opt_snap_free(snap);
	json_decref(lo);
	json_decref(hi);
	return st;
}

/* ---- count, ls, stat ---- */

static int do_count(struct cmd *c)
{
	struct opt_snap *snap = NULL;
	const char *name;
	size_t n;
	int st, rc;

	if ((st = need_name(c, &name)))
		return st;
	if (c->npos > 1)
		return cmd_usage(c, "count takes one tree name");
	if ((st = open_tree(c, name, &snap)))
		return st;
	if ((rc = opt_tree_count(snap, &n)) < 0)
		st = cmd_lib_fail(c, rc);
	else if (printf("%zu\n", n) < 0)
		st = OPT_EXIT_OTHER;
	opt_snap_free(snap);
	return st;
}

static int do_ls(struct cmd *c)
{
	json_t *names = NULL;
	size_t i;
	int st, rc;

	if (c->npos)
		return cmd_usage(c, "ls takes no operands");
	if ((st = cmd_store(c, 0)))
		return st;
	if ((rc = opt_store_list(c->store, &names)) < 0)
		return cmd_lib_fail(c, rc);
	for (i = 0; i < json_array_size(names) && !st; i++) {
		struct opt_snap *snap;
		size_t n;
		const char *name = json_string_value(json_array_get(names, i));
		json_t *o;

		if ((rc = opt_snap_open(&snap, c->store, name, 0)) < 0) {
			st = cmd_lib_fail(c, rc);
			break;
		}
		if (opt_coll_expect(snap, OPT_TYPE_TREE) == 0 && opt_tree_count(snap, &n) == 0) {
			o = json_pack("{s:s,s:I,s:I}", "collection", name, "count", (json_int_t)n, "rev",
				      (json_int_t)opt_snap_rev(snap));
			st = cmd_print(c, o);
			json_decref(o);
		}
		opt_error_clear();
		opt_snap_free(snap);
	}
	json_decref(names);
	return st;
}

static int do_stat(struct cmd *c)
{
	struct opt_snap *snap = NULL;
	const char *name;
	json_t *cap = NULL, *o;
	size_t n, blocks = 0;
	long depth = 0;
	int st, rc;

	if ((st = need_name(c, &name)))
		return st;
	if (c->npos > 1)
		return cmd_usage(c, "stat takes one tree name");
	if ((st = open_tree(c, name, &snap)))
		return st;
	if ((rc = opt_tree_count(snap, &n)) < 0 || (rc = opt_snap_count(snap, &blocks)) < 0 ||
	    (rc = opt_tree_shape(snap, &depth, &cap)) < 0) {
		st = cmd_lib_fail(c, rc);
		goto done;
	}
	o = json_pack("{s:s,s:I,s:I,s:O?,s:I,s:I,s:s,s:I}", "collection", name, "rev", (json_int_t)opt_snap_rev(snap),
		      "count", (json_int_t)n, "capacity", cap, "depth", (json_int_t)depth,
		      "blocks", (json_int_t)blocks, "trx", opt_snap_trx(snap), "time", (json_int_t)opt_snap_time(snap));
	st = cmd_print(c, o);
	json_decref(o);
done:
	json_decref(cap);
	opt_snap_free(snap);
	return st;
}

static const struct cmd_verb verbs[] = {
	{ "put", do_put, "NAME [KEY VALUE] [--each] [--json-keys] [--capacity N] < RECORDS",
	  "put records (one transaction; --each: one per record)", opts_put, 1 },
	{ "get", do_get, "NAME KEY... | - [--json-keys] [--rev N]", "print {key, value} records; exit 1 if a key is absent",
	  opts_get, 0 },
	{ "del", do_del, "NAME KEY... | - [--json-keys]", "delete keys (one transaction)", opts_del, 0 },
	{ "range", do_range,
	  "NAME [--from K] [--to K] [--after K] [--before K] [--reverse] [--limit N] [--json-keys] [--rev N]",
	  "print {key, value} records in key order", opts_range, 0 },
	{ "count", do_count, "NAME [--rev N]", "print the number of records", opts_rev, 0 },
	{ "ls", do_ls, "", "list the tree collections: {collection, count, rev}", opts_none, 0 },
	{ "stat", do_stat, "NAME [--rev N]", "a tree's figures: revision, count, capacity, depth, blocks", opts_rev, 0 },
	{ NULL, NULL, NULL, NULL, NULL, 0 },
};

static const struct cmd_prog prog = {
	"opt-tree",
	"Tree collections of optimystic: sorted key/value records in a B+tree of\n"
	"blocks, with range queries; every write is a transaction.",
	verbs,
};

int main(int argc, char **argv)
{
	return cmd_main(&prog, argc, argv);
}
