#include "harness.h"
#include "block.h"
#include "error.h"
#include "json.h"
#include "util.h"

static json_t *J(const char *s)
{
	json_t *v = NULL;
	opt_json_parse(&v, s, strlen(s));
	return v;
}

static int same(const json_t *a, const char *text)
{
	json_t *b = J(text);
	int eq = json_equal((json_t *)a, b);
	json_decref(b);
	return eq;
}

TEST(ops)
{
	json_t *b = J("{\"header\":{\"id\":\"aa\",\"type\":\"t\",\"collection\":\"c\"},\"items\":[1,2,3],\"x\":1}");
	json_t *op;

	op = J("[\"items\",1,1,[\"a\",\"b\"]]");
	CHECK_RC(opt_op_apply(b, op));
	json_decref(op);
	CHECK(same(json_object_get(b, "items"), "[1,\"a\",\"b\",3]"));
	op = J("[\"x\",0,0,{\"y\":2}]");
	CHECK_RC(opt_op_apply(b, op));
	json_decref(op);
	CHECK(same(json_object_get(b, "x"), "{\"y\":2}"));
	op = J("[\"x\",0,0,null]");
	CHECK_RC(opt_op_apply(b, op));
	json_decref(op);
	CHECK(json_object_get(b, "x") == NULL);
	/* errors leave the block as it was */
	op = J("[\"items\",9,0,[1]]");
	CHECK(opt_op_apply(b, op) == OPT_EINVAL);
	json_decref(op);
	op = J("[\"items\",3,2,[]]");
	CHECK(opt_op_apply(b, op) == OPT_EINVAL);
	json_decref(op);
	op = J("[\"x\",0,0,[1]]");
	CHECK(opt_op_apply(b, op) == OPT_EINVAL); /* splice of a missing array */
	json_decref(op);
	op = J("[\"header\",0,0,1]");
	CHECK(opt_op_apply(b, op) == OPT_EINVAL);
	json_decref(op);
	op = J("[\"items\",-1,0,[]]");
	CHECK(opt_op_check(op) == OPT_EINVAL);
	json_decref(op);
	op = J("{\"not\":\"an op\"}");
	CHECK(opt_op_check(op) == OPT_EINVAL);
	json_decref(op);
	CHECK(same(json_object_get(b, "items"), "[1,\"a\",\"b\",3]"));
	json_decref(b);
}

TEST(block_check)
{
	json_t *b = J("{\"header\":{\"id\":\"aa\",\"type\":\"t\",\"collection\":\"c\"}}");
	json_t *bad = J("{\"header\":{\"id\":\"../x\",\"type\":\"t\",\"collection\":\"c\"}}");
	json_t *nohead = J("{\"x\":1}");

	CHECK(opt_block_check(b, "c") == 0);
	CHECK(opt_block_check(b, "d") == OPT_EINVAL);
	CHECK(strstr(opt_error_last(), "belongs to collection 'c'") != NULL);
	CHECK(opt_block_check(bad, NULL) == OPT_EINVAL);
	CHECK(opt_block_check(nohead, NULL) == OPT_EINVAL);
	json_decref(b);
	json_decref(bad);
	json_decref(nohead);
}

