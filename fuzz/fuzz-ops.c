/* fuzz-ops.c - libFuzzer harness for block operations, transforms and the
 * tracker (marks, rollbacks, all-or-nothing transforms).
 *
 * Input: JSON.  The usual shape is
 *
 *	{"block": BLOCK, "blocks": {ID: BLOCK, ...}, "ops": [ACTION, ...]}
 *
 * where BLOCK joins the source (an in-memory opt_source_object, besides two
 * fixed blocks "aaaa" and "bbbb") when opt_block_check accepts it, and each
 * ACTION is one of
 *
 *	[entity, index, deleteCount, inserted]   an op on BLOCK (else "aaaa")
 *	{"id": ID, "op": OP}                    an op on block ID
 *	{"insert": BLOCK}   {"delete": ID}   {"transform": TRANSFORM}
 *	{"text": BLOCK}     BLOCK inserted as its canonical text
 *	                    (opt_tracker_insert_text), when it is a valid block
 *	"mark"   "rollback"   "release"   "reset"
 *
 * Any other input is one action: an object without "ops" is a transform,
 * anything else an op.  Every value met also goes through opt_op_check,
 * opt_transform_check and opt_block_check.
 *
 * The tracker runs side by side with a model: a plain JSON object of the
 * blocks (changed with opt_op_apply on copies) and the set of changed IDs,
 * with a saved copy of both per mark.  After every action the tracker's view
 * (opt_tracker_get, its opt_source, opt_tracker_foreach/count/changed) must
 * equal the model byte for byte in canonical JSON; a failed action must
 * leave everything as it was (transforms are all or nothing), and a
 * rollback must restore exactly the state at its mark.  The source must
 * never change.  A broken property aborts. */
#include "block.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...) do { fprintf(stderr, "fuzz-ops: " __VA_ARGS__); \
	fputc('\n', stderr); abort(); } while (0)
#define ASSERT(c) do { if (!(c)) FAIL("assertion failed: %s (line %d)", #c, __LINE__); } while (0)

#define MAX_ACTIONS 128
#define MAX_MARKS 16
#define MAX_BLOCKS 8

static const char *const base_blocks =
	"{\"aaaa\": {\"header\": {\"id\": \"aaaa\", \"type\": \"T\", \"collection\": \"c\"},"
	"  \"list\": [1, 2, 3], \"obj\": {\"k\": 1}, \"n\": 1},"
	" \"bbbb\": {\"header\": {\"id\": \"bbbb\", \"type\": \"T\", \"collection\": \"c\"},"
	"  \"entries\": [], \"nextId\": \"aaaa\"}}";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (opt_util_init() < 0)
		FAIL("cannot initialise libsodium");
	return 0;
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

/* The model: blocks {id: block} and changed {id: true}. */
struct model {
	json_t *blocks, *changed;
};

static void model_copy(struct model *dst, const struct model *src)
{
	dst->blocks = opt_json_copy(src->blocks);
	dst->changed = opt_json_copy(src->changed);
	ASSERT(dst->blocks && dst->changed);
}

static void model_free(struct model *m)
{
	json_decref(m->blocks);
	json_decref(m->changed);
	m->blocks = m->changed = NULL;
}

/* Apply op to block id of the model: the code opt_tracker_update must give. */
static int model_update(struct model *m, const char *id, const json_t *op)
{
	json_t *b, *copy;
	int rc;

	if ((rc = opt_op_check(op)) < 0)
		return rc;
	b = json_object_get(m->blocks, id);
	if (!b)
		return OPT_ENOTFOUND;
	copy = opt_json_copy(b);
	ASSERT(copy);
	rc = opt_op_apply(copy, op);
	if (rc < 0) {
		/* a failed op leaves the block as it was */
		if (!same_json(copy, b))
			FAIL("opt_op_apply failed (%s) but changed the block", opt_error_last());
		json_decref(copy);
		return rc;
	}
	ASSERT(json_object_set_new(m->blocks, id, copy) == 0);
	ASSERT(json_object_set_new(m->changed, id, json_true()) == 0);
	return 0;
}

