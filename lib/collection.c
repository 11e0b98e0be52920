#include "collection.h"
#include "chain.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define DIARY_CHAIN_TYPE "DIC"   /* the diary's chain header */
#define DIARY_DATA_TYPE "DID"    /* diary data blocks */

const char *opt_type_name(const char *type)
{
	if (!type)
		return "unknown";
	if (strcmp(type, OPT_TYPE_TREE) == 0)
		return "tree";
	if (strcmp(type, OPT_TYPE_DIARY) == 0)
		return "diary";
	if (strcmp(type, OPT_TYPE_BLOCKS) == 0)
		return "block";
	return type;
}

int opt_value_check(const json_t *v, const char *what)
{
	char *s;
	size_t n;
	int rc = opt_json_canon(&s, &n, v);

	if (rc < 0)
		return opt_error_wrap(rc, "%s", what);
	free(s);
	if (n > OPT_VALUE_MAX)
		return opt_error_set(OPT_EINVAL, "%s is %zu bytes; the limit is %d bytes of canonical JSON",
				     what, n, OPT_VALUE_MAX);
	return 0;
}

static int check_key(const json_t *key);

int opt_key_check(const json_t *key)
{
	char *s;
	size_t n;
	int rc;

	if ((rc = check_key(key)) < 0)
		return rc;
	/* a number is short; a string's canonical form is at most six
	 * bytes a byte (\u0001) and two quotes */
	if (json_is_number(key) || (json_is_string(key) && json_string_length(key) <= (OPT_KEY_MAX - 2) / 6))
		return 0;
	if ((rc = opt_json_canon(&s, &n, key)) < 0)
		return rc;
	free(s);
	if (n > OPT_KEY_MAX)
		return opt_error_set(OPT_EINVAL, "the key is %zu bytes; the limit is %d bytes of canonical JSON", n,
				     OPT_KEY_MAX);
	return 0;
}

static int header(struct opt_txn *x, const json_t **h)
{
	int rc = opt_tracker_get(opt_txn_tracker(x), opt_txn_header_id(x), h);

	if (rc < 0)
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' has no header block", opt_txn_collection(x));
	return 0;
}

static int set_count(struct opt_txn *x, long delta)
{
	const json_t *h;
	json_t *op;
	json_int_t n;
	int rc;

	if ((rc = header(x, &h)) < 0)
		return rc;
	n = json_integer_value(json_object_get(h, "count")) + delta;
	op = json_pack("[s,i,i,I]", "count", 0, 0, n < 0 ? (json_int_t)0 : n);
	rc = opt_tracker_update(opt_txn_tracker(x), opt_txn_header_id(x), op);
	json_decref(op);
	return rc;
}

int opt_tree_init(struct opt_txn *x, int capacity)
{
	const json_t *h;
	json_t *op;
	int rc;

	if ((rc = header(x, &h)) < 0)
		return rc;
	if (json_object_get(h, "rootId"))
		return 0;
	if ((rc = opt_btree_create(opt_txn_tracker(x), opt_txn_header_id(x), opt_txn_collection(x),
				   capacity > 0 ? capacity : OPT_BTREE_DEFAULT_CAPACITY)) < 0)
		return rc;
	op = json_pack("[s,i,i,i]", "count", 0, 0, 0);
	rc = opt_tracker_update(opt_txn_tracker(x), opt_txn_header_id(x), op);
	json_decref(op);
	return rc;
}

static int check_key(const json_t *key)
{
	if (!opt_key_valid(key))
		return opt_error_set(OPT_EINVAL, "a key must be a number, a string or an array of keys, not %s",
				     json_is_object(key) ? "an object" : json_is_boolean(key) ? "a boolean" :
				     json_is_null(key) ? "null" : "this");
	return 0;
}

int opt_tree_put(struct opt_txn *x, const json_t *key, const json_t *value)
{
	int rc, replaced = 0;

	if ((rc = opt_key_check(key)) < 0)
		return rc;
	if (!value)
		return opt_error_set(OPT_EINVAL, "a put needs a value");
	if ((rc = opt_btree_put(opt_txn_tracker(x), opt_txn_header_id(x), key, value, &replaced)) < 0)
		return rc;
	if (!replaced && (rc = set_count(x, 1)) < 0)
		return rc;
	return opt_txn_action(x, json_pack("{s:s,s:O,s:O}", "type", "put", "key", key, "value", value));
}

static const json_t *const *sort_keys;

static int cmp_idx(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return opt_key_cmp(sort_keys[x], sort_keys[y]);
}

