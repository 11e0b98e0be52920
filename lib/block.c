#include "block.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static const char *header_str(const json_t *block, const char *field)
{
	const json_t *h = json_object_get(block, "header");
	const json_t *v = json_object_get(h, field);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *opt_block_id(const json_t *block) { return header_str(block, "id"); }

void opt_bytes_release(struct opt_bytes *b)
{
	if (b->release)
		b->release(b->owner);
	memset(b, 0, sizeof(*b));
}
const char *opt_block_type(const json_t *block) { return header_str(block, "type"); }
const char *opt_block_collection(const json_t *block) { return header_str(block, "collection"); }

int opt_block_new(json_t **out, const char *id, const char *type, const char *collection)
{
	char fresh[OPT_ID_LEN + 1];
	json_t *b;

	*out = NULL;
	if (!id) {
		opt_id_new(fresh);
		id = fresh;
	}
	b = json_pack("{s:{s:s,s:s,s:s}}", "header", "id", id, "type", type,
		      "collection", collection);
	if (!b)
		return opt_error_set(OPT_EIO, "out of memory");
	*out = b;
	return 0;
}

int opt_block_check(const json_t *block, const char *collection)
{
	const json_t *h;
	const char *id, *type, *coll;

	if (!json_is_object(block))
		return opt_error_set(OPT_EINVAL, "a block must be a JSON object");
	h = json_object_get(block, "header");
	if (!json_is_object(h))
		return opt_error_set(OPT_EINVAL, "block has no \"header\" object");
	id = opt_block_id(block);
	if (!id)
		return opt_error_set(OPT_EINVAL, "block header has no \"id\" string");
	if (!opt_id_valid(id))
		return opt_error_set(OPT_EINVAL, "invalid block ID '%s' (" OPT_ID_RULE ")", opt_esc(id));
	type = opt_block_type(block);
	if (!type || !*type)
		return opt_error_set(OPT_EINVAL, "block '%s' has no \"type\" string in its header", id);
	coll = opt_block_collection(block);
	if (!coll)
		return opt_error_set(OPT_EINVAL, "block '%s' has no \"collection\" string in its header", id);
	if (collection && strcmp(coll, collection) != 0)
		return opt_error_set(OPT_EINVAL, "block '%s' belongs to collection '%s', not '%s'",
				     id, opt_esc(coll), opt_esc(collection));
	return 0;
}

int opt_op_check(const json_t *op)
{
	const json_t *e, *i, *d;

	if (!json_is_array(op) || json_array_size(op) != 4)
		return opt_error_set(OPT_EINVAL, "an operation must be an array [entity, index, deleteCount, inserted]");
	e = json_array_get(op, 0);
	i = json_array_get(op, 1);
	d = json_array_get(op, 2);
	if (!json_is_string(e) || json_string_length(e) == 0)
		return opt_error_set(OPT_EINVAL, "operation entity must be a non-empty string");
	if (strcmp(json_string_value(e), "header") == 0)
		return opt_error_set(OPT_EINVAL, "an operation cannot change the block header");
	if (!json_is_integer(i) || json_integer_value(i) < 0)
		return opt_error_set(OPT_EINVAL, "operation index must be an integer >= 0");
	if (!json_is_integer(d) || json_integer_value(d) < 0)
		return opt_error_set(OPT_EINVAL, "operation deleteCount must be an integer >= 0");
	return 0;
}

/* Apply op; when undo is not NULL, *undo receives the inverse op. */
static int op_apply(json_t *block, const json_t *op, json_t **undo)
{
	const char *entity;
	json_t *ins, *target;
	size_t index, del, len, k;
	int rc;

	if (undo)
		*undo = NULL;
	if ((rc = opt_op_check(op)) < 0)
		return rc;
	if (!json_is_object(block))
		return opt_error_set(OPT_EINVAL, "cannot apply an operation to a non-object");
	entity = json_string_value(json_array_get(op, 0));
	index = (size_t)json_integer_value(json_array_get(op, 1));
	del = (size_t)json_integer_value(json_array_get(op, 2));
	ins = json_array_get(op, 3);
	target = json_object_get(block, entity);

	if (!json_is_array(ins)) {
		if (undo) {
			/* the inverse of a set is not an op (the old value may be an
			 * array, or absent): {"set": entity, "old": value} */
			*undo = json_pack("{s:s}", "set", entity);
			if (!*undo || (target && json_object_set(*undo, "old", target) < 0)) {
				json_decref(*undo);
				*undo = NULL;
				return opt_error_set(OPT_EIO, "out of memory");
			}
		}
		if (json_is_null(ins))
			json_object_del(block, entity);
		else if (json_object_set(block, entity, ins) < 0)
			return opt_error_set(OPT_EIO, "out of memory");
		return 0;
	}
	if (!json_is_array(target))
		return opt_error_set(OPT_EINVAL, "operation splices '%s', which is not an array", opt_esc(entity));
	len = json_array_size(target);
	if (index > len)
		return opt_error_set(OPT_EINVAL, "operation index %zu out of range for '%s' (length %zu)",
				     index, opt_esc(entity), len);
	if (del > len - index)
		return opt_error_set(OPT_EINVAL, "operation deletes %zu elements of '%s' from %zu (length %zu)",
				     del, opt_esc(entity), index, len);
	if (ins == target) {
		/* splicing an array into itself: insert a copy */
		json_t *copy = opt_json_copy(ins);
		json_t *op2 = copy ? json_pack("[s,I,I,o]", entity, (json_int_t)index, (json_int_t)del, copy) : NULL;
		int rc2;
		if (!op2)
			return opt_error_set(OPT_EIO, "out of memory");
		rc2 = op_apply(block, op2, undo);
		json_decref(op2);
		return rc2;
	}
	if (undo) {
		json_t *removed = json_array();
		for (k = 0; k < del; k++)
			json_array_append(removed, json_array_get(target, index + k));
		*undo = json_pack("[s,I,I,o]", entity, (json_int_t)index,
				  (json_int_t)json_array_size(ins), removed);
		if (!*undo)
			return opt_error_set(OPT_EIO, "out of memory");
	}
	for (k = 0; k < del; k++)
		json_array_remove(target, index);
	for (k = 0; k < json_array_size(ins); k++)
		if (json_array_insert(target, index + k, json_array_get(ins, k)) < 0)
			return opt_error_set(OPT_EIO, "out of memory");
	return 0;
}

/* Undo one change recorded by op_apply. */
static void undo_apply(json_t *block, const json_t *inv)
{
	if (json_is_object(inv)) {
		const char *entity = json_string_value(json_object_get(inv, "set"));
		json_t *old = json_object_get(inv, "old");
		if (old)
			json_object_set(block, entity, old);
		else
			json_object_del(block, entity);
		return;
	}
	op_apply(block, inv, NULL);
}

int opt_op_apply(json_t *block, const json_t *op)
{
	return op_apply(block, op, NULL);
}

static int check_id_key(const char *id, const char *what)
{
	if (!opt_id_valid(id))
		return opt_error_set(OPT_EINVAL, "transform %s: invalid block ID '%s' (" OPT_ID_RULE ")", what, opt_esc(id));
	return 0;
}

int opt_transform_check(const json_t *tr)
{
	const json_t *ins, *upd, *del, *v;
	const char *id;
	size_t i;
	int rc;

	if (!json_is_object(tr))
		return opt_error_set(OPT_EINVAL, "a transform must be an object {inserts, updates, deletes}");
	json_object_foreach((json_t *)tr, id, v) {
		if (strcmp(id, "inserts") && strcmp(id, "updates") && strcmp(id, "deletes"))
			return opt_error_set(OPT_EINVAL, "transform has an unknown member '%s'", opt_esc(id));
	}
	ins = json_object_get(tr, "inserts");
	upd = json_object_get(tr, "updates");
	del = json_object_get(tr, "deletes");
	if (ins && !json_is_object(ins))
		return opt_error_set(OPT_EINVAL, "transform \"inserts\" must be an object {id: block}");
	if (upd && !json_is_object(upd))
		return opt_error_set(OPT_EINVAL, "transform \"updates\" must be an object {id: [op...]}");
	if (del && !json_is_array(del))
		return opt_error_set(OPT_EINVAL, "transform \"deletes\" must be an array of IDs");
	json_object_foreach((json_t *)ins, id, v) {
		if ((rc = check_id_key(id, "inserts")) < 0)
			return rc;
		if ((rc = opt_block_check(v, NULL)) < 0)
			return opt_error_wrap(rc, "transform inserts '%s'", id);
		if (strcmp(opt_block_id(v), id) != 0)
			return opt_error_set(OPT_EINVAL, "transform inserts '%s' holds a block whose ID is '%s'",
					     id, opt_esc(opt_block_id(v)));
	}
	json_object_foreach((json_t *)upd, id, v) {
		if ((rc = check_id_key(id, "updates")) < 0)
			return rc;
		if (!json_is_array(v))
			return opt_error_set(OPT_EINVAL, "transform updates '%s' must be an array of operations", id);
		for (i = 0; i < json_array_size(v); i++)
			if ((rc = opt_op_check(json_array_get(v, i))) < 0)
				return opt_error_wrap(rc, "transform updates '%s'", id);
	}
	for (i = 0; i < json_array_size(del); i++) {
		v = json_array_get(del, i);
		if (!json_is_string(v))
			return opt_error_set(OPT_EINVAL, "transform deletes must hold ID strings");
		if ((rc = check_id_key(json_string_value(v), "deletes")) < 0)
			return rc;
	}
	return 0;
}

/* ---- tracker ---- */

struct undo {
	char *id;
	json_t *prev;   /* previous entry in `changed` (NULL: none) ... */
	json_t *inv;    /* ... or, for an in-place op, its inverse */
};

/* A block inserted as its canonical text (opt_tracker_insert_text): in
 * `changed` it is the JSON integer of its index here, and it is parsed
 * only if someone reads or changes it. */
struct ttext {
	char *text;
	size_t len;
	char type[16];
};

struct opt_tracker {
	struct opt_source src;
	json_t *changed; /* id -> new block, json null for deleted, or the
			    integer index of a text block in texts */
	struct ttext *texts;
	size_t ntexts, captexts;
	json_t *cache;   /* id -> source block (unchanged) */
	struct undo *undo;
	size_t nundo, capundo;
	size_t marks;
};

int opt_tracker_new(struct opt_tracker **out, const struct opt_source *src)
{
	struct opt_tracker *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (!t)
		return opt_error_set(OPT_EIO, "out of memory");
	t->src = *src;
	t->changed = json_object();
	t->cache = json_object();
	if (!t->changed || !t->cache) {
		opt_tracker_free(t);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	*out = t;
	return 0;
}

static void undo_clear(struct opt_tracker *t, size_t to)
{
	while (t->nundo > to) {
		struct undo *u = &t->undo[--t->nundo];
		free(u->id);
		json_decref(u->prev);
		json_decref(u->inv);
	}
}

static void texts_clear(struct opt_tracker *t)
{
	size_t i;

	for (i = 0; i < t->ntexts; i++)
		free(t->texts[i].text);
	free(t->texts);
	t->texts = NULL;
	t->ntexts = t->captexts = 0;
}

void opt_tracker_free(struct opt_tracker *t)
{
	if (!t)
		return;
	undo_clear(t, 0);
	texts_clear(t);
	free(t->undo);
	json_decref(t->changed);
	json_decref(t->cache);
	free(t);
}

/* Record an undo entry (only while a mark is active).  prev and inv are
 * stolen. */
static int undo_reserve(struct opt_tracker *t)
{
	if (t->nundo == t->capundo) {
		size_t n = t->capundo ? t->capundo * 2 : 64;
		struct undo *nu = realloc(t->undo, n * sizeof(*nu));
		if (!nu)
			return opt_error_set(OPT_EIO, "out of memory");
		t->undo = nu;
		t->capundo = n;
	}
	return 0;
}

static int undo_push(struct opt_tracker *t, const char *id, json_t *prev, json_t *inv)
{
	struct undo *u;

	if (!t->marks) {
		json_decref(prev);
		json_decref(inv);
		return 0;
	}
	if (t->nundo == t->capundo) {
		size_t n = t->capundo ? t->capundo * 2 : 64;
		struct undo *nu = realloc(t->undo, n * sizeof(*nu));
		if (!nu) {
			json_decref(prev);
			json_decref(inv);
			return opt_error_set(OPT_EIO, "out of memory");
		}
		t->undo = nu;
		t->capundo = n;
	}
	u = &t->undo[t->nundo];
	u->id = strdup(id);
	if (!u->id) {
		json_decref(prev);
		json_decref(inv);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	u->prev = prev;
	u->inv = inv;
	t->nundo++;
	return 0;
}

/* Save the current `changed` entry of id for undo (before replacing it). */
static int undo_save_entry(struct opt_tracker *t, const char *id)
{
	json_t *cur;

	if (!t->marks)
		return 0;
	cur = json_object_get(t->changed, id);
	/* prev == NULL means "not in changed"; a JSON false marks that */
	return undo_push(t, id, cur ? json_incref(cur) : json_false(), NULL);
}

/* The `changed` entry of id, a text block parsed first (NULL when there
 * is none, or on a parse failure: then *rc). */
static json_t *changed_get(struct opt_tracker *t, const char *id, int *rc)
{
	json_t *v = json_object_get(t->changed, id), *b;
	struct ttext *x;

	*rc = 0;
	if (!v || !json_is_integer(v))
		return v;
	x = &t->texts[json_integer_value(v)];
	if ((*rc = opt_json_parse(&b, x->text, x->len)) < 0) {
		*rc = opt_error_wrap(*rc, "block '%s' inserted as text", id);
		return NULL;
	}
	/* the text stays (an undo entry may name it) until the tracker goes */
	if (json_object_set_new(t->changed, id, b) < 0) {
		*rc = opt_error_set(OPT_EIO, "out of memory");
		return NULL;
	}
	return b;
}

int opt_tracker_insert_text(struct opt_tracker *t, const char *id, const char *type, char *text, size_t len)
{
	json_t *ix;
	int rc;

	if (!opt_id_valid(id) || strlen(type) >= sizeof(t->texts[0].type)) {
		free(text);
		return opt_error_set(OPT_EINVAL, "invalid block ID '%s' or type", opt_esc(id));
	}
	if (t->ntexts == t->captexts) {
		size_t cap = t->captexts ? t->captexts * 2 : 64;
		struct ttext *nt = realloc(t->texts, cap * sizeof(*nt));
		if (!nt) {
			free(text);
			return opt_error_set(OPT_EIO, "out of memory");
		}
		t->texts = nt;
		t->captexts = cap;
	}
	if (!(ix = json_integer((json_int_t)t->ntexts))) {
		free(text);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	t->texts[t->ntexts].text = text;
	t->texts[t->ntexts].len = len;
	strcpy(t->texts[t->ntexts].type, type);
	t->ntexts++;
	if ((rc = undo_save_entry(t, id)) < 0) {
		json_decref(ix);
		return rc;
	}
	if (json_object_set_new(t->changed, id, ix) < 0)
		return opt_error_set(OPT_EIO, "out of memory");
	return 0;
}

int opt_tracker_get(struct opt_tracker *t, const char *id, const json_t **out)
{
	json_t *v;
	int rc;

	*out = NULL;
	v = changed_get(t, id, &rc);
	if (rc < 0)
		return rc;

	*out = NULL;
	if (v) {
		if (json_is_null(v))
			return opt_error_set(OPT_ENOTFOUND, "no block '%s' (deleted)", id);
		*out = v;
		return 0;
	}
	v = json_object_get(t->cache, id);
	if (v) {
		*out = v;
		return 0;
	}
	rc = t->src.get(t->src.ctx, id, &v);
	if (rc < 0)
		return rc;
	if (json_object_set_new(t->cache, id, v) < 0)
		return opt_error_set(OPT_EIO, "out of memory");
	*out = v;
	return 0;
}

int opt_tracker_insert_new(struct opt_tracker *t, json_t *block)
{
	const char *id;
	int rc;

	if ((rc = opt_block_check(block, NULL)) < 0) {
		json_decref(block);
		return rc;
	}
	id = opt_block_id(block);
	if ((rc = undo_save_entry(t, id)) < 0) {
		json_decref(block);
		return rc;
	}
	if (json_object_set_new(t->changed, id, block) < 0)
		return opt_error_set(OPT_EIO, "out of memory");
	return 0;
}

int opt_tracker_insert(struct opt_tracker *t, const json_t *block)
{
	json_t *copy;

	if (!json_is_object(block))
		return opt_block_check(block, NULL);
	copy = opt_json_copy(block);
	if (!copy)
		return opt_error_set(OPT_EIO, "out of memory");
	return opt_tracker_insert_new(t, copy);
}

/* The copy a change starts from: operations splice only the block's
 * top-level arrays (or replace a member), so those arrays are copied and
 * everything below them is shared; nothing shared is ever changed. */
static json_t *cow_copy(const json_t *b)
{
	json_t *c = json_object(), *v;
	const char *k;

	if (!c)
		return NULL;
	json_object_foreach((json_t *)b, k, v) {
		json_t *nv;
		if (json_is_array(v)) {
			size_t i, n = json_array_size(v);
			nv = json_array();
			for (i = 0; nv && i < n; i++)
				if (json_array_append(nv, json_array_get(v, i)) < 0) {
					json_decref(nv);
					nv = NULL;
				}
		} else {
			nv = json_incref(v);
		}
		if (!nv || json_object_set_new(c, k, nv) < 0) {
			json_decref(c);
			return NULL;
		}
	}
	return c;
}

int opt_tracker_update(struct opt_tracker *t, const char *id, const json_t *op)
{
	json_t *cur, *inv = NULL;
	const json_t *src;
	int rc;

	if ((rc = opt_op_check(op)) < 0)
		return rc;
	cur = changed_get(t, id, &rc);
	if (rc < 0)
		return rc;
	if (cur && json_is_null(cur))
		return opt_error_set(OPT_ENOTFOUND, "block '%s' was deleted", id);
	if (!cur) {
		json_t *copy;
		rc = opt_tracker_get(t, id, &src);
		if (rc == OPT_ENOTFOUND)
			return opt_error_set(OPT_ENOTFOUND, "no block '%s'", id);
		if (rc < 0)
			return rc;
		copy = cow_copy(src);
		if (!copy)
			return opt_error_set(OPT_EIO, "out of memory");
		rc = op_apply(copy, op, NULL);
		if (rc < 0) {
			json_decref(copy);
			return rc;
		}
		if ((rc = undo_save_entry(t, id)) < 0) {
			json_decref(copy);
			return rc;
		}
		if (json_object_set_new(t->changed, id, copy) < 0)
			return opt_error_set(OPT_EIO, "out of memory");
		return 0;
	}
	if (t->marks && (rc = undo_reserve(t)) < 0)
		return rc;
	rc = op_apply(cur, op, t->marks ? &inv : NULL);
	if (rc < 0)
		return rc;
	return undo_push(t, id, NULL, inv);
}

int opt_tracker_delete(struct opt_tracker *t, const char *id)
{
	const json_t *b;
	int rc = opt_tracker_get(t, id, &b);

	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "no block '%s'", id);
	if (rc < 0)
		return rc;
	if ((rc = undo_save_entry(t, id)) < 0)
		return rc;
	if (json_object_set_new(t->changed, id, json_null()) < 0)
		return opt_error_set(OPT_EIO, "out of memory");
	return 0;
}

int opt_tracker_mark(struct opt_tracker *t, size_t *token)
{
	t->marks++;
	*token = t->nundo;
	return 0;
}

void opt_tracker_rollback(struct opt_tracker *t, size_t token)
{
	while (t->nundo > token) {
		struct undo *u = &t->undo[t->nundo - 1];
		if (u->inv) {
			int rc;
			json_t *cur = changed_get(t, u->id, &rc);
			if (cur)
				undo_apply(cur, u->inv);
		} else if (json_is_false(u->prev)) {
			json_object_del(t->changed, u->id);
		} else {
			json_object_set(t->changed, u->id, u->prev);
		}
		undo_clear(t, t->nundo - 1);
	}
	if (t->marks)
		t->marks--;
}

void opt_tracker_release(struct opt_tracker *t, size_t token)
{
	(void)token;
	if (t->marks)
		t->marks--;
	if (!t->marks)
		undo_clear(t, 0);
}

int opt_tracker_apply(struct opt_tracker *t, const json_t *tr)
{
	const json_t *del = json_object_get(tr, "deletes");
	const json_t *ins = json_object_get(tr, "inserts");
	const json_t *upd = json_object_get(tr, "updates");
	const char *id;
	json_t *v;
	size_t i, tok;
	int rc;

	if ((rc = opt_transform_check(tr)) < 0)
		return rc;
	opt_tracker_mark(t, &tok);
	for (i = 0; i < json_array_size(del); i++) {
		id = json_string_value(json_array_get(del, i));
		if ((rc = opt_tracker_delete(t, id)) < 0)
			goto fail;
	}
	json_object_foreach((json_t *)ins, id, v) {
		if ((rc = opt_tracker_insert(t, v)) < 0)
			goto fail;
	}
	json_object_foreach((json_t *)upd, id, v) {
		for (i = 0; i < json_array_size(v); i++)
			if ((rc = opt_tracker_update(t, id, json_array_get(v, i))) < 0) {
				opt_error_wrap(rc, "updates of block '%s', operation %zu", id, i);
				goto fail;
			}
	}
	opt_tracker_release(t, tok);
	return 0;
fail:
	opt_tracker_rollback(t, tok);
	return rc;
}

void opt_tracker_reset(struct opt_tracker *t)
{
	undo_clear(t, 0);
	t->marks = 0;
	json_object_clear(t->changed);
	texts_clear(t);
}

int opt_tracker_empty(const struct opt_tracker *t)
{
	return json_object_size(t->changed) == 0;
}

size_t opt_tracker_count(const struct opt_tracker *t)
{
	return json_object_size(t->changed);
}

int opt_tracker_changed(const struct opt_tracker *t, const char *id)
{
	return json_object_get(t->changed, id) != NULL;
}


struct idval {
	const char *id;
	json_t *v;
};

static int cmp_idval(const void *a, const void *b)
{
	return strcmp(((const struct idval *)a)->id, ((const struct idval *)b)->id);
}

int opt_tracker_foreach_text(struct opt_tracker *t,
			     int (*cb)(const char *id, const json_t *block, const struct opt_block_text *text,
				       void *arg),
			     void *arg)
{
	size_t n = json_object_size(t->changed), i = 0;
	struct idval *iv;
	const char *id;
	json_t *v;
	int rc = 0;

	if (!n)
		return 0;
	/* keys and values together: no lookup per block afterwards (cb must
	 * not change the tracker) */
	iv = malloc(n * sizeof(*iv));
	if (!iv)
		return opt_error_set(OPT_EIO, "out of memory");
	json_object_foreach(t->changed, id, v) {
		iv[i].id = id;
		iv[i].v = v;
		i++;
	}
	qsort(iv, n, sizeof(*iv), cmp_idval);
	for (i = 0; i < n && rc == 0; i++) {
		if (json_is_integer(iv[i].v)) {
			const struct ttext *x = &t->texts[json_integer_value(iv[i].v)];
			struct opt_block_text bt = { x->text, x->len, x->type };
			rc = cb(iv[i].id, NULL, &bt, arg);
		} else {
			rc = cb(iv[i].id, json_is_null(iv[i].v) ? NULL : iv[i].v, NULL, arg);
		}
	}
	free(iv);
	return rc;
}

struct foreach_json {
	int (*cb)(const char *id, const json_t *block, void *arg);
	void *arg;
};

static int foreach_json_cb(const char *id, const json_t *block, const struct opt_block_text *text, void *arg)
{
	struct foreach_json *f = arg;
	json_t *b;
	int rc;

	if (!text)
		return f->cb(id, block, f->arg);
	if ((rc = opt_json_parse(&b, text->text, text->len)) < 0)
		return opt_error_wrap(rc, "block '%s' inserted as text", id);
	rc = f->cb(id, b, f->arg);
	json_decref(b);
	return rc;
}

int opt_tracker_foreach(struct opt_tracker *t,
			int (*cb)(const char *id, const json_t *block, void *arg),
			void *arg)
{
	struct foreach_json f = { cb, arg };

	return opt_tracker_foreach_text(t, foreach_json_cb, &f);
}

static int tracker_source_get(void *ctx, const char *id, json_t **out)
{
	const json_t *b;
	int rc = opt_tracker_get(ctx, id, &b);

	*out = NULL;
	if (rc < 0)
		return rc;
	*out = json_incref((json_t *)b);
	return 0;
}

struct opt_source opt_tracker_source(struct opt_tracker *t)
{
	struct opt_source s = { tracker_source_get, t, NULL };
	return s;
}

static int object_source_get(void *ctx, const char *id, json_t **out)
{
	json_t *b = json_object_get(ctx, id);

	*out = NULL;
	if (!b)
		return opt_error_set(OPT_ENOTFOUND, "no block '%s'", id);
	*out = json_incref(b);
	return 0;
}

struct opt_source opt_source_object(json_t *blocks)
{
	struct opt_source s = { object_source_get, blocks, NULL };
	return s;
}
