#include "verify.h"
#include "identity.h"
#include "btree.h"
#include "chain.h"
#include "collection.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "txn.h"
#include "util.h"

#include <git2/common.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define COMMIT_HEX 40

struct vctx {
	struct opt_store *s;
	const char *name;
	char hid[OPT_ID_LEN + 1];
	struct opt_snap *head;
	long H;
	char (*commits)[COMMIT_HEX]; /* revision H first */
	size_t ncommits, capcommits;
	json_t *live;           /* {id: [rev, hash]}: blocks the log leaves in place */
	json_t *trusted;        /* {key: true}: authors whose entries we accept */
	int restricted;         /* only those (else any key that signs) */
	opt_verify_progress_fn progress;
	void *arg;
	long B;                 /* since: the base's revision (0: verify all) */
	json_t *gone;           /* since: {id: true} deleted by a new entry */
	json_t *logset;         /* {id: true}: the log's blocks, as its check walked them */
	int defer;              /* full: the blocks of entry H are checked with the head's */
	json_t *hashed;         /* full: {id: true} checked at the head already */
	int tree_rc;            /* full: the tree's check, done before check_head:
				   1 passed (tree_n entries), <0 failed (tree_msg) */
	size_t tree_n;
	char tree_msg[1024];
	int seen_fail;          /* head_seen failed the tree's check */
};

/* Replace the last message with "<prefix>: <it>", dropping the
 * "collection 'NAME': " it may begin with (the caller names the
 * collection), and return code.  A message that already begins with
 * "log entry rev " or "revision " keeps no prefix. */
static int wrap_last(int code, const char *name, const char *prefix)
{
	char last[1024], lead[OPT_NAME_MAX + 20];
	const char *m = last;
	size_t n;

	snprintf(last, sizeof(last), "%s", opt_error_last());
	n = (size_t)snprintf(lead, sizeof(lead), "collection '%s': ", name);
	if (strncmp(m, lead, n) == 0)
		m += n;
	if (!prefix || strncmp(m, "log entry rev ", 14) == 0 || strncmp(m, "revision ", 9) == 0)
		return opt_error_set(code, "%s", m);
	return opt_error_set(code, "%s: %s", prefix, m);
}

/* Reading what must be there: not found and corrupt are both integrity
 * failures; I/O and memory errors stay what they are. */
static int as_integrity(int rc)
{
	return rc == OPT_EIO || rc == OPT_EBUSY ? rc : OPT_EINTEGRITY;
}

/* An integrity failure of the history without a reason of its own: data
 * that does not match what was recorded. */
static int tampered_unless(int rc)
{
	const char *why = opt_error_reason();

	if (rc == OPT_EINTEGRITY && why && strcmp(why, "corrupt") == 0)
		return opt_error_set_reason(rc, "tampered");
	return rc;
}

static int push_commit(struct vctx *v, const char *hex)
{
	int rc;

	if ((rc = OPT_ALLOC_GROW(v->commits, v->ncommits + 1, v->capcommits)) < 0)
		return rc;
	memcpy(v->commits[v->ncommits], hex, COMMIT_HEX);
	v->ncommits++;
	return 0;
}

/* Walk the commits from the head to revision 1 once, keeping their IDs. */
static int walk_history(struct vctx *v)
{
	struct opt_snap *cur = v->head, *p = NULL;
	char pre[64];
	long r = v->H;
	int rc;

	if ((rc = push_commit(v, opt_snap_commit(cur))) < 0)
		return rc;
	for (; r > (v->B ? v->B : 1); r--) {
		rc = opt_snap_parent(&p, cur);
		if (rc == OPT_ENOTFOUND) {
			rc = opt_error_set(OPT_EINTEGRITY, "revision %ld: its commit has no parent (the revisions before it are missing)",
					   r);
			goto done;
		}
		snprintf(pre, sizeof(pre), "revision %ld", r);
		if (rc < 0) {
			rc = wrap_last(as_integrity(rc), v->name, pre);
			goto done;
		}
		if (cur != v->head)
			opt_snap_free(cur);
		cur = p;
		if ((rc = push_commit(v, opt_snap_commit(cur))) < 0)
			goto done;
	}
	if (v->B)  /* the caller compares the base's commit */
		goto done;
	/* revision 1 begins the history */
	rc = opt_snap_parent(&p, cur);
	if (rc == OPT_ENOTFOUND) {
		opt_error_clear();
		rc = 0;
	} else if (rc == 0) {
		opt_snap_free(p);
		rc = opt_error_set(OPT_EINTEGRITY, "revision 1: its commit has a parent");
	} else {
		rc = wrap_last(as_integrity(rc), v->name, "revision 1: its commit has a parent");
	}
done:
	if (cur != v->head)
		opt_snap_free(cur);
	return rc;
}

/* Every revision walk_history kept has the shape our writer gives a
 * revision (opt_store_check_shape): the first in full, each later one
 * where it differs from the one before; the base of an incremental
 * verification was checked before.  Reads what changed, no more. */
static int check_shapes(struct vctx *v)
{
	char commit[COMMIT_HEX + 1], parent[COMMIT_HEX + 1];
	size_t i;
	int rc;

	for (i = v->ncommits; i-- > 0;) {
		long r = v->H - (long)i;
		if (v->B && r <= v->B)
			continue;
		memcpy(commit, v->commits[i], COMMIT_HEX);
		commit[COMMIT_HEX] = '\0';
		if (i + 1 < v->ncommits) {
			memcpy(parent, v->commits[i + 1], COMMIT_HEX);
			parent[COMMIT_HEX] = '\0';
		}
		rc = opt_store_check_shape(v->s, commit, i + 1 < v->ncommits ? parent : NULL);
		if (rc < 0) {
			char pre[64];
			snprintf(pre, sizeof(pre), "revision %ld", r);
			return opt_error_set_reason(wrap_last(rc == OPT_EIO ? rc : OPT_EINTEGRITY, v->name, pre),
						    "malformed");
		}
	}
	return 0;
}