int opt_tree_put_many(struct opt_txn *x, const json_t *const *keys, const json_t *const *values, size_t n)
{
	struct opt_source src = opt_tracker_source(opt_txn_tracker(x));
	json_t *seen = NULL;
	const json_t *h;
	size_t i, added = 0;
	int rc, empty;

	for (i = 0; i < n; i++)
		if ((rc = opt_key_check(keys[i])) < 0)
			return opt_error_wrap(rc, "record %zu", i + 1);
	if ((rc = header(x, &h)) < 0)
		return rc;
	empty = json_integer_value(json_object_get(h, "count")) == 0;
	if (!empty) {
		/* the header keeps the count: find how many distinct keys are
		 * new (a bulk load into an empty tree counts its leaves after) */
		/* distinct keys by the key order (1 and 1.0 are one key) */
		size_t *idx = malloc((n ? n : 1) * sizeof(*idx));
		seen = json_object();
		if (!idx) {
			json_decref(seen);
			return opt_error_oom();
		}
		for (i = 0; i < n; i++)
			idx[i] = i;
		sort_keys = keys;
		qsort(idx, n, sizeof(*idx), cmp_idx);
		for (i = 0; i < n && seen; i++) {
			json_t *v = NULL;
			if (i > 0 && opt_key_cmp(keys[idx[i]], keys[idx[i - 1]]) == 0)
				continue;
			rc = opt_btree_get(&src, opt_txn_header_id(x), keys[idx[i]], &v);
			json_decref(v);
			if (rc == OPT_ENOTFOUND)
				added++;
			else if (rc < 0)
				break;
			rc = 0;
		}
		json_decref(seen);
		free(idx);
		if (rc < 0)
			return rc;
		opt_error_clear();
	}
	if ((rc = opt_btree_put_many(opt_txn_tracker(x), opt_txn_header_id(x), keys, values, n)) < 0)
		return rc;
	if (empty) {
		size_t c;
		if ((rc = opt_btree_count(&src, opt_txn_header_id(x), &c)) < 0)
			return rc;
		added = c;
	}
	if ((rc = set_count(x, (long)added)) < 0)
		return rc;
	for (i = 0; i < n; i++) {
		json_t *a = json_pack("{s:s,s:O,s:O}", "type", "put", "key", keys[i], "value", values[i]);
		if ((rc = opt_txn_action(x, a)) < 0)
			return rc;
	}
	return 0;
}

/* The actions of n puts as one canonical text: [{"key":K,"type":"put",
 * "value":V},...] in the order given (the keys in name order). */
static int put_actions_text(const struct opt_kv_text *kv, size_t n, char **out, size_t *len)
{
	static const char a[] = "{\"key\":", b[] = ",\"type\":\"put\",\"value\":";
	size_t total = 2, i, o = 0;
	char *p;

	for (i = 0; i < n; i++)
		total += kv[i].kl + kv[i].vl + sizeof(a) - 1 + sizeof(b) - 1 + 2;
	if (!(p = malloc(total + 1)))
		return opt_error_oom();
	p[o++] = '[';
	for (i = 0; i < n; i++) {
		if (i)
			p[o++] = ',';
		memcpy(p + o, a, sizeof(a) - 1);
		o += sizeof(a) - 1;
		memcpy(p + o, kv[i].k, kv[i].kl);
		o += kv[i].kl;
		memcpy(p + o, b, sizeof(b) - 1);
		o += sizeof(b) - 1;
		memcpy(p + o, kv[i].v, kv[i].vl);
		o += kv[i].vl;
		p[o++] = '}';
	}
	p[o++] = ']';
	p[o] = '\0';
	*out = p;
	*len = o;
	return 0;
}

