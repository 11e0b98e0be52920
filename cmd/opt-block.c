/* opt-block - the block layer: create a store, read, write, list and check
 * blocks and their revisions. */
#include "common.h"
#include "txn.h"
#include "collection.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The values of the options (each row of the tables below binds one). */
static struct {
	const char *collection, *rev, *type, *prune;
	int no_internal, each;
} opt;

static const struct cmd_opt opts_coll_rev[] = {
	CMD_VALUE("collection", 'c', "COLL", "the collection (default: every collection)", &opt.collection),
	CMD_VALUE("rev", 0, "N", "read the collection as it was at revision N", &opt.rev),
	CMD_OPT_END,
};

static const struct cmd_opt opts_ls[] = {
	CMD_VALUE("collection", 'c', "COLL", "the collection (default: every collection)", &opt.collection),
	CMD_VALUE("type", 't', "T", "only blocks of type T", &opt.type),
	CMD_VALUE("rev", 0, "N", "list the collection as it was at revision N", &opt.rev),
	CMD_FLAG("no-internal", 0, "only blocks written by put, apply and transform: no headers, logs, tree or diary nodes", &opt.no_internal),
	CMD_OPT_END,
};

static const struct cmd_opt opts_put[] = {
	CMD_VALUE("collection", 'c', "COLL", "the collection to write (created when absent)", &opt.collection),
	CMD_FLAG("each", 'e', "one transaction per input document instead of one for all", &opt.each),
	CMD_OPT_END,
};

static const struct cmd_opt opts_coll[] = {
	CMD_VALUE("collection", 'c', "COLL", "the collection to write", &opt.collection),
	CMD_OPT_END,
};

static const struct cmd_opt opts_coll_read[] = {
	CMD_VALUE("collection", 'c', "COLL", "the collection to read", &opt.collection),
	CMD_OPT_END,
};

static const struct cmd_opt opts_stat[] = {
	CMD_VALUE("collection", 'c', "COLL", "one collection's figures", &opt.collection),
	CMD_VALUE("rev", 0, "N", "at revision N (with -c)", &opt.rev),
	CMD_OPT_END,
};

static const struct cmd_opt opts_none[] = {
	CMD_OPT_END,
};

static const struct cmd_opt opts_gc[] = {
	CMD_VALUE("prune", 0, "AGE", "remove unreachable objects older than AGE: now, never, or N[smhdw] (default 2w)", &opt.prune),
	CMD_OPT_END,
};

/* ---- helpers ---- */

static int need_coll(struct cmd *c, const char **out)
{
	*out = opt.collection;
	if (!*out)
		return cmd_usage(c, "the collection is required (-c COLL)");
	if (opt_store_name_check(*out) < 0)
		return cmd_usage(c, "%s", opt_error_last());
	return 0;
}

static int get_rev(struct cmd *c, long *rev)
{
	return cmd_long(c, &opt.rev, 0, 1, rev);
}

/* The collections to read: -c, or all of them. */
static int colls(struct cmd *c, json_t **out)
{
	const char *coll = opt.collection;
	int rc;

	if (coll) {
		if (opt_store_name_check(coll) < 0)
			return cmd_usage(c, "%s", opt_error_last());
		*out = json_pack("[s]", coll);
		return 0;
	}
	if (opt.rev)
		return cmd_usage(c, "--rev needs a collection (-c COLL)");
	if ((rc = opt_store_list(c->store, out)) < 0)
		return cmd_lib_fail(c, rc);
	return 0;
}

static int open_snap(struct cmd *c, const char *coll, long rev, struct opt_snap **snap)
{
	int rc = opt_snap_open(snap, c->store, coll, rev);

	if (rc < 0)
		return cmd_lib_fail(c, rc);
	return 0;
}

/* ---- init ---- */

static int do_init(struct cmd *c)
{
	const char *dir = c->npos > 0 ? c->pos[0] : (c->store_dir ? c->store_dir : OPT_STORE_DIRNAME);
	int created = 0, rc;
	json_t *o;

	if (c->npos > 1)
		return cmd_usage(c, "too many arguments");
	if (!*dir)
		return cmd_usage(c, "the store directory is empty");
	rc = opt_store_create(&c->store, dir, &created);
	if (rc < 0)
		return cmd_lib_fail(c, OPT_EIO);
	if (c->quiet && !created)
		return 0;  /* quiet: only what changed */
	o = json_pack("{s:s,s:b}", "store", dir, "created", created);
	rc = cmd_print(c, o);
	json_decref(o);
	return rc;
}

/* ---- get ---- */

/* The next block ID from the operands from `from` on ("-" reads them
 * from stdin): 1 with id, 0 at the end, or -(exit status). */
static int next_id(struct cmd_args *it, char *id, size_t n)
{
	const char *s;
	size_t len;
	int rc = cmd_args_next(it, &s, &len);

	if (rc != 1)
		return rc;
	if (len >= n || strlen(s) != len || !opt_id_valid(s))
		return -cmd_fail(it->c, OPT_EINVAL, "invalid block ID '%s' (" OPT_ID_RULE ")", opt_esc(s));
	memcpy(id, s, len + 1);
	return 1;
}