/* Compare block id as stored at snap with hash want (the log's way: the
 * SHA-256 of its canonical JSON; the header without its log links).
 * 0 when it matches, OPT_ENOTFOUND (no message) when absent, else
 * OPT_EINTEGRITY with a message beginning with prefix. */
static int check_block(struct opt_snap *snap, const char *id, int is_header, const char *want,
		       const char *prefix)
{
	char *raw = NULL, got[OPT_SHA256_HEX + 1];
	size_t len = 0;
	json_t *b = NULL;
	int rc;

	rc = opt_snap_block_raw(snap, id, &raw, &len);
	if (rc == OPT_ENOTFOUND) {
		opt_error_clear();
		return OPT_ENOTFOUND;
	}
	if (rc < 0)
		return wrap_last(as_integrity(rc), opt_snap_name(snap), prefix);
	if (!is_header) {
		/* the stored bytes are the canonical JSON: hash them as they are */
		opt_sha256_hex(got, raw, len);
		if (strcmp(got, want) == 0)
			goto done;
	}
	if (opt_json_parse(&b, raw, len) < 0) {
		rc = opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "%s: block '%s' is not valid JSON", prefix, id),
					  "malformed");
		goto done;
	}
	if ((rc = opt_txn_block_hash(b, is_header, got)) < 0)
		goto done;
	if (strcmp(got, want) != 0)
		rc = opt_error_set(OPT_EINTEGRITY, "%s: block '%s' does not match the hash the log recorded for it",
				   prefix, id);
	else if (!is_header)
		rc = opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "%s: block '%s' is not stored as canonical JSON",
							prefix, id), "malformed");
done:
	json_decref(b);
	free(raw);
	return rc;
}

/* The log stored at revision r must end with entry e itself. */
static int check_log_at(struct vctx *v, struct opt_snap *snap, const json_t *e, long r)
{
	struct opt_source src = opt_snap_source(snap);
	json_t *last = NULL;
	const json_t *lr, *actions;
	char pre[64], hash[OPT_SHA256_HEX + 1];
	int rc;

	snprintf(pre, sizeof(pre), "log entry rev %ld", r);
	rc = opt_log_last(&src, v->hid, &last);
	if (rc < 0) {
		rc = wrap_last(as_integrity(rc), v->name, pre);
		goto done;
	}
	lr = json_object_get(last, "rev");
	if (!json_is_integer(lr) || json_integer_value(lr) != r) {
		rc = opt_error_set(OPT_EINTEGRITY, "%s: the log stored at revision %ld does not end with it", pre, r);
		goto done;
	}
	if ((rc = opt_log_entry_hash(last, hash)) < 0)
		goto done;
	if (strcmp(hash, json_string_value(json_object_get(e, "hash"))) != 0) {
		rc = opt_error_set(OPT_EINTEGRITY, "%s: the log stored at revision %ld holds another entry for it",
				   pre, r);
		goto done;
	}
	/* the actions may have been pruned since, never changed */
	actions = json_object_get(last, "actions");
	if (actions) {
		if ((rc = opt_json_hash(hash, actions)) < 0)
			goto done;
		if (strcmp(hash, json_string_value(json_object_get(e, "actionsHash"))) != 0) {
			rc = opt_error_set(OPT_EINTEGRITY, "%s: the log stored at revision %ld holds other actions for it",
					   pre, r);
			goto done;
		}
	}
done:
	json_decref(last);
	return rc;
}

/* The author's signature over entry e's hash, by a key the store trusts. */
static int check_signature(struct vctx *v, const json_t *e, const char *pre)
{
	const char *author = json_string_value(json_object_get(e, "author"));
	const char *sig = json_string_value(json_object_get(e, "sig"));
	const char *hash = json_string_value(json_object_get(e, "hash"));
	int rc;

	if (!author || !sig)
		return opt_error_set(OPT_EINTEGRITY, "%s: the entry is not signed", pre);
	if (opt_sig_verify(author, hash ? hash : "", sig) < 0) {
		char why[200];
		snprintf(why, sizeof(why), "%s", opt_error_last());
		return opt_error_set(OPT_EINTEGRITY, "%s: %s (the entry or its signature was altered)", pre, why);
	}
	if (!v->trusted) {
		json_t *arr = NULL;
		size_t i;
		if ((v->restricted = opt_trust_restricted(v->s)) < 0 || (rc = opt_trust_list(v->s, &arr)) < 0)
			return v->restricted < 0 ? v->restricted : rc;
		v->trusted = json_object();
		for (i = 0; i < json_array_size(arr); i++)
			json_object_set_new(v->trusted, json_string_value(json_object_get(json_array_get(arr, i), "key")),
					    json_true());
		json_decref(arr);
	}
	if (v->restricted && !json_object_get(v->trusted, author))
		return opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "%s: signed by key %s, which this store does "
							  "not trust (opt-log trust KEY)", pre, author), "untrusted");
	return 0;
}

/* Block id, which entry rev r deleted (h null): revision r must not hold
 * it. */