int opt_tree_put_text(struct opt_txn *x, const struct opt_kv_text *kv, size_t n)
{
	json_t **keys = NULL, **values = NULL;
	const json_t *h;
	size_t i, count = 0, tok, len = 0;
	char *text = NULL;
	int rc;

	for (i = 0; i < n; i++) {
		if (kv[i].vl > OPT_VALUE_MAX)
			return opt_error_set(OPT_EINVAL, "record %zu: the value is %zu bytes; the limit is %d bytes of canonical JSON",
					     i + 1, kv[i].vl, OPT_VALUE_MAX);
		if (kv[i].kl > OPT_KEY_MAX)
			return opt_error_set(OPT_EINVAL, "record %zu: the key is %zu bytes; the limit is %d bytes of canonical JSON",
					     i + 1, kv[i].kl, OPT_KEY_MAX);
		/* the deepest place a record is stored: its put action in the
		 * log entry (a leaf holds it less deep); the text paths below
		 * store the text as it is, so it is held to the limit here */
		if (!opt_json_text_fits(kv[i].k, kv[i].kl, OPT_LOG_ACTIONS_ABOVE + 2) ||
		    !opt_json_text_fits(kv[i].v, kv[i].vl, OPT_LOG_ACTIONS_ABOVE + 2))
			return opt_error_wrap(opt_json_too_deep("the log entry"), "record %zu", i + 1);
	}
	if ((rc = header(x, &h)) < 0)
		return rc;
	if (n > 0) {
		/* an empty tree is built from the text as it is; into one that
		 * is not, the text is merged into the leaves it touches */
		struct opt_snap *base = opt_txn_base(x);
		struct opt_source raw;
		opt_tracker_mark(opt_txn_tracker(x), &tok);
		if (json_integer_value(json_object_get(h, "count")) == 0) {
			rc = opt_btree_load_text(opt_txn_tracker(x), opt_txn_header_id(x), kv, n, &count);
		} else {
			if (base)
				raw = opt_snap_source(base);
			rc = opt_btree_merge_text(opt_txn_tracker(x), base ? &raw : NULL, opt_txn_header_id(x), kv, n,
						  &count);
		}
		if (rc == 0 && (rc = set_count(x, (long)count)) == 0 &&
		    (rc = put_actions_text(kv, n, &text, &len)) == 0)
			rc = opt_txn_actions_text(x, text, len, n);
		if (rc != 0) {
			opt_tracker_rollback(opt_txn_tracker(x), tok);
			if (rc < 0)
				return rc;
		} else {
			opt_tracker_release(opt_txn_tracker(x), tok);
			return 0;
		}
	}
	/* otherwise as JSON values, as opt_tree_put_many does */
	keys = calloc(n ? n : 1, sizeof(*keys));
	values = calloc(n ? n : 1, sizeof(*values));
	if (!keys || !values) {
		rc = opt_error_oom();
		goto done;
	}
	for (i = 0; i < n; i++) {
		if ((rc = opt_json_parse(&keys[i], kv[i].k, kv[i].kl)) < 0 ||
		    (rc = opt_json_parse(&values[i], kv[i].v, kv[i].vl)) < 0) {
			rc = opt_error_wrap(rc, "record %zu", i + 1);
			goto done;
		}
	}
	if (n == 1)
		rc = opt_tree_put(x, keys[0], values[0]);
	else
		rc = opt_tree_put_many(x, (const json_t *const *)keys, (const json_t *const *)values, n);
done:
	for (i = 0; keys && values && i < n; i++) {
		json_decref(keys[i]);
		json_decref(values[i]);
	}
	free(keys);
	free(values);
	return rc;
}

int opt_tree_del(struct opt_txn *x, const json_t *key, int *found)
{
	int rc;

	if (found)
		*found = 0;
	if ((rc = check_key(key)) < 0)
		return rc;
	rc = opt_btree_del(opt_txn_tracker(x), opt_txn_header_id(x), key);
	if (rc == OPT_ENOTFOUND) {
		opt_error_clear();
		return 0;
	}
	if (rc < 0)
		return rc;
	if (found)
		*found = 1;
	if ((rc = set_count(x, -1)) < 0)
		return rc;
	return opt_txn_action(x, json_pack("{s:s,s:O}", "type", "del", "key", key));
}

int opt_diary_init(struct opt_txn *x)
{
	const json_t *h;
	json_t *b = NULL, *op;
	const char *cid;
	int rc;

	if ((rc = header(x, &h)) < 0)
		return rc;
	if (json_object_get(h, "diaryId"))
		return 0;
	if ((rc = opt_block_new(&b, NULL, DIARY_CHAIN_TYPE, opt_txn_collection(x))) < 0)
		return rc;
	cid = opt_block_id(b);
	op = json_pack("[s,i,i,s]", "diaryId", 0, 0, cid);
	if ((rc = opt_tracker_insert_new(opt_txn_tracker(x), b)) < 0) {
		json_decref(op);
		return rc;
	}
	rc = opt_tracker_update(opt_txn_tracker(x), opt_txn_header_id(x), op);
	json_decref(op);
	if (rc < 0)
		return rc;
	if ((rc = header(x, &h)) < 0)
		return rc;
	cid = json_string_value(json_object_get(h, "diaryId"));
	if ((rc = opt_chain_create(opt_txn_tracker(x), cid, opt_txn_collection(x), DIARY_DATA_TYPE)) < 0)
		return rc;
	op = json_pack("[s,i,i,i]", "count", 0, 0, 0);
	rc = opt_tracker_update(opt_txn_tracker(x), opt_txn_header_id(x), op);
	json_decref(op);
	return rc;
}

int opt_diary_append(struct opt_txn *x, const json_t *entry)
{
	const json_t *h;
	json_t *arr;
	char cid[OPT_ID_MAX + 1];
	int rc;

	if ((rc = header(x, &h)) < 0)
		return rc;
	if (!json_is_string(json_object_get(h, "diaryId")))
		return opt_error_set(OPT_EINTEGRITY, "diary '%s' has no entry chain", opt_txn_collection(x));
	snprintf(cid, sizeof(cid), "%s", json_string_value(json_object_get(h, "diaryId")));
	arr = json_pack("[O]", entry);
	rc = opt_chain_add(opt_txn_tracker(x), cid, arr);
	json_decref(arr);
	if (rc < 0)
		return rc;
	if ((rc = set_count(x, 1)) < 0)
		return rc;
	return opt_txn_action(x, json_pack("{s:s,s:O}", "type", "append", "entry", entry));
}

/* ---- reading ---- */