/* Print block id of snap as it is stored (its canonical JSON: the bytes
 * that opt-block history and the log hash), indented with --pretty.
 * 0 printed, OPT_ENOTFOUND, another negative code, or an exit status > 0
 * when the output failed. */
static int print_block(struct cmd *c, struct opt_snap *snap, const char *id)
{
	struct opt_bytes b;
	struct opt_ctape tape = { NULL, 0, 0 };
	json_t *v = NULL;
	char *canon = NULL;
	size_t len;
	int rc;

	if ((rc = opt_snap_block_bytes(snap, id, &b)) < 0)
		return rc;
	rc = opt_canon_scan(b.data, b.len, 0, &tape);
	opt_ctape_free(&tape);
	if (rc == 1) {
		rc = cmd_print_text(c, b.data, b.len);
	} else if (rc == 0) {
		/* not canonical as stored (verify reports that): what it holds,
		 * in canonical form */
		if ((rc = opt_json_parse(&v, b.data, b.len)) < 0)
			rc = opt_error_set(OPT_EINTEGRITY, "block '%s' of collection '%s' is not valid JSON", id,
					   opt_snap_name(snap));
		else if ((rc = opt_json_canon(&canon, &len, v)) == 0)
			rc = cmd_print_text(c, canon, len);
	}
	free(canon);
	json_decref(v);
	opt_bytes_release(&b);
	return rc;
}

static int do_get(struct cmd *c)
{
	struct cmd_args it;
	json_t *names = NULL;
	struct opt_snap **snaps = NULL;
	size_t nsnap = 0, i;
	char id[OPT_ID_MAX + 2];
	long rev;
	int st, missing = 0, rc;

	if ((st = get_rev(c, &rev)))
		return st;
	if (c->npos == 0)
		return cmd_usage(c, "no block ID given (use - to read IDs from stdin)");
	if ((st = cmd_store(c, 0)))
		return st;
	if ((st = colls(c, &names)))
		return st;
	cmd_args_init(&it, c, 0);
	nsnap = json_array_size(names);
	snaps = calloc(nsnap ? nsnap : 1, sizeof(*snaps));
	if (nsnap > 1) {
		/* one consistent view of every collection */
		const char **nv = calloc(nsnap, sizeof(*nv));
		for (i = 0; i < nsnap; i++)
			nv[i] = json_string_value(json_array_get(names, i));
		rc = opt_snap_open_many(snaps, c->store, nv, nsnap);
		free(nv);
		if (rc < 0) {
			st = cmd_lib_fail(c, rc);
			goto done;
		}
	} else {
		for (i = 0; i < nsnap; i++) {
			if ((st = open_snap(c, json_string_value(json_array_get(names, i)), rev, &snaps[i])))
				goto done;
		}
	}
	while ((rc = next_id(&it, id, sizeof(id))) == 1) {
		int found = 0;
		for (i = 0; i < nsnap && !found; i++) {
			if (!snaps[i])
				continue;
			rc = print_block(c, snaps[i], id);
			if (rc == OPT_ENOTFOUND)
				continue;
			if (rc < 0) {
				st = cmd_lib_fail(c, rc);
				goto done;
			}
			found = 1;
			if ((st = rc))
				goto done;
		}
		if (!found) {
			missing++;
			cmd_fail(c, OPT_ENOTFOUND, "no block '%s'%s%s", id,
				 opt.collection ? " in collection " : "",
				 opt.collection ? opt.collection : "");
		}
	}
	if (rc < 0)
		st = -rc;
	else
		st = missing ? OPT_EXIT_NOTFOUND : 0;
done:
	for (i = 0; i < nsnap; i++)
		opt_snap_free(snaps[i]);
	free(snaps);
	json_decref(names);
	cmd_args_free(&it);
	return st;
}

/* ---- ls ---- */

struct ls_ctx {
	struct cmd *c;
	struct opt_snap *snap;
	const char *type;
	int st;
	long n;
	int no_internal;              /* --no-internal */
	char hid[OPT_ID_LEN + 1];     /* the collection's header ID */
};

static int ls_cb(const char *id, void *arg)
{
	struct ls_ctx *l = arg;
	struct opt_source src = opt_snap_source(l->snap);
	json_t *b, *o;
	const char *type;
	int rc = src.get(src.ctx, id, &b);

	if (rc < 0) {
		l->st = cmd_lib_fail(l->c, rc);
		return 1;
	}
	type = opt_block_type(b);
	/* --no-internal: the collection's header and its log's blocks (a
	 * type no user block may have) are the collection's own */
	if (l->no_internal && (strcmp(id, l->hid) == 0 || (type && strcmp(type, OPT_TYPE_LOG) == 0))) {
		json_decref(b);
		return 0;
	}
	if (!l->type || (type && strcmp(type, l->type) == 0)) {
		o = json_pack("{s:s,s:s?,s:s}", "id", id, "type", type, "collection", opt_snap_name(l->snap));
		l->st = cmd_print(l->c, o);
		json_decref(o);
		l->n++;
	}
	json_decref(b);
	return l->st ? 1 : 0;
}