static int model_insert(struct model *m, const json_t *block)
{
	int rc = opt_block_check(block, NULL);

	if (rc < 0)
		return rc;
	ASSERT(json_object_set_new(m->blocks, opt_block_id(block), opt_json_copy(block)) == 0);
	ASSERT(json_object_set_new(m->changed, opt_block_id(block), json_true()) == 0);
	return 0;
}

static int model_delete(struct model *m, const char *id)
{
	if (!json_object_get(m->blocks, id))
		return OPT_ENOTFOUND;
	json_object_del(m->blocks, id);
	ASSERT(json_object_set_new(m->changed, id, json_true()) == 0);
	return 0;
}

/* A transform as documented: check, then deletes, inserts, updates; all or
 * nothing. */
static int model_apply(struct model *m, const json_t *tr)
{
	struct model w;
	const json_t *del = json_object_get(tr, "deletes");
	const json_t *ins = json_object_get(tr, "inserts");
	const json_t *upd = json_object_get(tr, "updates");
	const char *id;
	json_t *v;
	size_t i;
	int rc;

	if ((rc = opt_transform_check(tr)) < 0)
		return rc;
	model_copy(&w, m);
	for (i = 0; i < json_array_size(del); i++)
		if ((rc = model_delete(&w, json_string_value(json_array_get(del, i)))) < 0)
			goto done;
	json_object_foreach((json_t *)ins, id, v)
		if ((rc = model_insert(&w, v)) < 0)
			goto done;
	json_object_foreach((json_t *)upd, id, v)
		for (i = 0; i < json_array_size(v); i++)
			if ((rc = model_update(&w, id, json_array_get(v, i))) < 0)
				goto done;
	model_free(m);
	*m = w;
	return 0;
done:
	model_free(&w);
	return rc;
}

struct fe {
	const struct model *m;
	const char *last;
	size_t n;
};

static int foreach_cb(const char *id, const json_t *block, void *arg)
{
	struct fe *fe = arg;
	json_t *mb = json_object_get(fe->m->blocks, id);

	if (!json_object_get(fe->m->changed, id))
		FAIL("opt_tracker_foreach lists '%s', which the model did not change", id);
	if (!block != !mb)
		FAIL("opt_tracker_foreach: block '%s' is %s in the tracker, %s in the model", id,
		     block ? "present" : "deleted", mb ? "present" : "deleted");
	if (block && !same_json(block, mb))
		FAIL("opt_tracker_foreach: block '%s' differs from the model", id);
	if (fe->last && strcmp(fe->last, id) >= 0)
		FAIL("opt_tracker_foreach is not in ID order ('%s' after '%s')", id, fe->last);
	fe->last = id;
	fe->n++;
	return 0;
}

/* The tracker's view must be the model's, for every ID in ids. */
static void compare(struct opt_tracker *t, const struct model *m, const json_t *ids, const char *after)
{
	struct opt_source ts = opt_tracker_source(t);
	struct fe fe = { m, NULL, 0 };
	const json_t *b;
	json_t *sb, *mb, *dummy;
	const char *id;
	int rc;

	json_object_foreach((json_t *)ids, id, dummy) {
		mb = json_object_get(m->blocks, id);
		rc = opt_tracker_get(t, id, &b);
		if (mb && rc < 0)
			FAIL("after %s: block '%s' is missing from the tracker (%s)", after, id, opt_error_last());
		if (!mb && rc != OPT_ENOTFOUND)
			FAIL("after %s: block '%s' should be absent, tracker gives %d", after, id, rc);
		if (mb && !same_json(b, mb))
			FAIL("after %s: block '%s' differs from the model", after, id);
		sb = NULL;
		rc = ts.get(ts.ctx, id, &sb);
		ASSERT(mb ? rc == 0 : rc == OPT_ENOTFOUND);
		if (mb && !same_json(sb, mb))
			FAIL("after %s: the tracker's source gives another block '%s'", after, id);
		json_decref(sb);
		if (!!opt_tracker_changed(t, id) != !!json_object_get(m->changed, id))
			FAIL("after %s: opt_tracker_changed('%s') is %d", after, id, opt_tracker_changed(t, id));
	}
	if (opt_tracker_count(t) != json_object_size(m->changed))
		FAIL("after %s: opt_tracker_count is %zu, the model changed %zu blocks", after,
		     opt_tracker_count(t), json_object_size(m->changed));
	if (opt_tracker_empty(t) != (json_object_size(m->changed) == 0))
		FAIL("after %s: opt_tracker_empty is wrong", after);
	ASSERT(opt_tracker_foreach(t, foreach_cb, &fe) == 0);
	ASSERT(fe.n == json_object_size(m->changed));
}