int opt_coll_header(struct opt_snap *snap, json_t **out)
{
	char hid[OPT_ID_LEN + 1];
	struct opt_source src = opt_snap_source(snap);
	int rc;

	strcpy(hid, opt_snap_header_id(snap));
	rc = src.get(src.ctx, hid, out);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' has no header block", opt_snap_name(snap));
	return rc;
}

int opt_coll_kind(struct opt_snap *snap, const char **kind)
{
	json_t *h;
	int rc = opt_coll_header(snap, &h);

	if (rc < 0)
		return rc;
	{
		/* a static name, never a pointer into the header we release */
		const char *k = opt_type_name(opt_block_type(h));
		*kind = strcmp(k, "tree") == 0 ? "tree" : strcmp(k, "diary") == 0 ? "diary" :
			strcmp(k, "block") == 0 ? "block" : "other";
	}
	json_decref(h);
	return 0;
}

int opt_coll_expect(struct opt_snap *snap, const char *type)
{
	json_t *h;
	const char *t;
	int rc = opt_coll_header(snap, &h);

	if (rc < 0)
		return rc;
	t = opt_block_type(h);
	if (!t || strcmp(t, type) != 0)
		rc = opt_error_set(OPT_EINVAL, "collection '%s' is a %s collection, not a %s collection",
				   opt_snap_name(snap), opt_type_name(t), opt_type_name(type));
	json_decref(h);
	return rc;
}

int opt_tree_get(struct opt_snap *snap, const json_t *key, json_t **value)
{
	char hid[OPT_ID_LEN + 1];
	struct opt_source src = opt_snap_source(snap);

	*value = NULL;
	if (!opt_key_valid(key))
		return check_key(key);
	strcpy(hid, opt_snap_header_id(snap));
	return opt_btree_get(&src, hid, key, value);
}

int opt_tree_get_text(struct opt_snap *snap, const json_t *key, char **text, size_t *len)
{
	char hid[OPT_ID_LEN + 1];
	struct opt_source src = opt_snap_source(snap);

	*text = NULL;
	*len = 0;
	if (!opt_key_valid(key))
		return check_key(key);
	strcpy(hid, opt_snap_header_id(snap));
	return opt_btree_get_text(&src, hid, key, text, len);
}

static int header_count(struct opt_snap *snap, size_t *n)
{
	json_t *h;
	int rc = opt_coll_header(snap, &h);

	if (rc < 0)
		return rc;
	*n = (size_t)json_integer_value(json_object_get(h, "count"));
	json_decref(h);
	return 0;
}

int opt_tree_count(struct opt_snap *snap, size_t *n)
{
	return header_count(snap, n);
}

int opt_tree_range(struct opt_snap *snap, const struct opt_btree_range *r, struct opt_btree_cursor **out)
{
	char hid[OPT_ID_LEN + 1];
	struct opt_source src = opt_snap_source(snap);

	strcpy(hid, opt_snap_header_id(snap));
	return opt_btree_cursor_open(out, &src, hid, r);
}

int opt_diary_count(struct opt_snap *snap, size_t *n)
{
	return header_count(snap, n);
}

int opt_diary_chain(struct opt_snap *snap, char *out)
{
	json_t *h;
	int rc = opt_coll_header(snap, &h);

	if (rc < 0)
		return rc;
	if (!json_is_string(json_object_get(h, "diaryId")))
		rc = opt_error_set(OPT_EINTEGRITY, "diary '%s' has no entry chain", opt_snap_name(snap));
	else
		snprintf(out, OPT_ID_MAX + 1, "%s", json_string_value(json_object_get(h, "diaryId")));
	json_decref(h);
	return rc;
}

int opt_tree_shape(struct opt_snap *snap, long *depth, json_t **capacity)
{
	struct opt_source src = opt_snap_source(snap);
	char id[OPT_ID_MAX + 1];
	json_t *h, *node = NULL;
	int rc;

	*depth = 0;
	*capacity = NULL;
	if ((rc = opt_coll_header(snap, &h)) < 0)
		return rc;
	if ((*capacity = json_object_get(h, "capacity")))
		json_incref(*capacity);
	if (!json_is_string(json_object_get(h, "rootId"))) {
		json_decref(h);
		return 0;
	}
	/* follow the first child from the root down */
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(h, "rootId")));
	json_decref(h);
	while (src.get(src.ctx, id, &node) == 0) {
		json_t *nodes = json_object_get(node, "nodes");
		(*depth)++;
		if (!json_is_array(nodes) || !json_is_string(json_array_get(nodes, 0))) {
			json_decref(node);
			break;
		}
		snprintf(id, sizeof(id), "%s", json_string_value(json_array_get(nodes, 0)));
		json_decref(node);
	}
	return 0;
}

int opt_diary_txn_count(struct opt_txn *x, long *n)
{
	const json_t *h;
	int rc = opt_tracker_get(opt_txn_tracker(x), opt_txn_header_id(x), &h);

	if (rc < 0)
		return rc;
	*n = (long)json_integer_value(json_object_get(h, "count"));
	return 0;
}