static int do_ls(struct cmd *c)
{
	json_t *names = NULL;
	struct ls_ctx l = { c, NULL, opt.type, 0, 0, opt.no_internal, "" };
	long rev;
	size_t i;
	int st;

	if (c->npos)
		return cmd_usage(c, "ls takes no operands");
	if ((st = get_rev(c, &rev)))
		return st;
	if ((st = cmd_store(c, 0)))
		return st;
	if ((st = colls(c, &names)))
		return st;
	for (i = 0; i < json_array_size(names) && !l.st; i++) {
		const char *name = json_string_value(json_array_get(names, i));
		int rc;
		if ((st = open_snap(c, name, rev, &l.snap))) {
			json_decref(names);
			return st;
		}
		opt_collection_header_id(name, l.hid);
		if (l.no_internal) {
			/* every block of a tree or a diary is one of its nodes */
			const char *kind = NULL;
			if ((rc = opt_coll_kind(l.snap, &kind)) < 0) {
				l.st = cmd_lib_fail(c, rc);
			} else if (strcmp(kind, "block") != 0) {
				opt_snap_free(l.snap);
				continue;
			}
		}
		rc = l.st ? 0 : opt_snap_foreach(l.snap, ls_cb, &l);
		if (rc < 0 && !l.st)
			l.st = cmd_lib_fail(c, rc);
		opt_snap_free(l.snap);
	}
	json_decref(names);
	return l.st;
}

/* ---- writes ---- */

static int print_written(struct cmd *c, const char *id, const char *coll, long rev, int deleted)
{
	json_t *o;
	int st;

	/* the fast path of bulk writes: IDs and collection names need no
	 * escaping */
	if (!c->pretty) {
		char line[512];
		int n = snprintf(line, sizeof(line), "{\"id\":\"%s\",\"collection\":\"", id);
		size_t cl = strlen(coll);
		if (n < 0 || (size_t)n + cl + 64 > sizeof(line)) {
			if (printf("{\"id\":\"%s\",\"collection\":\"%s\",\"rev\":%ld%s}\n", id, coll, rev,
				   deleted ? ",\"deleted\":true" : "") < 0) {
				c->out_err = 1;
				return OPT_EXIT_OTHER;
			}
			return 0;
		}
		memcpy(line + n, coll, cl);
		n += (int)cl;
		n += snprintf(line + n, sizeof(line) - (size_t)n, "\",\"rev\":%ld%s}\n", rev,
			      deleted ? ",\"deleted\":true" : "");
		if (fwrite(line, 1, (size_t)n, stdout) != (size_t)n) {
			c->out_err = 1;
			return OPT_EXIT_OTHER;
		}
		return 0;
	}
	o = json_pack("{s:s,s:s,s:I}", "id", id, "collection", coll, "rev", (json_int_t)rev);

	if (deleted)
		json_object_set_new(o, "deleted", json_true());
	st = cmd_print(c, o);
	json_decref(o);
	return st;
}

/* Normalise a block read for put: fill a missing id, collection and type;
 * refuse a disagreeing collection or the reserved header ID. */
static int prepare_block(json_t *b, const char *coll, const char *header_id)
{
	json_t *h;
	char id[OPT_ID_LEN + 1];

	if (!json_is_object(b))
		return opt_error_set(OPT_EINVAL, "a block must be a JSON object");
	h = json_object_get(b, "header");
	if (!h) {
		h = json_object();
		json_object_set_new(b, "header", h);
	}
	if (!json_is_object(h))
		return opt_error_set(OPT_EINVAL, "block \"header\" must be an object");
	if (!json_object_get(h, "id")) {
		opt_id_new(id);
		json_object_set_new(h, "id", json_string(id));
	}
	if (!json_object_get(h, "collection"))
		json_object_set_new(h, "collection", json_string(coll));
	if (!json_object_get(h, "type"))
		json_object_set_new(h, "type", json_string("block"));
	if (opt_block_check(b, coll) < 0)
		return OPT_EINVAL;
	if (strcmp(opt_block_id(b), header_id) == 0)
		return opt_error_set(OPT_EINVAL, "block ID '%s' is the collection's header, which only the collection writes",
				     header_id);
	if (strcmp(opt_block_type(b), OPT_TYPE_LOG) == 0)
		return opt_error_set(OPT_EINVAL, "block type '%s' is reserved for transaction logs", OPT_TYPE_LOG);
	return 0;
}

struct put_ctx {
	json_t *blocks; /* array of prepared blocks */
};

static int put_fn(struct opt_txn *x, void *arg)
{
	struct put_ctx *p = arg;
	size_t i;
	int rc;

	for (i = 0; i < json_array_size(p->blocks); i++) {
		json_t *b = json_array_get(p->blocks, i);
		if ((rc = opt_tracker_insert_new(opt_txn_tracker(x), json_incref(b))) < 0)
			return rc;
	}
	/* the log entry's "blocks" names every block written */
	return opt_txn_action(x, json_pack("{s:s,s:I}", "type", "block.put", "count",
					   (json_int_t)json_array_size(p->blocks)));
}