TEST(tracker_overlay_and_rollback)
{
	json_t *store = J("{\"aa\":{\"header\":{\"id\":\"aa\",\"type\":\"t\",\"collection\":\"c\"},\"a\":[1,2],\"n\":1}}");
	struct opt_source src = opt_source_object(store);
	struct opt_tracker *t;
	const json_t *b;
	json_t *op;
	size_t tok, tok2;

	CHECK_RC(opt_tracker_new(&t, &src));
	CHECK(opt_tracker_empty(t));
	CHECK_RC(opt_tracker_get(t, "aa", &b));
	opt_tracker_mark(t, &tok);
	op = J("[\"a\",0,0,\"x\"]"); /* set over an array */
	CHECK_RC(opt_tracker_update(t, "aa", op));
	json_decref(op);
	op = J("[\"n\",0,0,5]");
	CHECK_RC(opt_tracker_update(t, "aa", op));
	json_decref(op);
	opt_tracker_mark(t, &tok2);
	op = J("[\"m\",0,0,[9]]"); /* set of a new field to an array is a splice: fails */
	CHECK(opt_tracker_update(t, "aa", op) == OPT_EINVAL);
	json_decref(op);
	op = J("[\"m\",0,0,7]");
	CHECK_RC(opt_tracker_update(t, "aa", op));
	json_decref(op);
	CHECK(opt_tracker_delete(t, "aa") == 0);
	CHECK(opt_tracker_get(t, "aa", &b) == OPT_ENOTFOUND);
	opt_tracker_rollback(t, tok2);
	CHECK_RC(opt_tracker_get(t, "aa", &b));
	CHECK(same(json_object_get(b, "a"), "\"x\""));
	CHECK(json_object_get(b, "m") == NULL);
	opt_tracker_rollback(t, tok);
	CHECK_RC(opt_tracker_get(t, "aa", &b));
	CHECK(same(json_object_get(b, "a"), "[1,2]"));
	CHECK(same(json_object_get(b, "n"), "1"));
	/* the source was never touched */
	CHECK(same(json_object_get(json_object_get(store, "aa"), "a"), "[1,2]"));
	opt_tracker_free(t);
	json_decref(store);
}

TEST(tracker_apply_transform_all_or_nothing)
{
	json_t *store = J("{\"aa\":{\"header\":{\"id\":\"aa\",\"type\":\"t\",\"collection\":\"c\"},\"a\":[1,2]}}");
	struct opt_source src = opt_source_object(store);
	struct opt_tracker *t;
	const json_t *b;
	json_t *tr;

	CHECK_RC(opt_tracker_new(&t, &src));
	tr = J("{\"inserts\":{\"bb\":{\"header\":{\"id\":\"bb\",\"type\":\"t\",\"collection\":\"c\"}}},"
	       "\"updates\":{\"aa\":[[\"a\",2,0,[3]],[\"a\",9,0,[4]]]}}");
	CHECK(opt_tracker_apply(t, tr) == OPT_EINVAL);
	json_decref(tr);
	CHECK(opt_tracker_empty(t));
	CHECK(opt_tracker_get(t, "bb", &b) == OPT_ENOTFOUND);
	tr = J("{\"inserts\":{\"bb\":{\"header\":{\"id\":\"bb\",\"type\":\"t\",\"collection\":\"c\"}}},"
	       "\"updates\":{\"aa\":[[\"a\",2,0,[3]]]},\"deletes\":[]}");
	CHECK_RC(opt_tracker_apply(t, tr));
	json_decref(tr);
	CHECK(opt_tracker_count(t) == 2);
	CHECK_RC(opt_tracker_get(t, "aa", &b));
	CHECK(same(json_object_get(b, "a"), "[1,2,3]"));
	tr = J("{\"inserts\":{\"cc\":{\"header\":{\"id\":\"dd\",\"type\":\"t\",\"collection\":\"c\"}}}}");
	CHECK(opt_transform_check(tr) == OPT_EINVAL);
	json_decref(tr);
	tr = J("{\"deletes\":[\"../../x\"]}");
	CHECK(opt_transform_check(tr) == OPT_EINVAL);
	json_decref(tr);
	tr = J("{\"delete\":[]}");
	CHECK(opt_transform_check(tr) == OPT_EINVAL);
	json_decref(tr);
	opt_tracker_reset(t);
	CHECK(opt_tracker_empty(t));
	opt_tracker_free(t);
	json_decref(store);
}

struct seen {
	int text, json;
	char last[64];
};