struct opt_diary_iter {
	struct opt_chain_iter *it;
};

int opt_diary_iter_open(struct opt_diary_iter **out, struct opt_snap *snap, int forward)
{
	struct opt_source src = opt_snap_source(snap);
	char cid[OPT_ID_MAX + 1];
	int rc;

	*out = NULL;
	if ((rc = opt_diary_chain(snap, cid)) < 0)
		return rc;
	*out = calloc(1, sizeof(**out));
	OPT_CHECK_ALLOC(*out);
	if ((rc = opt_chain_iter_open(&(*out)->it, &src, cid, forward)) < 0) {
		free(*out);
		*out = NULL;
	}
	return rc;
}

int opt_diary_iter_open_after(struct opt_diary_iter **out, struct opt_snap *snap, const struct opt_diary_pos *pos)
{
	struct opt_source src = opt_snap_source(snap);
	struct opt_chain_pos cp;
	const json_t *e;
	int rc;

	*out = calloc(1, sizeof(**out));
	OPT_CHECK_ALLOC(*out);
	memcpy(cp.block_id, pos->block_id, sizeof(cp.block_id));
	cp.index = pos->index;
	/* open at the entry itself, and step over it */
	if ((rc = opt_chain_iter_open_at(&(*out)->it, &src, &cp, 1)) < 0 ||
	    (rc = opt_chain_iter_next((*out)->it, &e)) < 0) {
		opt_diary_iter_free(*out);
		*out = NULL;
		return rc;
	}
	return 0;
}

int opt_diary_iter_next(struct opt_diary_iter *it, const json_t **entry)
{
	return opt_chain_iter_next(it->it, entry);
}

int opt_diary_iter_pos(const struct opt_diary_iter *it, struct opt_diary_pos *pos)
{
	struct opt_chain_pos cp;
	int rc = opt_chain_iter_pos(it->it, &cp);

	if (rc < 0)
		return rc;
	memcpy(pos->block_id, cp.block_id, sizeof(pos->block_id));
	pos->index = cp.index;
	return 0;
}

void opt_diary_iter_free(struct opt_diary_iter *it)
{
	if (!it)
		return;
	opt_chain_iter_free(it->it);
	free(it);
}

/* ---- a whole diary as stored text ---- */

struct opt_diary_text {
	struct opt_source src;
	struct opt_bytes b;          /* the current block as stored */
	char *own;                   /* or its canonical text, made here */
	json_t *block;               /* or, when its text does not scan, parsed */
	size_t idx;                  /* (then the next entry's index) */
	char *etext;                 /* (and the text of the last one) */
	const char *p, *end;         /* the next entry's text; the entries' end */
	char id[OPT_ID_MAX + 1], tail[OPT_ID_MAX + 1], next[OPT_ID_MAX + 1];
	int more;                    /* a block after this one */
};

static void dtext_release(struct opt_diary_text *it)
{
	opt_bytes_release(&it->b);
	free(it->own);
	it->own = NULL;
	json_decref(it->block);
	it->block = NULL;
	free(it->etext);
	it->etext = NULL;
	it->p = it->end = NULL;
	it->idx = 0;
}

/* Link field f of block meta: 0 and *out (NULL when absent or null), or
 * OPT_EINTEGRITY. */
static int dtext_link(const json_t *meta, const char *id, const char *f, const char **out)
{
	const json_t *v = json_object_get(meta, f);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v) || !opt_id_valid(json_string_value(v)))
		return opt_error_set(OPT_EINTEGRITY, "chain block '%.80s': \"%s\" is not a block ID", id, f);
	*out = json_string_value(v);
	return 0;
}

/* Read data block id, which prev (NULL: the header, for the head) links
 * to, and check its ID and its link back. */