static int put_commit(struct cmd *c, const char *coll, json_t *blocks)
{
	struct put_ctx p = { blocks };
	struct opt_txn_opts o = { OPT_TYPE_BLOCKS, "opt-block put", 0, 0 };
	struct opt_txn_result res;
	size_t i;
	int rc, st = 0;

	if (json_array_size(blocks) == 0)
		return 0;
	rc = opt_txn_run(c->store, coll, put_fn, &p, &o, &res);
	if (rc < 0)
		return cmd_lib_fail(c, rc);
	for (i = 0; i < json_array_size(blocks) && !st; i++)
		st = print_written(c, opt_block_id(json_array_get(blocks, i)), coll, res.rev, 0);
	return st;
}

/* put --each: one transaction per input document (cmd_each): a block, or
 * an array of blocks. */
struct each_put_arg {
	const char *coll;
	const char *hid;
};

static int each_put_stage(struct cmd *c, void *arg, json_t *doc, const char *where, void *slot)
{
	const struct each_put_arg *a = arg;
	struct put_ctx *p = slot;
	size_t i;

	p->blocks = json_is_array(doc) ? json_incref(doc) : json_pack("[O]", doc);
	OPT_CHECK_ALLOC(p->blocks);
	for (i = 0; i < json_array_size(p->blocks); i++)
		if (prepare_block(json_array_get(p->blocks, i), a->coll, a->hid) < 0) {
			json_decref(p->blocks);
			p->blocks = NULL;
			return opt_error_wrap(OPT_EINVAL, "%s", where);
		}
	return 0;
}

static int each_put_print(struct cmd *c, void *arg, const struct opt_txn_result *r, void *slot)
{
	const struct each_put_arg *a = arg;
	struct put_ctx *p = slot;
	size_t i;
	int st = 0;

	for (i = 0; i < json_array_size(p->blocks) && !st; i++)
		st = print_written(c, opt_block_id(json_array_get(p->blocks, i)), a->coll, r->rev, 0);
	return st;
}

static void each_put_release(void *slot)
{
	json_decref(((struct put_ctx *)slot)->blocks);
}

static int do_put(struct cmd *c)
{
	const char *coll;
	char hid[OPT_ID_LEN + 1];
	struct opt_jsonl *in = NULL;
	json_t *all = json_array(), *v;
	int st, rc;

	if ((st = need_coll(c, &coll)))
		goto done;
	if (c->npos) {
		st = cmd_usage(c, "put reads blocks from stdin and takes no operands");
		goto done;
	}
	if ((st = cmd_store(c, 1)))
		goto done;
	opt_collection_header_id(coll, hid);
	opt_jsonl_open(&in, stdin);
	if (opt.each) {
		struct each_put_arg ea = { coll, hid };
		struct opt_txn_opts o = { OPT_TYPE_BLOCKS, "opt-block put", 0, 0 };
		struct cmd_each e = { 0 };
		e.in = in;
		e.coll = coll;
		e.opts = o;
		e.fn = put_fn;
		e.slot_size = sizeof(struct put_ctx);
		e.max = 256;
		e.stage = each_put_stage;
		e.print = each_put_print;
		e.release = each_put_release;
		e.arg = &ea;
		st = cmd_each(c, &e);
		goto done;
	}
	while ((rc = opt_jsonl_next(in, &v)) == 1) {
		json_t *doc = json_is_array(v) ? v : NULL;
		size_t i, n = doc ? json_array_size(doc) : 1;
		for (i = 0; i < n; i++) {
			json_t *b = doc ? json_array_get(doc, i) : v;
			if (prepare_block(b, coll, hid) < 0) {
				st = cmd_fail(c, OPT_EINVAL, "line %ld: %s (nothing written)", opt_jsonl_line(in),
					      opt_error_last());
				json_decref(v);
				goto done;
			}
			json_array_append(all, b);
		}
		json_decref(v);
	}
	if (rc < 0) {
		st = cmd_fail(c, rc, "%s (nothing written)", opt_error_last());
		goto done;
	}
	st = put_commit(c, coll, all);
done:
	opt_jsonl_free(in);
	json_decref(all);
	return st;
}

/* apply */

struct apply_ctx {
	const char *id;
	json_t *ops;
};

static int apply_fn(struct opt_txn *x, void *arg)
{
	struct apply_ctx *a = arg;
	size_t i;
	int rc;

	if (strcmp(a->id, opt_txn_header_id(x)) == 0)
		return opt_error_set(OPT_EINVAL, "block '%s' is the collection's header, which only the collection writes", a->id);
	if (!opt_txn_base(x))
		return opt_error_set(OPT_ENOTFOUND, "no collection '%s'", opt_txn_collection(x));
	for (i = 0; i < json_array_size(a->ops); i++) {
		if ((rc = opt_tracker_update(opt_txn_tracker(x), a->id, json_array_get(a->ops, i))) < 0)
			return opt_error_wrap(rc, "operation %zu", i + 1);
	}
	{
		const json_t *b;
		if (opt_tracker_get(opt_txn_tracker(x), a->id, &b) == 0 && opt_block_type(b) &&
		    strcmp(opt_block_type(b), OPT_TYPE_LOG) == 0)
			return opt_error_set(OPT_EINVAL, "block '%s' belongs to the transaction log", a->id);
	}
	return opt_txn_action(x, json_pack("{s:s,s:s,s:O}", "type", "block.apply", "id", a->id, "ops", a->ops));
}