static int entry_deleted(struct vctx *v, struct opt_snap *snap, const char *id, long r, const char *pre)
{
	char oid[41];
	int rc = opt_snap_block_oid(snap, id, oid);

	if (rc == 0)
		return opt_error_set(OPT_EINTEGRITY, "%s: block '%.80s' was deleted, but revision %ld holds it", pre, id, r);
	if (rc != OPT_ENOTFOUND)
		return wrap_last(as_integrity(rc), v->name, pre);
	opt_error_clear();
	json_object_del(v->live, id);
	if (v->gone && json_object_set_new(v->gone, id, json_true()) < 0)
		return opt_error_oom();
	return 0;
}

/* Block id, which entry rev r wrote with hash h: revision r holds it
 * with that hash (unless the head's check reads it then), and it is
 * recorded as alive. */
static int entry_written(struct vctx *v, struct opt_snap *snap, const char *id, const json_t *h, long r,
			 const char *pre)
{
	json_t *rec;
	int rc;

	if (v->gone)
		json_object_del(v->gone, id);
	if (!json_is_string(h) || strlen(json_string_value(h)) != OPT_SHA256_HEX)
		return opt_error_set(OPT_EINTEGRITY, "%s: block '%.80s' has no valid hash", pre, id);
	if (!(v->defer && snap == v->head)) {
		/* (else read once, with the head's blocks: check_head) */
		rc = check_block(snap, id, strcmp(id, v->hid) == 0, json_string_value(h), pre);
		if (rc == OPT_ENOTFOUND)
			return opt_error_set(OPT_EINTEGRITY, "%s: block '%.80s' was written, but revision %ld does not hold it",
					     pre, id, r);
		if (rc < 0)
			return rc;
	}
	rec = json_pack("[I,O]", (json_int_t)r, h);
	if (!rec || json_object_set_new(v->live, id, rec) < 0)
		return opt_error_oom();
	return 0;
}

/* Check one entry (it passed the hash chain checks) against revision r. */
static int entry_cb(const json_t *e, void *arg)
{
	struct vctx *v = arg;
	struct opt_snap *snap = NULL;
	const json_t *h;
	const char *id, *trx;
	char pre[64], commit[COMMIT_HEX + 1];
	long r = (long)json_integer_value(json_object_get(e, "rev"));
	int rc = 0;

	snprintf(pre, sizeof(pre), "log entry rev %ld", r);
	if ((rc = check_signature(v, e, pre)) < 0)
		return rc;
	if (r > v->H)
		return opt_error_set(OPT_EINTEGRITY, "%s: the collection has no revision %ld (it is at revision %ld)",
				     pre, r, v->H);
	if (r == v->H) {
		snap = v->head;
	} else {
		memcpy(commit, v->commits[v->H - r], COMMIT_HEX);
		commit[COMMIT_HEX] = '\0';
		if ((rc = opt_snap_open_commit(&snap, v->s, v->name, commit)) < 0)
			return wrap_last(as_integrity(rc), v->name, pre);
	}
	trx = json_string_value(json_object_get(e, "trx"));
	if (strcmp(opt_snap_trx(snap), trx) != 0) {
		rc = opt_error_set(OPT_EINTEGRITY, "%s: transaction '%.80s', but the commit of revision %ld names '%.80s'",
				   pre, trx, r, opt_snap_trx(snap));
		goto done;
	}
	/* (the head's log is the one being read: e is its entry r) */
	if (snap != v->head && (rc = check_log_at(v, snap, e, r)) < 0)
		goto done;
	json_object_foreach(json_object_get(e, "blocks"), id, h) {
		rc = json_is_null(h) ? entry_deleted(v, snap, id, r, pre) : entry_written(v, snap, id, h, r, pre);
		if (rc < 0)
			goto done;
	}
	if (v->progress)
		v->progress(r, v->H, v->arg);
done:
	if (snap != v->head)
		opt_snap_free(snap);
	return rc;
}

/* The data blocks of the log at the head, as a set {id: true}. */
static int log_blocks(struct vctx *v, json_t *set)
{
	struct opt_source src = opt_snap_source(v->head);
	json_t *b = NULL;
	const char *tail;
	char cur[OPT_ID_MAX + 1] = "", pre[64];
	const json_t *next;
	int rc;

	snprintf(pre, sizeof(pre), "revision %ld", v->H);
	if ((rc = src.get(src.ctx, v->hid, &b)) < 0)
		return wrap_last(as_integrity(rc), v->name, pre);
	next = json_object_get(b, "headId");
	tail = json_string_value(json_object_get(b, "tailId"));
	if (json_is_string(next))
		snprintf(cur, sizeof(cur), "%s", json_string_value(next));
	if (!*cur && tail) {
		rc = opt_error_set(OPT_EINTEGRITY, "%s: the header has a log tail but no log head", pre);
		goto done;
	}
	tail = tail ? tail : "";
	while (*cur) {
		json_t *lb = NULL;
		if (json_object_get(set, cur)) {
			rc = opt_error_set(OPT_EINTEGRITY, "%s: the log has a cycle through block '%s'", pre, cur);
			goto done;
		}
		json_object_set_new(set, cur, json_true());
		if ((rc = src.get(src.ctx, cur, &lb)) < 0) {
			rc = wrap_last(as_integrity(rc), v->name, pre);
			goto done;
		}
		next = json_object_get(lb, "nextId");
		if (!json_is_string(next)) {
			json_decref(lb);
			break;
		}
		snprintf(cur, sizeof(cur), "%s", json_string_value(next));
		json_decref(lb);
	}
	if (strcmp(cur, tail) != 0)
		rc = opt_error_set(OPT_EINTEGRITY, "%s: the log ends at block '%s', but the header names '%s' as its tail",
				   pre, cur, tail);
done:
	json_decref(b);
	return rc;
}