static int dtext_load(struct opt_diary_text *it, const char *id, const char *prev)
{
	static const char pre[] = "{\"entries\":[";
	json_t *out = NULL, *rest = NULL;
	const json_t *meta;
	const char *data, *ae = NULL, *nid, *pid;
	char *buf;
	size_t len;
	int rc;

	dtext_release(it);
	if (it->src.get_raw)
		rc = it->src.get_raw(it->src.ctx, id, &out, &it->b);
	else
		rc = it->src.get(it->src.ctx, id, &out);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_EINTEGRITY, "chain data block '%.80s' (linked from '%.80s') is missing", id,
				     prev ? prev : "the diary's header");
	if (rc < 0)
		return rc;
	if (out) {
		rc = opt_json_canon(&it->own, &len, out);
		json_decref(out);
		if (rc < 0)
			return rc;
		data = it->own;
	} else {
		data = it->b.data;
		len = it->b.len;
	}
	if (len > sizeof(pre) && memcmp(data, pre, sizeof(pre) - 1) == 0 &&
	    (ae = opt_raw_skip(data + sizeof(pre) - 2, data + len)) && ae < data + len && (*ae == ',' || *ae == '}')) {
		/* the rest of the block, {"header":..,"nextId":..,"priorId":..} */
		size_t rl = (size_t)(data + len - ae);
		if (!(buf = malloc(rl + 1)))
			return opt_error_oom();
		buf[0] = '{';
		memcpy(buf + 1, ae + 1, rl - 1);
		rc = opt_json_parse(&rest, buf, *ae == ',' ? rl : 2);
		free(buf);
		if (rc < 0)
			rest = NULL;
	}
	if (rest) {
		meta = rest;
		it->p = data + sizeof(pre) - 1;
		it->end = ae - 1;
	} else {
		/* text that does not scan: parsed */
		if ((rc = opt_json_parse(&it->block, data, len)) < 0)
			return opt_error_wrap(rc, "chain data block '%.80s'", id);
		meta = it->block;
		if (!json_is_array(json_object_get(it->block, "entries")))
			return opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' has no \"entries\" array", id);
	}
	rc = 0;
	if (!json_is_object(meta) || !opt_block_id(meta) || strcmp(opt_block_id(meta), id) != 0)
		rc = opt_error_set(OPT_EINTEGRITY, "chain data block '%.80s' is malformed or has another ID", id);
	else if ((rc = dtext_link(meta, id, "priorId", &pid)) == 0 && (rc = dtext_link(meta, id, "nextId", &nid)) == 0) {
		if (prev && (!pid || strcmp(pid, prev) != 0))
			rc = opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' does not link back to '%.80s'", id, prev);
		else if (!prev && pid)
			rc = opt_error_set(OPT_EINTEGRITY, "chain block '%.80s' is the head of the diary but has a \"priorId\"",
					   id);
		else if (!nid && strcmp(id, it->tail) != 0)
			rc = opt_error_set(OPT_EINTEGRITY, "chain ends at block '%.80s', but its header names '%.80s'", id,
					   it->tail);
		if (rc == 0) {
			snprintf(it->id, sizeof(it->id), "%s", id);
			it->more = nid != NULL;
			if (nid)
				snprintf(it->next, sizeof(it->next), "%s", nid);
		}
	}
	json_decref(rest);
	return rc;
}

int opt_diary_text_open(struct opt_diary_text **out, struct opt_snap *snap)
{
	char cid[OPT_ID_MAX + 1], head[OPT_ID_MAX + 1];
	struct opt_diary_text *it;
	json_t *h = NULL;
	const char *hd, *tl;
	int rc;

	*out = NULL;
	if ((rc = opt_diary_chain(snap, cid)) < 0)
		return rc;
	OPT_CHECK_ALLOC(it = calloc(1, sizeof(*it)));
	it->src = opt_snap_source(snap);
	rc = it->src.get(it->src.ctx, cid, &h);
	if (rc == OPT_ENOTFOUND)
		rc = opt_error_set(OPT_ENOTFOUND, "no chain header block '%.80s'", cid);
	if (rc == 0 && ((rc = dtext_link(h, cid, "headId", &hd)) < 0 || (rc = dtext_link(h, cid, "tailId", &tl)) < 0))
		;
	else if (rc == 0 && (!hd || !tl))
		rc = opt_error_set(OPT_ENOTFOUND, "block '%.80s' holds no chain", cid);
	if (rc == 0) {
		snprintf(head, sizeof(head), "%s", hd);
		snprintf(it->tail, sizeof(it->tail), "%s", tl);
		rc = dtext_load(it, head, NULL);
	}
	json_decref(h);
	if (rc < 0) {
		opt_diary_text_free(it);
		return rc;
	}
	*out = it;
	return 0;
}

int opt_diary_text_next(struct opt_diary_text *it, const char **text, size_t *len)
{
	char prev[OPT_ID_MAX + 1], next[OPT_ID_MAX + 1];
	int rc;

	for (;;) {
		if (it->p && it->p < it->end) {
			const char *q = opt_raw_skip(it->p, it->end);
			if (!q)
				return opt_error_set(OPT_EINTEGRITY, "chain data block '%.80s' does not scan", it->id);
			*text = it->p;
			*len = (size_t)(q - it->p);
			it->p = q < it->end && *q == ',' ? q + 1 : q;
			return 1;
		}
		if (it->block && it->idx < json_array_size(json_object_get(it->block, "entries"))) {
			free(it->etext);
			it->etext = NULL;
			if ((rc = opt_json_canon(&it->etext, len,
						 json_array_get(json_object_get(it->block, "entries"), it->idx))) < 0)
				return rc;
			it->idx++;
			*text = it->etext;
			return 1;
		}
		if (!it->more)
			return 0;
		memcpy(prev, it->id, sizeof(prev));
		memcpy(next, it->next, sizeof(next));
		if ((rc = dtext_load(it, next, prev)) < 0) {
			it->more = 0;
			dtext_release(it);
			return rc;
		}
	}
}

void opt_diary_text_free(struct opt_diary_text *it)
{
	if (!it)
		return;
	dtext_release(it);
	free(it);
}