static int do_apply(struct cmd *c)
{
	const char *coll;
	struct opt_jsonl *in = NULL;
	struct apply_ctx a = { NULL, json_array() };
	struct opt_txn_opts o = { OPT_TYPE_BLOCKS, "opt-block apply", 0, 0 };
	struct opt_txn_result res;
	json_t *v;
	int st, rc;

	if ((st = need_coll(c, &coll)))
		goto done;
	if (c->npos != 1) {
		st = cmd_usage(c, "apply takes one block ID");
		goto done;
	}
	a.id = c->pos[0];
	if (!opt_id_valid(a.id)) {
		st = cmd_fail(c, OPT_EINVAL, "invalid block ID '%s' (" OPT_ID_RULE ")", opt_esc(a.id));
		goto done;
	}
	opt_jsonl_open(&in, stdin);
	while ((rc = opt_jsonl_next(in, &v)) == 1) {
		/* an op, or an array of ops */
		int single = json_is_array(v) && json_is_string(json_array_get(v, 0));
		size_t i, n = single ? 1 : json_array_size(v);
		if (!json_is_array(v)) {
			json_decref(v);
			st = cmd_fail(c, OPT_EINVAL, "line %ld: expected an operation [entity, index, deleteCount, inserted] or an array of them (nothing written)",
				      opt_jsonl_line(in));
			goto done;
		}
		for (i = 0; i < n; i++) {
			json_t *op = single ? v : json_array_get(v, i);
			if (opt_op_check(op) < 0) {
				st = cmd_fail(c, OPT_EINVAL, "line %ld: %s (nothing written)", opt_jsonl_line(in), opt_error_last());
				json_decref(v);
				goto done;
			}
			json_array_append(a.ops, op);
		}
		json_decref(v);
	}
	if (rc < 0) {
		st = cmd_fail(c, rc, "%s (nothing written)", opt_error_last());
		goto done;
	}
	/* no operations: nothing to do (as put and transform with no input) */
	if (json_array_size(a.ops) == 0)
		goto done;
	if ((st = cmd_store(c, 0)))
		goto done;
	rc = opt_txn_run(c->store, coll, apply_fn, &a, &o, &res);
	if (rc < 0) {
		st = cmd_lib_fail(c, rc);
		goto done;
	}
	st = print_written(c, a.id, coll, res.rev, 0);
done:
	opt_jsonl_free(in);
	json_decref(a.ops);
	return st;
}

/* transform */

static int transform_fn(struct opt_txn *x, void *arg)
{
	json_t *tr = arg, *v;
	const char *id;
	size_t i;
	int rc;

	/* the header and log blocks are the collection's own */
	json_object_foreach(json_object_get(tr, "inserts"), id, v) {
		if (strcmp(id, opt_txn_header_id(x)) == 0)
			return opt_error_set(OPT_EINVAL, "block '%s' is the collection's header", id);
		if (opt_block_collection(v) && strcmp(opt_block_collection(v), opt_txn_collection(x)) != 0)
			return opt_error_set(OPT_EINVAL, "block '%s' belongs to collection '%s', not '%s'", id,
					     opt_block_collection(v), opt_txn_collection(x));
		if (opt_block_type(v) && strcmp(opt_block_type(v), OPT_TYPE_LOG) == 0)
			return opt_error_set(OPT_EINVAL, "block type '%s' is reserved for transaction logs", OPT_TYPE_LOG);
	}
	json_object_foreach(json_object_get(tr, "updates"), id, v) {
		if (strcmp(id, opt_txn_header_id(x)) == 0)
			return opt_error_set(OPT_EINVAL, "block '%s' is the collection's header", id);
	}
	for (i = 0; i < json_array_size(json_object_get(tr, "deletes")); i++) {
		const char *d = json_string_value(json_array_get(json_object_get(tr, "deletes"), i));
		if (d && strcmp(d, opt_txn_header_id(x)) == 0)
			return opt_error_set(OPT_EINVAL, "block '%s' is the collection's header", d);
	}
	if ((rc = opt_tracker_apply(opt_txn_tracker(x), tr)) < 0)
		return rc;
	return opt_txn_action(x, json_pack("{s:s,s:O}", "type", "block.transform", "transform", tr));
}