static int seen_cb(const char *id, const json_t *block, const struct opt_block_text *text, void *arg)
{
	struct seen *s = arg;

	if (text) {
		s->text++;
		snprintf(s->last, sizeof(s->last), "%s %s %.*s", id, text->type, (int)(text->len > 30 ? 30 : text->len),
			 text->text);
	} else if (block) {
		s->json++;
	}
	return 0;
}

/* A block inserted as text: handed out as that text by foreach_text,
 * parsed when read or changed, undone by a rollback. */
TEST(tracker_text_blocks)
{
	json_t *store = J("{\"aa\":{\"header\":{\"id\":\"aa\",\"type\":\"t\",\"collection\":\"c\"},\"a\":[1]}}");
	struct opt_source src = opt_source_object(store);
	struct opt_tracker *t;
	const json_t *b;
	struct seen s = { 0, 0, "" };
	json_t *op;
	size_t tok;
	const char *tx = "{\"a\":[2,3],\"header\":{\"collection\":\"c\",\"id\":\"bb\",\"type\":\"TL\"}}";
	const char *ta = "{\"a\":[],\"header\":{\"collection\":\"c\",\"id\":\"aa\",\"type\":\"t\"}}";

	CHECK_RC(opt_tracker_new(&t, &src));
	CHECK(opt_tracker_insert_text(t, "no/t valid", "TL", strdup(tx), strlen(tx)) == OPT_EINVAL);
	opt_tracker_mark(t, &tok);
	CHECK_RC(opt_tracker_insert_text(t, "bb", "TL", strdup(tx), strlen(tx)));
	CHECK(opt_tracker_changed(t, "bb") && opt_tracker_count(t) == 1);
	CHECK_RC(opt_tracker_foreach_text(t, seen_cb, &s));
	CHECK(s.text == 1 && s.json == 0);
	CHECK(strncmp(s.last, "bb TL {\"a\":[2,3],\"header\":{\"", 26) == 0 && strlen(s.last) == 6 + 30);
	opt_tracker_rollback(t, tok);
	CHECK(!opt_tracker_changed(t, "bb") && opt_tracker_empty(t));
	CHECK(opt_tracker_get(t, "bb", &b) == OPT_ENOTFOUND);
	/* read, then changed: parsed */
	CHECK_RC(opt_tracker_insert_text(t, "bb", "TL", strdup(tx), strlen(tx)));
	CHECK_RC(opt_tracker_get(t, "bb", &b));
	CHECK(same(b, tx));
	opt_tracker_mark(t, &tok);
	op = J("[\"a\",0,1,[]]");
	CHECK_RC(opt_tracker_update(t, "bb", op));
	json_decref(op);
	CHECK_RC(opt_tracker_get(t, "bb", &b));
	CHECK(same(json_object_get(b, "a"), "[3]"));
	opt_tracker_rollback(t, tok);
	CHECK_RC(opt_tracker_get(t, "bb", &b));
	CHECK(same(json_object_get(b, "a"), "[2,3]"));
	/* over a source block: the text wins; the plain foreach parses it */
	CHECK_RC(opt_tracker_insert_text(t, "aa", "t", strdup(ta), strlen(ta)));
	s.text = s.json = 0;
	CHECK_RC(opt_tracker_foreach_text(t, seen_cb, &s));
	CHECK(s.text == 1 && s.json == 1);
	CHECK_RC(opt_tracker_get(t, "aa", &b));
	CHECK(same(json_object_get(b, "a"), "[]"));
	CHECK(same(json_object_get(json_object_get(store, "aa"), "a"), "[1]"));
	opt_tracker_reset(t);
	CHECK(opt_tracker_empty(t));
	opt_tracker_free(t);
	json_decref(store);
}

int main(void)
{
	opt_util_init();
	RUN(ops);
	RUN(block_check);
	RUN(tracker_overlay_and_rollback);
	RUN(tracker_apply_transform_all_or_nothing);
	RUN(tracker_text_blocks);
	return DONE();
}