struct head_ctx {
	struct vctx *v;
	json_t *logset;
	int failed;     /* head_cb set the message */
};

/* The stored bytes of a block at the head (the log's and the tree's,
 * read as text). */
static int head_bytes(void *ctx, const char *id, struct opt_bytes *out)
{
	int rc = opt_snap_block_bytes(ctx, id, out);

	if (rc == OPT_ENOTFOUND)
		opt_error_clear();
	return rc;
}

static int head_seen(void *arg, const char *id, const char *text, size_t len);

static int head_seen_cb(void *arg, const char *id, const char *text, size_t len)
{
	struct vctx *v = arg;
	int rc = head_seen(arg, id, text, len);

	if (rc < 0)
		v->seen_fail = 1;
	return rc;
}

/* A block that differs at the head from what entry r recorded: the
 * message names the head as the revision where it differs. */
static int head_fail(struct vctx *v, int rc, long r)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	if (r == v->H)
		return opt_error_set(rc, "%s", msg);
	return opt_error_set(rc, "%s (at revision %ld)", msg, v->H);
}

static int head_cb(const char *id, void *arg)
{
	struct head_ctx *hc = arg;
	struct vctx *v = hc->v;
	const json_t *rec = json_object_get(v->live, id);
	char pre[64];
	long r;
	int rc;

	if (!rec) {
		if (json_object_get(hc->logset, id))
			return 0;
		hc->failed = 1;
		return opt_error_set(OPT_EINTEGRITY, "revision %ld: block '%.80s' is in the collection, but no log entry wrote it",
				     v->H, id);
	}
	r = (long)json_integer_value(json_array_get(rec, 0));
	snprintf(pre, sizeof(pre), "log entry rev %ld", r);
	/* an entry of revision H was checked at H already (unless deferred
	 * to here); a block the tree's check read was checked then */
	if ((r < v->H || v->defer) && !(v->hashed && json_object_get(v->hashed, id))) {
		rc = check_block(v->head, id, strcmp(id, v->hid) == 0, json_string_value(json_array_get(rec, 1)), pre);
		if (rc == OPT_ENOTFOUND)
			rc = 0;  /* cannot be: foreach found it */
		if (rc < 0) {
			hc->failed = 1;
			return head_fail(v, rc, r);
		}
	}
	json_object_del(v->live, id);
	return 0;
}

/* The block text read at the head for the tree's check: it must be what
 * the last entry that wrote it recorded (check_block's judgement when
 * not, with its message). */
static int head_seen_hex(struct vctx *v, const char *id, const char *got);

static int head_seen(void *arg, const char *id, const char *text, size_t len)
{
	char got[OPT_SHA256_HEX + 1];

	opt_sha256_hex(got, text, len);
	return head_seen_hex(arg, id, got);
}

/* head_seen of a block whose bytes hash to got. */
static int head_seen_hex(struct vctx *v, const char *id, const char *got)
{
	const json_t *rec = json_object_get(v->live, id);
	char pre[64];
	long r;
	int rc;

	if (!rec) {
		if (json_object_get(v->logset, id))
			return 0;  /* (the tree's check says what it is doing there) */
		return opt_error_set(OPT_EINTEGRITY, "revision %ld: block '%.80s' is in the collection, but no log entry wrote it",
				     v->H, id);
	}
	r = (long)json_integer_value(json_array_get(rec, 0));
	if (strcmp(id, v->hid) != 0 && strcmp(got, json_string_value(json_array_get(rec, 1))) == 0)
		return json_object_set_new(v->hashed, id, json_true()) < 0 ? opt_error_oom() : 0;
	snprintf(pre, sizeof(pre), "log entry rev %ld", r);
	rc = check_block(v->head, id, strcmp(id, v->hid) == 0, json_string_value(json_array_get(rec, 1)), pre);
	if (rc == 0)
		return json_object_set_new(v->hashed, id, json_true()) < 0 ? opt_error_oom() : 0;
	return head_fail(v, rc == OPT_ENOTFOUND ? OPT_EINTEGRITY : rc, r);
}

/* Revision H holds exactly the blocks the log says it does. */
static int check_head(struct vctx *v)
{
	struct head_ctx hc = { v, json_object(), 0 };
	char pre[64];
	const char *id;
	json_t *rec;
	int rc;

	if (!hc.logset)
		return opt_error_oom();
	/* the log's blocks: as its check walked them (from the head block
	 * to the tail, links checked both ways), or walked here */
	if (v->logset)
		json_object_update(hc.logset, v->logset);
	else if ((rc = log_blocks(v, hc.logset)) < 0)
		goto done;
	rc = opt_snap_foreach(v->head, head_cb, &hc);
	if (rc < 0) {
		snprintf(pre, sizeof(pre), "revision %ld", v->H);
		if (!hc.failed)
			rc = wrap_last(as_integrity(rc), v->name, pre);
		goto done;
	}
	json_object_foreach(v->live, id, rec) {
		long r = (long)json_integer_value(json_array_get(rec, 0));
		if (r == v->H)
			rc = opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: block '%.80s' was written, but revision %ld does not hold it",
					   r, id, r);
		else
			rc = opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: block '%.80s' that it wrote is missing at revision %ld",
					   r, id, v->H);
		goto done;
	}
done:
	json_decref(hc.logset);
	return rc;
}

/* ---- the tree's check beside the log's ----
 *
 * A full verification of a tree reads two things of about the same size:
 * the log (a bulk load's entry holds every action) and the tree's nodes.
 * The nodes are checked in a thread of their own, on a store and a
 * snapshot of its own (libgit2 objects are not shared between threads),
 * noting the hash of every node it reads; the hashes are held to the
 * log's record afterwards, in the order the nodes were read, so the
 * outcome and its message are those of the check in one thread. */

