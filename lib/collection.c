#include "collection.h"
#include "chain.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define DIARY_CHAIN_TYPE "DIC"   /* the diary's chain header */
#define DIARY_DATA_TYPE "DID"    /* diary data blocks */

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

	if ((rc = check_key(key)) < 0)
		return rc;
	if (!value)
		return opt_error_set(OPT_EINVAL, "a put needs a value");
	if ((rc = opt_btree_put(opt_txn_tracker(x), opt_txn_header_id(x), key, value, &replaced)) < 0)
		return rc;
	if (!replaced && (rc = set_count(x, 1)) < 0)
		return rc;
	return opt_txn_action(x, json_pack("{s:s,s:O,s:O}", "type", "put", "key", key, "value", value));
}

int opt_tree_put_many(struct opt_txn *x, const json_t *const *keys, const json_t *const *values, size_t n)
{
	struct opt_source src = opt_tracker_source(opt_txn_tracker(x));
	json_t *seen = NULL;
	const json_t *h;
	size_t i, added = 0;
	int rc, empty;

	for (i = 0; i < n; i++)
		if ((rc = check_key(keys[i])) < 0)
			return opt_error_wrap(rc, "record %zu", i + 1);
	if ((rc = header(x, &h)) < 0)
		return rc;
	empty = json_integer_value(json_object_get(h, "count")) == 0;
	if (!empty) {
		/* the header keeps the count: find how many distinct keys are
		 * new (a bulk load into an empty tree counts its leaves after) */
		seen = json_object();
		for (i = 0; i < n && seen; i++) {
			json_t *v = NULL;
			char *ks;
			if ((rc = opt_json_canon(&ks, NULL, keys[i])) < 0)
				break;
			if (json_object_get(seen, ks)) {
				free(ks);
				continue;
			}
			json_object_set_new(seen, ks, json_true());
			free(ks);
			rc = opt_btree_get(&src, opt_txn_header_id(x), keys[i], &v);
			json_decref(v);
			if (rc == OPT_ENOTFOUND)
				added++;
			else if (rc < 0)
				break;
			rc = 0;
		}
		json_decref(seen);
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

	opt_collection_header_id(opt_snap_name(snap), hid);
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
	*kind = opt_type_name(opt_block_type(h));
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
	opt_collection_header_id(opt_snap_name(snap), hid);
	return opt_btree_get(&src, hid, key, value);
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

	opt_collection_header_id(opt_snap_name(snap), hid);
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