static int print_transform(struct cmd *c, const char *coll, json_t *tr, long rev)
{
	json_t *v;
	const char *id;
	size_t i;
	int st = 0;

	json_object_foreach(json_object_get(tr, "inserts"), id, v)
		if (!st)
			st = print_written(c, id, coll, rev, 0);
	json_object_foreach(json_object_get(tr, "updates"), id, v)
		if (!st && !json_object_get(json_object_get(tr, "inserts"), id))
			st = print_written(c, id, coll, rev, 0);
	for (i = 0; i < json_array_size(json_object_get(tr, "deletes")) && !st; i++)
		st = print_written(c, json_string_value(json_array_get(json_object_get(tr, "deletes"), i)),
				   coll, rev, 1);
	return st;
}

static int do_transform(struct cmd *c)
{
	const char *coll;
	struct opt_jsonl *in = NULL;
	struct opt_txn_opts o = { OPT_TYPE_BLOCKS, "opt-block transform", 0, 0 };
	struct opt_txn_result res;
	json_t *v;
	int st, rc;

	if ((st = need_coll(c, &coll)))
		return st;
	if (c->npos)
		return cmd_usage(c, "transform reads {inserts, updates, deletes} from stdin and takes no operands");
	if ((st = cmd_store(c, 1)))
		return st;
	opt_jsonl_open(&in, stdin);
	/* each document is one transaction */
	while ((rc = opt_jsonl_next(in, &v)) == 1) {
		json_t *ins;
		const char *id;
		json_t *b;
		/* fill a missing collection in inserted blocks' headers */
		ins = json_object_get(v, "inserts");
		json_object_foreach(ins, id, b) {
			json_t *h = json_object_get(b, "header");
			if (json_is_object(h) && !json_object_get(h, "collection"))
				json_object_set_new(h, "collection", json_string(coll));
		}
		if (opt_transform_check(v) < 0) {
			st = cmd_fail(c, OPT_EINVAL, "line %ld: %s", opt_jsonl_line(in), opt_error_last());
			json_decref(v);
			break;
		}
		rc = opt_txn_run(c->store, coll, transform_fn, v, &o, &res);
		if (rc < 0) {
			st = cmd_lib_fail(c, rc);
			json_decref(v);
			break;
		}
		st = print_transform(c, coll, v, res.rev);
		json_decref(v);
		if (st)
			break;
	}
	if (rc < 0 && !st)
		st = cmd_lib_fail(c, rc);
	opt_jsonl_free(in);
	return st;
}

/* rm */

struct rm_ctx {
	struct cmd *c;
};

static int rm_fn(struct opt_txn *x, void *arg)
{
	struct cmd *c = ((struct rm_ctx *)arg)->c;
	json_t *ids = json_array();
	int i, rc;

	if (!opt_txn_base(x)) {
		json_decref(ids);
		return opt_error_set(OPT_ENOTFOUND, "no collection '%s'", opt_txn_collection(x));
	}
	for (i = 0; i < c->npos; i++) {
		const json_t *b;
		const char *id = c->pos[i];
		if (strcmp(id, opt_txn_header_id(x)) == 0) {
			json_decref(ids);
			return opt_error_set(OPT_EINVAL, "block '%s' is the collection's header", id);
		}
		rc = opt_tracker_get(opt_txn_tracker(x), id, &b);
		if (rc == 0 && opt_block_type(b) && strcmp(opt_block_type(b), OPT_TYPE_LOG) == 0)
			rc = opt_error_set(OPT_EINVAL, "block '%s' belongs to the transaction log", id);
		else if (rc == 0)
			rc = opt_tracker_delete(opt_txn_tracker(x), id);
		else if (rc == OPT_ENOTFOUND)
			rc = opt_error_set(OPT_ENOTFOUND, "no block '%s' in collection '%s' (nothing removed)", id,
					   opt_txn_collection(x));
		if (rc < 0) {
			json_decref(ids);
			return rc;
		}
		json_array_append_new(ids, json_string(id));
	}
	return opt_txn_action(x, json_pack("{s:s,s:o}", "type", "block.rm", "ids", ids));
}

static int do_rm(struct cmd *c)
{
	const char *coll;
	struct rm_ctx r = { c };
	struct opt_txn_opts o = { OPT_TYPE_BLOCKS, "opt-block rm", 0, 0 };
	struct opt_txn_result res;
	int st, rc, i;

	if ((st = need_coll(c, &coll)))
		return st;
	if (c->npos == 0)
		return cmd_usage(c, "no block ID given (use - to read IDs from stdin)");
	if ((st = cmd_args_expand(c, 0)))
		return st;
	if (c->npos == 0)
		return 0;  /* "-" and nothing on stdin: nothing to do */
	for (i = 0; i < c->npos; i++)
		if (!opt_id_valid(c->pos[i]))
			return cmd_fail(c, OPT_EINVAL, "invalid block ID '%s' (" OPT_ID_RULE ")", opt_esc(c->pos[i]));
	if ((st = cmd_store(c, 0)))
		return st;
	rc = opt_txn_run(c->store, coll, rm_fn, &r, &o, &res);
	if (rc < 0)
		return cmd_lib_fail(c, rc);
	for (i = 0; i < c->npos && !st; i++)
		st = print_written(c, c->pos[i], coll, res.rev, 1);
	return st;
}

/* history */