struct seen_rec {
	char id[OPT_ID_MAX + 1];
	char hex[OPT_SHA256_HEX + 1];
};

struct tree_job {
	const char *path, *name, *hid;
	const char *qdir;       /* the store's quarantine, read too (or NULL) */
	char commit[COMMIT_HEX + 1];
	struct seen_rec *v;     /* the nodes read, in order */
	size_t n, cap;
	atomic_int stop;        /* the verification failed elsewhere: give up */
	int rc;                 /* the check's result; JOB_UNAVAILABLE: none */
	size_t count;
	char msg[1024];
	pthread_t th;
};

#define JOB_UNAVAILABLE 1000

static int job_bytes(void *ctx, const char *id, struct opt_bytes *out)
{
	return head_bytes(ctx, id, out);
}

static int job_seen(void *arg, const char *id, const char *text, size_t len)
{
	struct tree_job *j = arg;
	int rc;

	if (atomic_load(&j->stop))
		return opt_error_set(OPT_EIO, "stopped");
	if ((rc = OPT_ALLOC_GROW(j->v, j->n + 1, j->cap)) < 0)
		return rc;
	snprintf(j->v[j->n].id, sizeof(j->v[j->n].id), "%s", id);
	opt_sha256_hex(j->v[j->n].hex, text, len);
	j->n++;
	return 0;
}

static void *tree_job_run(void *arg)
{
	struct tree_job *j = arg;
	struct opt_store *s = NULL;
	struct opt_snap *snap = NULL;
	struct opt_source src;
	struct opt_btree_check_opts o = OPT_BTREE_CHECK_OPTS_INIT;

	j->rc = JOB_UNAVAILABLE;
	if (opt_store_open(&s, j->path) < 0 || (j->qdir && opt_store_quarantine_use(s, j->qdir) < 0) ||
	    opt_snap_open_commit(&snap, s, j->name, j->commit) < 0)
		goto done;
	src = opt_snap_source(snap);
	o.bytes = job_bytes;
	o.bctx = snap;
	o.seen = job_seen;
	o.sarg = j;
	j->rc = opt_btree_check(&src, j->hid, &o, &j->count);
	if (j->rc < 0)
		snprintf(j->msg, sizeof(j->msg), "%s", opt_error_last());
done:
	opt_snap_free(snap);
	opt_store_free(s);
	return NULL;
}

/* Start the tree's check of v beside the log's (0: not started). */
static int tree_job_start(struct vctx *v, struct tree_job *j)
{
	json_t *h = NULL;
	const char *type;
	int tree;

	memset(j, 0, sizeof(*j));
	if (opt_coll_header(v->head, &h) < 0) {
		opt_error_clear();
		return 0;
	}
	type = opt_block_type(h);
	tree = type && strcmp(type, OPT_TYPE_TREE) == 0;
	json_decref(h);
	/* a libgit2 built without threads is not safe to use from two at
	 * once: then the tree is checked after the log, in this thread */
	if (!tree || !(git_libgit2_features() & GIT_FEATURE_THREADS))
		return 0;
	j->path = opt_store_path(v->s);
	j->qdir = opt_store_quarantine_dir(v->s);
	j->name = v->name;
	j->hid = v->hid;
	snprintf(j->commit, sizeof(j->commit), "%s", opt_snap_commit(v->head));
	atomic_init(&j->stop, 0);
	return pthread_create(&j->th, NULL, tree_job_run, j) == 0;
}

/* Wait for the job; 0 and v->tree_rc as check_tree leaves it, or the
 * failure of a node's hash (check_head's kind), or JOB_UNAVAILABLE when
 * the job could not check (check_tree must). */
static int tree_job_finish(struct vctx *v, struct tree_job *j, int give_up)
{
	size_t i;
	int rc = 0;

	if (give_up)
		atomic_store(&j->stop, 1);
	pthread_join(j->th, NULL);
	if (give_up || j->rc == JOB_UNAVAILABLE) {
		rc = give_up ? 0 : JOB_UNAVAILABLE;
		goto done;
	}
	for (i = 0; i < j->n; i++)
		if ((rc = head_seen_hex(v, j->v[i].id, j->v[i].hex)) < 0)
			goto done;
	if (j->rc == 1) {
		rc = JOB_UNAVAILABLE;  /* (cannot be: the check settles it) */
	} else if (j->rc < 0) {
		char pre[64];
		opt_error_set(j->rc, "%s", j->msg);
		snprintf(pre, sizeof(pre), "revision %ld", v->H);
		v->tree_rc = wrap_last(as_integrity(j->rc), v->name, pre);
		snprintf(v->tree_msg, sizeof(v->tree_msg), "%s", opt_error_last());
		opt_error_clear();
	} else {
		v->tree_rc = 1;
		v->tree_n = j->count;
	}
done:
	free(j->v);
	j->v = NULL;
	return rc;
}

/* A tree's structure, checked on the text of its nodes, each read once:
 * its hash is checked as it is read (head_seen), which spares
 * check_head reading it again.  A failure of the structure itself waits
 * (tree_rc) until check_head had its say, as when the two came apart. */