/* ---- transaction documents ---- */

static const char *action_type_of(const json_t *actions, const char *name, int *err)
{
	const char *kind = NULL;
	size_t i;

	*err = 0;
	if (!json_is_array(actions) || json_array_size(actions) == 0) {
		*err = opt_error_set(OPT_EINVAL, "collection '%s': expected a non-empty array of actions", name);
		return NULL;
	}
	for (i = 0; i < json_array_size(actions); i++) {
		const json_t *a = json_array_get(actions, i);
		const char *t = json_string_value(json_object_get(a, "type"));
		const char *k;
		if (!json_is_object(a) || !t) {
			*err = opt_error_set(OPT_EINVAL, "collection '%s', action %zu: an action is an object with a \"type\"",
					     name, i + 1);
			return NULL;
		}
		if (strcmp(t, "put") == 0 || strcmp(t, "del") == 0) {
			const json_t *key = json_object_get(a, "key");
			k = OPT_TYPE_TREE;
			if (!key || !opt_key_valid(key)) {
				*err = opt_error_set(OPT_EINVAL, "collection '%s', action %zu: \"key\" must be a number, a string or an array of those",
						     name, i + 1);
				return NULL;
			}
			if (strcmp(t, "put") == 0) {
				if ((*err = opt_key_check(key)) < 0) {
					*err = opt_error_wrap(*err, "collection '%s', action %zu", name, i + 1);
					return NULL;
				}
				if (!json_object_get(a, "value")) {
					*err = opt_error_set(OPT_EINVAL, "collection '%s', action %zu: a put needs a \"value\"", name, i + 1);
					return NULL;
				}
				if ((*err = opt_value_check(json_object_get(a, "value"), "the value")) < 0)
					return NULL;
			}
		} else if (strcmp(t, "append") == 0) {
			k = OPT_TYPE_DIARY;
			if (!json_object_get(a, "entry")) {
				*err = opt_error_set(OPT_EINVAL, "collection '%s', action %zu: an append needs an \"entry\"", name, i + 1);
				return NULL;
			}
			if ((*err = opt_value_check(json_object_get(a, "entry"), "the entry")) < 0)
				return NULL;
		} else {
			*err = opt_error_set(OPT_EINVAL, "collection '%s', action %zu: unknown action type '%s' (put, del, append)",
					     name, i + 1, opt_esc(t));
			return NULL;
		}
		if (kind && strcmp(kind, k) != 0) {
			*err = opt_error_set(OPT_EINVAL, "collection '%s' mixes tree actions (put, del) and diary actions (append)", name);
			return NULL;
		}
		kind = k;
	}
	return kind;
}

int opt_txdoc_check(const json_t *doc)
{
	const json_t *cols, *acts;
	const char *name;
	int err, rc;

	if (!json_is_object(doc))
		return opt_error_set(OPT_EINVAL, "a transaction is an object {\"collections\": {NAME: [actions]}}");
	cols = json_object_get(doc, "collections");
	if (!json_is_object(cols) || json_object_size(cols) == 0)
		return opt_error_set(OPT_EINVAL, "a transaction needs \"collections\": {NAME: [actions], ...}");
	json_object_foreach((json_t *)doc, name, acts) {
		if (strcmp(name, "collections") != 0)
			return opt_error_set(OPT_EINVAL, "unknown member '%s' in the transaction", opt_esc(name));
	}
	json_object_foreach((json_t *)cols, name, acts) {
		if ((rc = opt_store_name_check(name)) < 0)
			return rc;
		if (!action_type_of(acts, name, &err))
			return err;
	}
	return 0;
}

static int doc_fn(struct opt_txn *x, void *arg)
{
	const json_t *acts = arg;
	size_t i;
	int rc, found;
	const char *t0 = json_string_value(json_object_get(json_array_get(acts, 0), "type"));

	if (strcmp(t0, "append") == 0) {
		if ((rc = opt_diary_init(x)) < 0)
			return rc;
	} else if ((rc = opt_tree_init(x, 0)) < 0) {
		return rc;
	}
	for (i = 0; i < json_array_size(acts); i++) {
		const json_t *a = json_array_get(acts, i);
		const char *t = json_string_value(json_object_get(a, "type"));
		if (strcmp(t, "put") == 0)
			rc = opt_tree_put(x, json_object_get(a, "key"), json_object_get(a, "value"));
		else if (strcmp(t, "del") == 0)
			rc = opt_tree_del(x, json_object_get(a, "key"), &found);
		else
			rc = opt_diary_append(x, json_object_get(a, "entry"));
		if (rc < 0)
			return opt_error_wrap(rc, "collection '%s', action %zu", opt_txn_collection(x), i + 1);
	}
	return 0;
}