/* Walk from the newest revision of snap (taken) back: a record
 * {rev, trx, oid, commit} of block id at each (oid "" where it is
 * absent), newest first, into out.  *seen: it was there at one. */
static int history_walk(struct cmd *c, struct opt_snap *snap, const char *id, json_t *out, int *seen)
{
	struct opt_snap *p;
	char cur[41];
	int rc, st = 0;

	*seen = 0;
	for (;;) {
		rc = opt_snap_block_oid(snap, id, cur);
		if (rc < 0 && rc != OPT_ENOTFOUND) {
			st = cmd_lib_fail(c, rc);
			break;
		}
		if (rc == OPT_ENOTFOUND)
			cur[0] = '\0';
		else
			*seen = 1;
		json_array_append_new(out, json_pack("{s:I,s:s,s:s,s:s}", "rev", (json_int_t)opt_snap_rev(snap),
						     "trx", opt_snap_trx(snap), "oid", cur, "commit", opt_snap_commit(snap)));
		rc = opt_snap_parent(&p, snap);
		if (rc == OPT_ENOTFOUND)
			break;
		if (rc < 0) {
			st = cmd_lib_fail(c, rc);
			break;
		}
		opt_snap_free(snap);
		snap = p;
	}
	opt_snap_free(snap);
	return st;
}

/* Print the record of walk record r {rev, trx, oid}: the hash of the
 * block's content at that revision, or "deleted". */
static int history_print(struct cmd *c, const char *coll, const char *id, const json_t *r, const char *prev)
{
	const char *oid = json_string_value(json_object_get(r, "oid"));
	json_t *o = json_pack("{s:O,s:O}", "rev", json_object_get(r, "rev"), "trx", json_object_get(r, "trx"));
	int rc, st = 0;

	if (*oid) {
		/* the SHA-256 of the block's canonical JSON, as the log records it */
		struct opt_snap *at = NULL;
		char *raw, hex[65];
		size_t len;
		if ((rc = opt_snap_open(&at, c->store, coll, (long)json_integer_value(json_object_get(r, "rev")))) < 0 ||
		    (rc = opt_snap_block_raw(at, id, &raw, &len)) < 0) {
			opt_snap_free(at);
			json_decref(o);
			return cmd_lib_fail(c, rc);
		}
		opt_sha256_hex(hex, raw, len);
		free(raw);
		opt_snap_free(at);
		json_object_set_new(o, "hash", json_string(hex));
	} else {
		json_object_set_new(o, "hash", json_null());
		json_object_set_new(o, "deleted", json_true());
	}
	if (*oid || *prev)
		st = cmd_print(c, o);
	json_decref(o);
	return st;
}

static int do_history(struct cmd *c)
{
	const char *coll, *id;
	struct opt_snap *snap = NULL;
	json_t *out = json_array();
	char prev[41] = "";
	size_t i;
	int st, seen = 0;

	if ((st = need_coll(c, &coll)) || (st = cmd_args_expand(c, 0)))
		goto done;
	if (c->npos != 1) {
		st = cmd_usage(c, "history takes one block ID");
		goto done;
	}
	id = c->pos[0];
	if (!opt_id_valid(id)) {
		st = cmd_fail(c, OPT_EINVAL, "invalid block ID '%s' (" OPT_ID_RULE ")", opt_esc(id));
		goto done;
	}
	/* walk from the newest revision back; a record where the content
	 * differs from the revision before */
	if ((st = cmd_store(c, 0)) || (st = open_snap(c, coll, 0, &snap)) ||
	    (st = history_walk(c, snap, id, out, &seen)))
		goto done;
	if (!seen) {
		st = cmd_fail(c, OPT_ENOTFOUND, "block '%s' never existed in collection '%s'", id, coll);
		goto done;
	}
	/* oldest first; print where the content changed */
	for (i = json_array_size(out); i-- > 0 && !st;) {
		const json_t *r = json_array_get(out, i);
		const char *oid = json_string_value(json_object_get(r, "oid"));
		if (strcmp(oid, prev) == 0)
			continue;
		st = history_print(c, coll, id, r, prev);
		snprintf(prev, sizeof(prev), "%s", oid);
	}
done:
	json_decref(out);
	return st;
}

/* stat */