static int check_tree(struct vctx *v)
{
	struct opt_source src = opt_snap_source(v->head);
	json_t *h = NULL;
	const char *type;
	int rc;

	v->tree_rc = 0;
	if (opt_coll_header(v->head, &h) < 0) {
		opt_error_clear();
		return 0;  /* (check_data says so) */
	}
	type = opt_block_type(h);
	if (type && strcmp(type, OPT_TYPE_TREE) == 0) {
		struct opt_btree_check_opts o = OPT_BTREE_CHECK_OPTS_INIT;
		o.bytes = head_bytes;
		o.bctx = v->head;
		o.seen = head_seen_cb;
		o.sarg = v;
		v->seen_fail = 0;
		rc = opt_btree_check(&src, v->hid, &o, &v->tree_n);
		if (rc < 0 && v->seen_fail) {
			json_decref(h);
			return rc;  /* a block's hash: check_head's kind of failure */
		}
		if (rc < 0) {
			char pre[64];
			snprintf(pre, sizeof(pre), "revision %ld", v->H);
			rc = wrap_last(as_integrity(rc), v->name, pre);
			snprintf(v->tree_msg, sizeof(v->tree_msg), "%s", opt_error_last());
			v->tree_rc = rc;
			opt_error_clear();
		} else {
			v->tree_rc = 1;
		}
	}
	json_decref(h);
	return 0;
}

/* The data structure of the collection at the head. */
static int check_data(struct vctx *v)
{
	struct opt_source src = opt_snap_source(v->head);
	json_t *h = NULL;
	const char *type;
	char pre[64], cid[OPT_ID_MAX + 1];
	size_t n = 0;
	json_int_t want;
	int rc;

	snprintf(pre, sizeof(pre), "revision %ld", v->H);
	if ((rc = opt_coll_header(v->head, &h)) < 0)
		return wrap_last(as_integrity(rc), v->name, pre);
	type = opt_block_type(h);
	want = json_integer_value(json_object_get(h, "count"));
	if (type && strcmp(type, OPT_TYPE_TREE) == 0) {
		if (v->tree_rc < 0) {
			rc = opt_error_set(v->tree_rc, "%s", v->tree_msg);
			goto done;
		}
		if (v->tree_rc == 1) {
			n = v->tree_n;
		} else if ((rc = opt_btree_check(&src, v->hid, NULL, &n)) < 0) {
			rc = wrap_last(as_integrity(rc), v->name, pre);
			goto done;
		}
	} else if (type && strcmp(type, OPT_TYPE_DIARY) == 0) {
		if ((rc = opt_diary_chain(v->head, cid)) < 0 || (rc = opt_chain_count(&src, cid, &n)) < 0) {
			rc = wrap_last(as_integrity(rc), v->name, pre);
			goto done;
		}
	} else {
		goto done;
	}
	if ((json_int_t)n != want)
		rc = opt_error_set(OPT_EINTEGRITY, "%s: the header counts %lld entries, but the %s holds %zu",
				   pre, (long long)want, opt_type_name(type), n);
done:
	json_decref(h);
	return rc;
}

/* Fill in v for collection name at commit (NULL: its ref). */
static int open_head(struct vctx *v, struct opt_store *s, const char *name, const char *commit,
		     opt_verify_progress_fn progress, void *arg)
{
	int rc;

	if ((rc = opt_store_name_check(name)) < 0)
		return rc;
	v->s = s;
	v->name = name;
	v->progress = progress;
	v->arg = arg;
	opt_collection_header_id(name, v->hid);
	rc = commit ? opt_snap_open_commit(&v->head, s, name, commit) : opt_snap_head(&v->head, s, name);
	if (rc == OPT_ENOTFOUND || rc == OPT_EINVAL)
		return rc;
	if (rc < 0)
		return wrap_last(as_integrity(rc), name, "the head commit");
	return 0;
}

int opt_verify_collection(struct opt_store *s, const char *name, const char *commit,
			  opt_verify_progress_fn progress, void *arg, struct opt_verify_result *res)
{
	struct vctx v;
	struct opt_source src;
	struct opt_log_verify_opts o = OPT_LOG_VERIFY_OPTS_INIT;
	struct tree_job tj;
	long entries = 0;
	int rc, job = 0;

	memset(&v, 0, sizeof(v));
	if (res)
		memset(res, 0, sizeof(*res));
	if ((rc = open_head(&v, s, name, commit, progress, arg)) < 0)
		return rc;
	v.H = opt_snap_rev(v.head);
	if (res)
		res->rev = v.H;
	v.defer = 1;
	if (!(v.live = json_object()) || !(v.hashed = json_object())) {
		rc = opt_error_oom();
		goto done;
	}
	/* the tree's nodes are checked beside the log */
	job = tree_job_start(&v, &tj);
	if ((rc = walk_history(&v)) < 0 || (rc = check_shapes(&v)) < 0)
		goto done;
	src = opt_snap_source(v.head);
	if (!(v.logset = json_object())) {
		rc = opt_error_oom();
		goto done;
	}
	o.cb = entry_cb;
	o.arg = &v;
	o.bytes = head_bytes;
	o.bctx = v.head;
	o.visited = v.logset;
	rc = opt_log_verify(&src, v.hid, &o, &entries);
	if (rc == OPT_ENOTFOUND) {
		rc = opt_error_set(OPT_EINTEGRITY, "revision %ld: the collection has no header block", v.H);
		goto done;
	}
	if (rc < 0) {
		char pre[64];
		snprintf(pre, sizeof(pre), "log entry rev %ld", entries + 1);
		rc = wrap_last(rc, name, pre);
		goto done;
	}
	if (entries < v.H) {
		rc = opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: missing (the log ends at rev %ld, the collection is at revision %ld)",
				   entries + 1, entries, v.H);
		goto done;
	}
	if (job) {
		job = 0;
		rc = tree_job_finish(&v, &tj, 0);
		if (rc == JOB_UNAVAILABLE)
			rc = check_tree(&v);
	} else {
		rc = check_tree(&v);
	}
	if (rc < 0 || (rc = check_head(&v)) < 0)
		goto done;
	rc = check_data(&v);