static int txdoc_run(struct opt_store *s, const json_t *doc, const struct opt_txn_opts *o, const char *keep,
		     json_t **out)
{
	const json_t *cols = json_object_get(doc, "collections"), *acts;
	struct opt_txn_part *parts = NULL;
	char trx[OPT_ID_LEN + 1];
	const char *name;
	size_t n = 0, i;
	json_t *revs;
	int rc, err;

	*out = NULL;
	if ((rc = opt_txdoc_check(doc)) < 0)
		return rc;
	parts = calloc(json_object_size(cols), sizeof(*parts));
	OPT_CHECK_ALLOC(parts);
	json_object_foreach((json_t *)cols, name, acts) {
		parts[n].name = name;
		parts[n].type = action_type_of(acts, name, &err);
		parts[n].fn = doc_fn;
		parts[n].arg = (void *)acts;
		n++;
	}
	if (keep) {
		snprintf(trx, sizeof(trx), "%s", keep);
		rc = opt_txn_multi_keep(s, parts, n, o, trx);
	} else {
		rc = opt_txn_multi(s, parts, n, o, trx);
	}
	if (rc == 0) {
		revs = json_object();
		for (i = 0; i < n; i++)
			json_object_set_new(revs, parts[i].name, json_integer(parts[i].res.rev));
		*out = json_pack("{s:s,s:o}", "trx", trx, "collections", revs);
	}
	free(parts);
	return rc;
}

int opt_txdoc_run(struct opt_store *s, const json_t *doc, const struct opt_txn_opts *o, json_t **out)
{
	return txdoc_run(s, doc, o, NULL, out);
}

int opt_txdoc_run_keep(struct opt_store *s, const json_t *doc, const struct opt_txn_opts *o, const char *trx,
		       json_t **out)
{
	return txdoc_run(s, doc, o, trx, out);
}

/* ---- checkpoints ---- */

struct ckpt {
	long upto;
	long pruned;
	long head;
};

static int ckpt_fn(struct opt_txn *x, void *arg)
{
	struct ckpt *k = arg;
	struct opt_tracker *t = opt_txn_tracker(x);
	const json_t *h, *b;
	char id[OPT_ID_MAX + 1];
	int rc;

	if (!opt_txn_base(x))
		return opt_error_set(OPT_ENOTFOUND, "no collection '%s'", opt_txn_collection(x));
	k->head = opt_snap_rev(opt_txn_base(x));
	if (k->upto <= 0 || k->upto > k->head)
		k->upto = k->upto <= 0 ? k->head : k->upto;
	if (k->upto > k->head)
		return opt_error_set(OPT_EINVAL, "collection '%s' has no revision %ld", opt_txn_collection(x), k->upto);
	k->pruned = 0;
	if ((rc = header(x, &h)) < 0)
		return rc;
	if (!json_is_string(json_object_get(h, "headId")))
		return opt_error_set(OPT_EINTEGRITY, "collection '%s' has no log", opt_txn_collection(x));
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(h, "headId")));
	for (;;) {
		size_t i, n;
		if ((rc = opt_tracker_get(t, id, &b)) < 0)
			return opt_error_wrap(OPT_EINTEGRITY, "log block '%s'", id);
		n = json_array_size(json_object_get(b, "entries"));
		for (i = 0; i < n; i++) {
			const json_t *e;
			json_t *ne, *op;
			if ((rc = opt_tracker_get(t, id, &b)) < 0)
				return rc;
			e = json_array_get(json_object_get(b, "entries"), i);
			if (json_integer_value(json_object_get(e, "rev")) > k->upto)
				return opt_txn_action(x, json_pack("{s:s,s:I,s:I}", "type", "checkpoint", "upto",
								   (json_int_t)k->upto, "pruned", (json_int_t)k->pruned));
			if (!json_object_get(e, "actions"))
				continue;
			ne = json_copy((json_t *)e);
			json_object_del(ne, "actions");
			op = json_pack("[s,I,i,[o]]", "entries", (json_int_t)i, 1, ne);
			rc = opt_tracker_update(t, id, op);
			json_decref(op);
			if (rc < 0)
				return rc;
			k->pruned++;
		}
		if ((rc = opt_tracker_get(t, id, &b)) < 0)
			return rc;
		if (!json_is_string(json_object_get(b, "nextId")))
			break;
		snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(b, "nextId")));
	}
	return opt_txn_action(x, json_pack("{s:s,s:I,s:I}", "type", "checkpoint", "upto", (json_int_t)k->upto,
					   "pruned", (json_int_t)k->pruned));
}

int opt_checkpoint(struct opt_store *s, const char *name, long upto, json_t **out)
{
	struct ckpt k = { upto, 0, 0 };
	struct opt_txn_opts o = { NULL, "checkpoint", 0, 0 };
	struct opt_txn_result res;
	int rc;

	*out = NULL;
	rc = opt_txn_run(s, name, ckpt_fn, &k, &o, &res);
	if (rc < 0)
		return rc;
	*out = json_pack("{s:s,s:I,s:I,s:I}", "collection", name, "rev", (json_int_t)res.rev, "upto",
			 (json_int_t)k.upto, "pruned", (json_int_t)k.pruned);
	return 0;
}