static int do_stat(struct cmd *c)
{
	json_t *names = NULL, *o = NULL, *colls_out;
	size_t i, total = 0;
	long rev;
	int st, rc;

	if (c->npos)
		return cmd_usage(c, "stat takes no operands");
	if ((st = get_rev(c, &rev)))
		return st;
	if ((st = cmd_store(c, 0)))
		return st;
	if ((st = colls(c, &names)))
		return st;
	colls_out = json_array();
	for (i = 0; i < json_array_size(names); i++) {
		struct opt_snap *snap;
		struct opt_source src;
		json_t *h;
		char hid[OPT_ID_LEN + 1];
		size_t n;
		const char *name = json_string_value(json_array_get(names, i));

		if ((st = open_snap(c, name, rev, &snap)))
			goto done;
		if ((rc = opt_snap_count(snap, &n)) < 0) {
			opt_snap_free(snap);
			st = cmd_lib_fail(c, rc);
			goto done;
		}
		opt_collection_header_id(name, hid);
		src = opt_snap_source(snap);
		h = NULL;
		src.get(src.ctx, hid, &h);
		total += n;
		json_array_append_new(colls_out, json_pack("{s:s,s:s,s:I,s:I,s:s,s:I}", "collection", name,
			"type", opt_type_name(h ? opt_block_type(h) : NULL), "rev", (json_int_t)opt_snap_rev(snap),
			"blocks", (json_int_t)n, "trx", opt_snap_trx(snap), "time", (json_int_t)opt_snap_time(snap)));
		json_decref(h);
		opt_snap_free(snap);
	}
	if (opt.collection) {
		st = cmd_print(c, json_array_get(colls_out, 0));
		json_decref(colls_out);
		goto done;
	}
	if ((rc = opt_store_stats(c->store, &o)) < 0) {
		json_decref(colls_out);
		st = cmd_lib_fail(c, rc);
		goto done;
	}
	json_object_set_new(o, "store", json_string(opt_store_path(c->store)));
	json_object_set_new(o, "blocks", json_integer((json_int_t)total));
	json_object_set_new(o, "collections", colls_out);
	st = cmd_print(c, o);
done:
	json_decref(o);
	json_decref(names);
	return st;
}

/* --prune AGE in seconds: "now" 0, "never" -1, N[smhdw]. */
static int prune_age(struct cmd *c, long long *out)
{
	const char *v = opt.prune;
	char *end;
	long long n, unit = 1;

	*out = OPT_GC_PRUNE_DEFAULT;
	if (!v)
		return 0;
	if (strcmp(v, "now") == 0) {
		*out = 0;
		return 0;
	}
	if (strcmp(v, "never") == 0) {
		*out = -1;
		return 0;
	}
	errno = 0;
	n = strtoll(v, &end, 10);
	switch (*end) {
	case 's': unit = 1; end++; break;
	case 'm': unit = 60; end++; break;
	case 'h': unit = 3600; end++; break;
	case 'd': unit = 86400; end++; break;
	case 'w': unit = 7 * 86400; end++; break;
	}
	if (errno || end == v || *end || n < 0 || (v[0] < '0' || v[0] > '9') || n > (1LL << 40) / unit)
		return cmd_usage(c, "invalid --prune '%s': now, never, or an age such as 2w, 3d, 12h, 30m, 90s", v);
	*out = n * unit;
	return 0;
}

static int do_gc(struct cmd *c)
{
	struct opt_gc_result res;
	json_t *o = NULL;
	long long age;
	int st, rc;

	if (c->npos)
		return cmd_usage(c, "gc takes no operands");
	if ((st = prune_age(c, &age)))
		return st;
	if ((st = cmd_store(c, 0)))
		return st;
	if ((rc = opt_store_gc(c->store, age, &res)) < 0 || (rc = opt_store_stats(c->store, &o)) < 0)
		return cmd_lib_fail(c, rc);
	json_object_set_new(o, "pruned", json_integer((json_int_t)res.pruned));
	json_object_set_new(o, "unreachable", json_integer((json_int_t)res.unreachable));
	json_object_set_new(o, "temporary", json_integer((json_int_t)res.temporary));
	st = cmd_print(c, o);
	json_decref(o);
	return st;
}

static const struct cmd_verb verbs[] = {
	{ "init", do_init, "[DIR]", "create a store (default ./.opt)", opts_none, 1 },
	{ "get", do_get, "[-c COLL] [--rev N] ID... | -", "print blocks by ID", opts_coll_rev, 0 },
	{ "ls", do_ls, "[-c COLL] [--type T] [--rev N] [--no-internal]", "list blocks: {id, type, collection} lines", opts_ls, 0 },
	{ "put", do_put, "-c COLL [--each] < BLOCKS", "write blocks read from stdin (one transaction)", opts_put, 1 },
	{ "apply", do_apply, "-c COLL ID < OPS", "apply block operations to a block", opts_coll, 0 },
	{ "transform", do_transform, "-c COLL < TRANSFORMS", "apply {inserts, updates, deletes} documents, one transaction each", opts_coll, 1 },
	{ "rm", do_rm, "-c COLL ID... | -", "delete blocks (one transaction)", opts_coll, 0 },
	{ "history", do_history, "-c COLL ID | -", "the revisions that changed a block: {rev, trx, hash} lines", opts_coll_read, 0 },
	{ "stat", do_stat, "[-c COLL] [--rev N]", "what the store holds: collections, blocks, objects, bytes", opts_stat, 0 },
	{ "gc", do_gc, "[--prune AGE]", "pack what the refs reach into one pack; remove unreachable objects older than AGE", opts_gc, 0 },
	{ NULL, NULL, NULL, NULL, NULL, 0 },
};

static const struct cmd_prog prog = {
	"opt-block",
	"The block layer of optimystic: a store of immutable, versioned blocks in\n"
	"collections; every write is a transaction that commits a new revision.",
	verbs,
};

int main(int argc, char **argv)
{
	return cmd_main(&prog, argc, argv);
}