done:
	if (job)
		tree_job_finish(&v, &tj, 1);
	if (res)
		res->entries = entries;
	json_decref(v.hashed);
	json_decref(v.live);
	json_decref(v.logset);
	json_decref(v.trusted);
	free(v.commits);
	opt_snap_free(v.head);
	return tampered_unless(rc);
}

/* ---- since a verified base ---- */

struct diff_ctx {
	struct vctx *v;
	struct opt_snap *base;
	json_t *changed;        /* {id: "A"/"D"/"M"} */
	int full;               /* something only a full verification can judge */
};

static int diff_cb(const char *id, char change, void *arg)
{
	struct diff_ctx *d = arg;
	char c[2] = { change, 0 };

	return json_object_set_new(d->changed, id, json_string(c)) < 0 ? opt_error_oom() : 0;
}

/* The header's hash without its log links at snap into out. */
static int header_hash(struct vctx *v, struct opt_snap *snap, char out[OPT_SHA256_HEX + 1])
{
	char *raw = NULL;
	size_t len = 0;
	json_t *b = NULL;
	int rc;

	if ((rc = opt_snap_block_raw(snap, v->hid, &raw, &len)) < 0)
		return as_integrity(rc);
	if ((rc = opt_json_parse(&b, raw, len)) == 0)
		rc = opt_txn_block_hash(b, 1, out);
	json_decref(b);
	free(raw);
	return rc < 0 ? as_integrity(rc) : 0;
}

/* The head holds what the new entries wrote, and every block that changed
 * since the base was written by one of them (or is the log's). */
static int check_head_since(struct vctx *v, struct diff_ctx *d, const json_t *logset)
{
	const char *id;
	json_t *rec;
	char pre[64], oid[41], a[OPT_SHA256_HEX + 1], b[OPT_SHA256_HEX + 1];
	int rc;

	json_object_foreach(v->live, id, rec) {
		long r = (long)json_integer_value(json_array_get(rec, 0));
		if (r == v->H)
			continue;  /* checked at H already */
		snprintf(pre, sizeof(pre), "log entry rev %ld", r);
		rc = check_block(v->head, id, strcmp(id, v->hid) == 0, json_string_value(json_array_get(rec, 1)), pre);
		if (rc == OPT_ENOTFOUND)
			return opt_error_set(OPT_EINTEGRITY, "%s: block '%.80s' that it wrote is missing at revision %ld", pre,
					     id, v->H);
		if (rc < 0) {
			char msg[1024];
			snprintf(msg, sizeof(msg), "%s", opt_error_last());
			return opt_error_set(rc, "%s (at revision %ld)", msg, v->H);
		}
	}
	json_object_foreach(v->gone, id, rec) {
		rc = opt_snap_block_oid(v->head, id, oid);
		if (rc == 0)
			return opt_error_set(OPT_EINTEGRITY, "revision %ld: block '%.80s' was deleted, but it is there", v->H,
					     id);
		if (rc != OPT_ENOTFOUND)
			return wrap_last(as_integrity(rc), v->name, "revision");
		opt_error_clear();
	}
	json_object_foreach(d->changed, id, rec) {
		const char *c = json_string_value(rec);
		if (json_object_get(v->live, id) || json_object_get(v->gone, id))
			continue;
		if (strcmp(id, v->hid) == 0 && *c == 'M') {
			/* the log's links moved; the rest must be as before */
			if ((rc = header_hash(v, d->base, a)) < 0 || (rc = header_hash(v, v->head, b)) < 0)
				return wrap_last(rc, v->name, "the header");
			if (strcmp(a, b) == 0)
				continue;
		} else if (*c != 'D' && json_object_get(logset, id)) {
			continue;  /* a log block: its entries were read */
		} else if (*c == 'D') {
			d->full = 1;  /* a block dropped without an entry: judge all */
			return 0;
		}
		return opt_error_set(OPT_EINTEGRITY, "revision %ld: block '%.80s' does not match the hash the log recorded "
				     "for it (it changed, but no new log entry wrote it)", v->H, id);
	}
	return 0;
}

/* The data structure at the head: a tree from the base's by its changed
 * blocks; a diary's chain in full. */
static int check_data_since(struct vctx *v, struct diff_ctx *d)
{
	struct opt_source src = opt_snap_source(v->head), bsrc = opt_snap_source(d->base);
	struct opt_btree_check_opts o = OPT_BTREE_CHECK_OPTS_INIT;
	json_t *h = NULL, *bh = NULL;
	const char *type;
	char pre[64];
	size_t n = 0;
	int rc;

	snprintf(pre, sizeof(pre), "revision %ld", v->H);
	if ((rc = opt_coll_header(v->head, &h)) < 0)
		return wrap_last(as_integrity(rc), v->name, pre);
	type = opt_block_type(h);
	if (!type || strcmp(type, OPT_TYPE_TREE) != 0 || opt_coll_header(d->base, &bh) < 0 ||
	    !opt_block_type(bh) || strcmp(opt_block_type(bh), OPT_TYPE_TREE) != 0) {
		opt_error_clear();
		json_decref(h);
		json_decref(bh);
		return check_data(v);
	}
	o.bytes = head_bytes;
	o.bctx = v->head;
	o.base = &bsrc;
	o.changed = d->changed;
	o.base_count = (size_t)json_integer_value(json_object_get(bh, "count"));
	rc = opt_btree_check(&src, v->hid, &o, &n);
	if (rc < 0)
		rc = wrap_last(as_integrity(rc), v->name, pre);
	else if ((json_int_t)n != json_integer_value(json_object_get(h, "count")))
		rc = opt_error_set(OPT_EINTEGRITY, "%s: the header counts %lld entries, but the tree holds %zu", pre,
				   (long long)json_integer_value(json_object_get(h, "count")), n);
	json_decref(h);
	json_decref(bh);
	return rc;
}