static void note_id(json_t *ids, const char *id)
{
	if (id && json_object_size(ids) < 256)
		json_object_set_new(ids, id, json_true());
}

/* Remember the IDs a value may touch (for compare). */
static void note_ids(json_t *ids, const json_t *v)
{
	const char *k;
	json_t *x;
	size_t i;

	if (json_is_object(v)) {
		note_id(ids, opt_block_id(v));
		note_id(ids, json_string_value(json_object_get(v, "id")));
		note_id(ids, json_string_value(json_object_get(v, "delete")));
		note_ids(ids, json_object_get(v, "insert"));
		note_ids(ids, json_object_get(v, "text"));
		note_ids(ids, json_object_get(v, "transform"));
		json_object_foreach(json_object_get(v, "inserts"), k, x)
			note_id(ids, k);
		json_object_foreach(json_object_get(v, "updates"), k, x)
			note_id(ids, k);
		for (i = 0; i < json_array_size(json_object_get(v, "deletes")); i++)
			note_id(ids, json_string_value(json_array_get(json_object_get(v, "deletes"), i)));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *doc = NULL, *src_blocks = NULL, *actions = NULL, *ids = NULL, *x;
	struct opt_tracker *t = NULL;
	struct opt_source src;
	struct model m = { NULL, NULL }, saved[MAX_MARKS];
	size_t tokens[MAX_MARKS], nmarks = 0, i;
	const char *target = "aaaa", *k;
	char *src_before, *src_after, what[64];
	int rc, want;

	if (opt_json_parse(&doc, (const char *)data, size) < 0)
		return 0;
	/* any value: the shape checks must not crash */
	(void)opt_op_check(doc);
	(void)opt_transform_check(doc);
	(void)opt_block_check(doc, NULL);
	(void)opt_block_check(doc, "c");

	ASSERT(opt_json_parse(&src_blocks, base_blocks, strlen(base_blocks)) == 0);
	x = json_object_get(doc, "block");
	if (opt_block_check(x, NULL) == 0) {
		json_object_set(src_blocks, opt_block_id(x), x);
		target = opt_block_id(x);
	}
	json_object_foreach(json_object_get(doc, "blocks"), k, x) {
		if (json_object_size(src_blocks) >= MAX_BLOCKS)
			break;
		if (opt_block_check(x, NULL) == 0 && strcmp(opt_block_id(x), k) == 0)
			json_object_set(src_blocks, k, x);
	}
	src_before = canon(src_blocks);

	if (json_is_object(doc) && json_is_array(json_object_get(doc, "ops"))) {
		actions = json_incref(json_object_get(doc, "ops"));
	} else {
		actions = json_array();
		if (json_is_object(doc))
			json_array_append_new(actions, json_pack("{s:O}", "transform", doc));
		else
			json_array_append(actions, doc);
	}

	ids = json_object();
	json_object_foreach(src_blocks, k, x)
		note_id(ids, k);
	note_id(ids, "cccc");
	for (i = 0; i < json_array_size(actions); i++)
		note_ids(ids, json_array_get(actions, i));

	src = opt_source_object(src_blocks);
	ASSERT(opt_tracker_new(&t, &src) == 0);
	m.blocks = opt_json_copy(src_blocks);
	m.changed = json_object();
	compare(t, &m, ids, "start");

	for (i = 0; i < json_array_size(actions) && i < MAX_ACTIONS; i++) {
		const json_t *a = json_array_get(actions, i);
		const char *s = json_string_value(a);

		snprintf(what, sizeof(what), "action %zu", i);
		(void)opt_op_check(a);
		(void)opt_transform_check(a);
		if (s && strcmp(s, "mark") == 0) {
			if (nmarks == MAX_MARKS)
				continue;
			ASSERT(opt_tracker_mark(t, &tokens[nmarks]) == 0);
			model_copy(&saved[nmarks], &m);
			nmarks++;
		} else if (s && strcmp(s, "rollback") == 0) {
			if (!nmarks)
				continue;
			nmarks--;
			opt_tracker_rollback(t, tokens[nmarks]);
			model_free(&m);
			m = saved[nmarks];
		} else if (s && strcmp(s, "release") == 0) {
			if (!nmarks)
				continue;
			nmarks--;
			opt_tracker_release(t, tokens[nmarks]);
			model_free(&saved[nmarks]);
		} else if (s && strcmp(s, "reset") == 0) {
			opt_tracker_reset(t);
			while (nmarks)
				model_free(&saved[--nmarks]);
			model_free(&m);
			m.blocks = opt_json_copy(src_blocks);
			m.changed = json_object();
		} else if (json_is_array(a) || (json_is_object(a) && json_object_get(a, "op"))) {
			const char *id = json_is_array(a) ? target : json_string_value(json_object_get(a, "id"));
			const json_t *op = json_is_array(a) ? a : json_object_get(a, "op");
			if (!id)
				continue;
			want = model_update(&m, id, op);
			rc = opt_tracker_update(t, id, op);
			if (rc != want)
				FAIL("%s: opt_tracker_update('%s') gives %d, the model %d (%s)", what, id, rc, want,
				     opt_error_last());
		} else if (json_is_object(a) && json_object_get(a, "insert")) {
			const json_t *b = json_object_get(a, "insert");
			want = model_insert(&m, b);
			rc = opt_tracker_insert(t, b);
			if (rc != want)
				FAIL("%s: opt_tracker_insert gives %d, the model %d (%s)", what, rc, want,
				     opt_error_last());
		} else if (json_is_object(a) && json_object_get(a, "text")) {
			const json_t *b = json_object_get(a, "text");
			char *text = NULL;
			size_t len = 0;
			if (opt_block_check(b, NULL) < 0 || strlen(opt_block_type(b)) >= 16)
				continue;  /* the caller vouches for text blocks */
			ASSERT(opt_json_canon(&text, &len, b) == 0);
			want = model_insert(&m, b);
			rc = opt_tracker_insert_text(t, opt_block_id(b), opt_block_type(b), text, len);
			if (rc != want)
				FAIL("%s: opt_tracker_insert_text gives %d, the model %d (%s)", what, rc, want,
				     opt_error_last());
		} else if (json_is_object(a) && json_is_string(json_object_get(a, "delete"))) {
			const char *id = json_string_value(json_object_get(a, "delete"));
			want = model_delete(&m, id);
			rc = opt_tracker_delete(t, id);
			if (rc != want)
				FAIL("%s: opt_tracker_delete('%s') gives %d, the model %d (%s)", what, id, rc, want,
				     opt_error_last());
		} else if (json_is_object(a) && json_object_get(a, "transform")) {
			const json_t *tr = json_object_get(a, "transform");
			want = model_apply(&m, tr);
			rc = opt_tracker_apply(t, tr);
			if (rc != want)
				FAIL("%s: opt_tracker_apply gives %d, the model %d (%s)", what, rc, want,
				     opt_error_last());
		} else {
			continue;
		}
		compare(t, &m, ids, what);
	}

	/* the source is never written */
	src_after = canon(src_blocks);
	if (strcmp(src_before, src_after) != 0)
		FAIL("the tracker changed its source");
	free(src_before);
	free(src_after);
	opt_tracker_free(t);
	while (nmarks)
		model_free(&saved[--nmarks]);
	model_free(&m);
	json_decref(ids);
	json_decref(actions);
	json_decref(src_blocks);
	json_decref(doc);
	return 0;
}