/* The history from the head down to the base, whose commit it must
 * reach, the shape of each new revision, and what changed since the base
 * (into d->changed). */
static int since_history(struct vctx *v, struct diff_ctx *d)
{
	int rc;

	if ((rc = walk_history(v)) < 0)
		return rc;
	/* (walk_history kept the commit of revision B last) */
	if (strncmp(v->commits[v->ncommits - 1], opt_snap_commit(d->base), COMMIT_HEX) != 0)
		return opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "revision %ld: not the commit verified before "
							  "(the history was rewritten)", v->B), "rewound");
	if ((rc = check_shapes(v)) < 0)
		return rc;
	d->v = v;
	if ((rc = opt_snap_diff(d->base, v->head, diff_cb, d)) < 0)
		return wrap_last(as_integrity(rc), v->name, "revision");
	return 0;
}

/* The new entries of the log, chained to the base's last, each checked
 * by entry_cb; logset gets the log's blocks read, *entries the new
 * entries that checked out. */
static int since_log(struct vctx *v, struct diff_ctx *d, json_t *logset, long *entries)
{
	struct opt_source src = opt_snap_source(v->head), bsrc = opt_snap_source(d->base);
	struct opt_log_verify_opts o = OPT_LOG_VERIFY_OPTS_INIT;
	json_t *last = NULL;
	const char *bhash;
	int rc;

	/* the base's last entry, as its header notes it (checked then) */
	if ((rc = bsrc.get(bsrc.ctx, v->hid, &last)) < 0 || json_integer_value(json_object_get(last, "logRev")) != v->B ||
	    !(bhash = json_string_value(json_object_get(last, "logHash")))) {
		json_decref(last);
		last = NULL;
		if ((rc = opt_log_last(&bsrc, v->hid, &last)) < 0 || !(bhash = json_string_value(json_object_get(last, "hash")))) {
			rc = opt_error_set(OPT_EINTEGRITY, "the base revision %ld has no log entry", v->B);
			goto done;
		}
	}
	o.cb = entry_cb;
	o.arg = v;
	o.bytes = head_bytes;
	o.bctx = v->head;
	o.visited = logset;
	o.base = &bsrc;
	o.after = v->B;
	o.after_hash = bhash;
	o.recheck = d->changed;
	rc = opt_log_verify(&src, v->hid, &o, entries);
	if (rc < 0) {
		char pre[64];
		snprintf(pre, sizeof(pre), "log entry rev %ld", v->B + *entries + 1);
		rc = wrap_last(rc, v->name, pre);
	} else if (v->B + *entries < v->H) {
		rc = opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: missing (the log ends at rev %ld, the collection is at revision %ld)",
				   v->B + *entries + 1, v->B + *entries, v->H);
	}
done:
	json_decref(last);
	return rc;
}

int opt_verify_collection_since(struct opt_store *s, const char *name, const char *commit, const char *base,
				opt_verify_progress_fn progress, void *arg, struct opt_verify_result *res)
{
	struct vctx v;
	struct diff_ctx d;
	json_t *logset = NULL;
	long entries = 0;
	int rc;

	if (!base)
		return opt_verify_collection(s, name, commit, progress, arg, res);
	memset(&v, 0, sizeof(v));
	memset(&d, 0, sizeof(d));
	if (res)
		memset(res, 0, sizeof(*res));
	if ((rc = open_head(&v, s, name, commit, progress, arg)) < 0)
		return rc;
	if ((rc = opt_snap_open_commit(&d.base, s, name, base)) < 0) {
		rc = rc == OPT_EINVAL ? rc : wrap_last(as_integrity(rc), name, "the base commit");
		goto done;
	}
	v.H = opt_snap_rev(v.head);
	v.B = opt_snap_rev(d.base);
	if (res)
		res->rev = v.H;
	if (v.B < 1 || v.B > v.H) {
		rc = opt_error_set_reason(opt_error_set(OPT_EINTEGRITY, "revision %ld does not descend from revision %ld "
							"verified before", v.H, v.B), "rewound");
		goto done;
	}
	if (!(v.live = json_object()) || !(v.gone = json_object()) || !(d.changed = json_object()) ||
	    !(logset = json_object())) {
		rc = opt_error_oom();
		goto done;
	}
	/* the history down to the base and what changed, then the new
	 * entries chained to the base's last */
	if ((rc = since_history(&v, &d)) < 0 || (rc = since_log(&v, &d, logset, &entries)) < 0)
		goto done;
	if ((rc = check_head_since(&v, &d, logset)) < 0)
		goto done;
	if (d.full) {
		rc = opt_verify_collection(s, name, commit, progress, arg, res);
		goto out;
	}
	rc = check_data_since(&v, &d);
done:
	if (res)
		res->entries = v.B + entries;
out:
	json_decref(logset);
	json_decref(d.changed);
	opt_snap_free(d.base);
	json_decref(v.live);
	json_decref(v.gone);
	json_decref(v.trusted);
	free(v.commits);
	opt_snap_free(v.head);
	return tampered_unless(rc);
}
