#include "log.h"
#include "chain.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_hash(const char *s)
{
	size_t i;

	if (!s || strlen(s) != OPT_SHA256_HEX)
		return 0;
	for (i = 0; i < OPT_SHA256_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* Check the caller's fields for an entry. */
static int check_fields(const json_t *f)
{
	static const char *const computed[] = { "actionsHash", "prior", "hash" };
	const json_t *blocks, *colls, *v;
	const char *id;
	size_t i;

	if (!json_is_object(f))
		return opt_error_set(OPT_EINVAL, "log entry fields must be a JSON object");
	for (i = 0; i < sizeof(computed) / sizeof(*computed); i++)
		if (json_object_get(f, computed[i]))
			return opt_error_set(OPT_EINVAL, "log entry member \"%s\" is computed by the log",
					     computed[i]);
	v = json_object_get(f, "trx");
	if (!json_is_string(v) || !opt_id_valid(json_string_value(v)))
		return opt_error_set(OPT_EINVAL, "log entry needs a \"trx\" transaction ID");
	if (!json_is_array(json_object_get(f, "actions")))
		return opt_error_set(OPT_EINVAL, "log entry needs an \"actions\" array");
	blocks = json_object_get(f, "blocks");
	if (!json_is_object(blocks))
		return opt_error_set(OPT_EINVAL, "log entry needs a \"blocks\" object {id: hash or null}");
	json_object_foreach((json_t *)blocks, id, v) {
		if (!opt_id_valid(id))
			return opt_error_set(OPT_EINVAL, "log entry \"blocks\": invalid block ID '%s'", opt_esc(id));
		if (!json_is_null(v) && !(json_is_string(v) && is_hash(json_string_value(v))))
			return opt_error_set(OPT_EINVAL, "log entry \"blocks\": block '%s' needs a SHA-256 hex hash or null",
					     id);
	}
	colls = json_object_get(f, "collections");
	if (colls) {
		if (!json_is_array(colls))
			return opt_error_set(OPT_EINVAL, "log entry \"collections\" must be an array of names");
		for (i = 0; i < json_array_size(colls); i++)
			if (!json_is_string(json_array_get(colls, i)))
				return opt_error_set(OPT_EINVAL, "log entry \"collections\" must be an array of names");
	}
	v = json_object_get(f, "time");
	if (v && !json_is_integer(v))
		return opt_error_set(OPT_EINVAL, "log entry \"time\" must be an integer (milliseconds)");
	v = json_object_get(f, "rev");
	if (v && !json_is_integer(v))
		return opt_error_set(OPT_EINVAL, "log entry \"rev\" must be an integer");
	return 0;
}

int opt_log_entry_hash(const json_t *entry, char out[65])
{
	json_t *copy;
	int rc;

	out[0] = '\0';
	if (!json_is_object(entry))
		return opt_error_set(OPT_EINVAL, "a log entry must be a JSON object");
	copy = json_copy((json_t *)entry);  /* shallow: members are shared, not changed */
	OPT_CHECK_ALLOC(copy);
	json_object_del(copy, "hash");
	json_object_del(copy, "sig");
	json_object_del(copy, "actions");
	rc = opt_json_hash(out, copy);
	json_decref(copy);
	return rc;
}

int opt_log_last(const struct opt_source *src, const char *header_id, json_t **entry)
{
	int rc;

	*entry = NULL;
	rc = opt_chain_has(src, header_id);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return opt_error_set(OPT_ENOTFOUND, "the log of '%.80s' is empty", header_id);
	rc = opt_chain_last(src, header_id, entry);
	if (rc == OPT_ENOTFOUND)
		return opt_error_set(OPT_ENOTFOUND, "the log of '%.80s' is empty", header_id);
	return rc;
}

/* The rev and hash of the newest entry: 1 and both, 0 when the log is
 * empty, OPT_EINTEGRITY when the entry is malformed. */
static int last_rev_hash(const struct opt_source *src, const char *header_id, long *rev,
			 char hash[65])
{
	json_t *last = NULL;
	const json_t *r, *h;
	int rc = opt_log_last(src, header_id, &last);

	*rev = 0;
	hash[0] = '\0';
	if (rc == OPT_ENOTFOUND) {
		/* an empty log, or no header: tell them apart */
		rc = opt_chain_has(src, header_id);
		return rc < 0 ? rc : 0;
	}
	if (rc < 0)
		return rc;
	r = json_object_get(last, "rev");
	h = json_object_get(last, "hash");
	if (!json_is_integer(r) || json_integer_value(r) < 1 || json_integer_value(r) >= LONG_MAX ||
	    !json_is_string(h) || !is_hash(json_string_value(h))) {
		rc = opt_error_set(OPT_EINTEGRITY, "the last entry of the log of '%.80s' has no valid \"rev\" and \"hash\"",
				   header_id);
		goto done;
	}
	*rev = (long)json_integer_value(r);
	memcpy(hash, json_string_value(h), OPT_SHA256_HEX + 1);
	rc = 1;
done:
	json_decref(last);
	return rc;
}

int opt_log_rev(const struct opt_source *src, const char *header_id, long *rev)
{
	char hash[65];
	int rc = last_rev_hash(src, header_id, rev, hash);

	return rc < 0 ? rc : 0;
}

/* Set member key of obj (stealing v). */
static int set_new(json_t *obj, const char *key, json_t *v)
{
	if (!v || json_object_set_new(obj, key, v) < 0)
		return opt_error_oom();
	return 0;
}

int opt_log_append(struct opt_tracker *t, const char *header_id, const json_t *fields, json_t **out)
{
	return opt_log_append_signed(t, header_id, fields, NULL, NULL, out);
}

/* The entry with actions as text is stored with a placeholder for them
 * (a one-string array naming a random marker), then its block is written
 * again as text with the actions' text in the placeholder's place. */
static int splice_actions(struct opt_tracker *t, const char *header_id, const char *marker,
			  const struct opt_log_actions_text *at, int big)
{
	const json_t *h, *b;
	const char *id;
	char bid[OPT_ID_MAX + 1], *s = NULL, *out = NULL, *hit = NULL, pat[80];
	size_t n = 0, pl, i;
	int rc;

	if ((rc = opt_tracker_get(t, header_id, &h)) < 0)
		return rc;
	id = json_string_value(json_object_get(h, "tailId"));
	if (!id || (rc = opt_tracker_get(t, id, &b)) < 0)
		return rc < 0 ? rc : opt_error_set(OPT_EINTEGRITY, "the log of '%.80s' has no tail", header_id);
	if (big) {
		id = json_string_value(json_object_get(b, "priorId"));
		if (!id || (rc = opt_tracker_get(t, id, &b)) < 0)
			return rc < 0 ? rc : opt_error_set(OPT_EINTEGRITY, "a sealed log entry has no block");
	}
	snprintf(bid, sizeof(bid), "%s", id);
	if ((rc = opt_json_canon(&s, &n, b)) < 0)
		return rc;
	pl = (size_t)snprintf(pat, sizeof(pat), "[\"%s\"]", marker);
	for (i = 0; i + pl <= n; i++)
		if (s[i] == '[' && memcmp(s + i, pat, pl) == 0) {
			hit = s + i;
			break;
		}
	if (!hit) {
		free(s);
		return opt_error_set(OPT_EINTEGRITY, "a log entry's actions placeholder is lost");
	}
	if (!(out = malloc(n - pl + at->len + 1))) {
		free(s);
		return opt_error_oom();
	}
	i = (size_t)(hit - s);
	memcpy(out, s, i);
	memcpy(out + i, at->text, at->len);
	memcpy(out + i + at->len, hit + pl, n - i - pl);
	out[n - pl + at->len] = '\0';
	free(s);
	return opt_tracker_insert_text(t, bid, OPT_LOG_DATA_TYPE, out, n - pl + at->len);
}

static int append(struct opt_tracker *t, const char *header_id, const json_t *fields,
		  const struct opt_log_actions_text *at,
		  int (*sign)(void *ctx, const char *hash, char sig[129]), void *ctx, json_t **out);

int opt_log_append_signed(struct opt_tracker *t, const char *header_id, const json_t *fields,
			  int (*sign)(void *ctx, const char *hash, char sig[129]), void *ctx, json_t **out)
{
	return append(t, header_id, fields, NULL, sign, ctx, out);
}

int opt_log_append_text(struct opt_tracker *t, const char *header_id, const json_t *fields,
			const struct opt_log_actions_text *at,
			int (*sign)(void *ctx, const char *hash, char sig[129]), void *ctx)
{
	return append(t, header_id, fields, at, sign, ctx, NULL);
}

/* The log's tail as append needs it: the chain made when the header has
 * none, the last revision and hash into *rev and prior, and whether the
 * tail entry is a big one of the old kind (*last_big). */
static int log_tail(struct opt_tracker *t, const char *header_id, long *rev, char prior[65], int *last_big)
{
	struct opt_source src = opt_tracker_source(t);
	const json_t *h;
	json_int_t lr;
	int rc;

	if ((rc = opt_chain_has(&src, header_id)) < 0)
		return rc;
	if (rc == 0 && (rc = opt_chain_create(t, header_id, NULL, OPT_LOG_DATA_TYPE)) < 0)
		return rc;
	/* the header keeps the last rev and hash (logRev, logHash): no need
	 * to read the tail block, which may hold a big entry */
	if (opt_tracker_get(t, header_id, &h) != 0 || !json_is_integer(json_object_get(h, "logRev")) ||
	    !json_is_string(json_object_get(h, "logHash")) ||
	    !is_hash(json_string_value(json_object_get(h, "logHash"))))
		return last_rev_hash(&src, header_id, rev, prior);
	lr = json_integer_value(json_object_get(h, "logRev"));
	if (lr < 0 || lr >= LONG_MAX - 1)
		return opt_error_set(OPT_EINTEGRITY, "the header of '%.80s' has an impossible logRev", header_id);
	*rev = (long)lr;
	memcpy(prior, json_string_value(json_object_get(h, "logHash")), OPT_SHA256_HEX + 1);
	*last_big = json_is_true(json_object_get(h, "logBig"));
	return 0;
}

/* Hash the actions of entry into hash: their text at (for which a marker
 * stands in the entry), or as they will be stored. */
static int hash_actions(json_t *entry, const struct opt_log_actions_text *at, char *marker, size_t mlen,
			char hash[65])
{
	char *text;
	size_t n;
	int rc;

	if (at) {
		/* the actions' text stands for them: hashed as it is */
		char rnd[OPT_ID_LEN + 1];
		opt_id_new(rnd);
		snprintf(marker, mlen, "opt-actions-%s", rnd);
		if ((rc = set_new(entry, "actions", json_pack("[s]", marker))) < 0)
			return rc;
		opt_sha256_hex(hash, at->text, at->len);
		return 0;
	}
	/* serialized where they will be stored: an entry its block could not
	 * hold readably is refused here */
	if ((rc = opt_json_canon_at(&text, &n, json_object_get(entry, "actions"), OPT_LOG_ACTIONS_ABOVE,
				    "the log entry")) < 0)
		return rc;
	opt_sha256_hex(hash, text, n);
	free(text);
	return 0;
}

/* Make the entry of revision rev from fields: its time, the hash of its
 * actions, the prior hash, its own hash (into hash) and signature. */
static int build_entry(json_t *entry, long rev, const char *prior, const struct opt_log_actions_text *at,
		       char *marker, size_t mlen, int (*sign)(void *ctx, const char *hash, char sig[129]),
		       void *ctx, char hash[65])
{
	char sig[129];
	int rc;

	if ((rc = set_new(entry, "rev", json_integer(rev))) < 0)
		return rc;
	if (!json_object_get(entry, "time") && (rc = set_new(entry, "time", json_integer(opt_now_ms()))) < 0)
		return rc;
	if ((rc = hash_actions(entry, at, marker, mlen, hash)) < 0)
		return rc;
	if ((rc = set_new(entry, "actionsHash", json_string(hash))) < 0 ||
	    (rc = set_new(entry, "prior", json_string(prior))) < 0)
		return rc;
	if ((rc = opt_log_entry_hash(entry, hash)) < 0 || (rc = set_new(entry, "hash", json_string(hash))) < 0)
		return rc;
	if (sign && ((rc = sign(ctx, hash, sig)) < 0 || (rc = set_new(entry, "sig", json_string(sig))) < 0))
		return rc;
	return 0;
}

/* Add entry to the chain.  An entry with many actions gets a block of
 * its own, sealed by an empty block after it that takes the next
 * entries: a big entry is never read or rewritten by later appends.
 * (Stores written before the seal have a big entry as the tail, logBig:
 * the next entry starts a block of its own.) */
static int store_entry(struct opt_tracker *t, const char *header_id, json_t *entry,
		       const struct opt_log_actions_text *at, const char *marker, int last_big)
{
	json_t *one = json_array();
	int rc, big;

	if (!one || json_array_append(one, entry) < 0) {
		json_decref(one);
		return opt_error_oom();
	}
	big = (at ? at->n : json_array_size(json_object_get(entry, "actions"))) > OPT_LOG_BIG_ACTIONS;
	if (big)
		rc = opt_chain_add_sealed(t, header_id, one);
	else
		rc = (last_big ? opt_chain_add_new_block : opt_chain_add)(t, header_id, one);
	if (rc == 0 && at)
		rc = splice_actions(t, header_id, marker, at, big);
	json_decref(one);
	return rc;
}

/* Note the new tail in the header: logRev, logHash, and logBig (0: the
 * tail is a sealing empty block or an ordinary one now). */
static int note_tail(struct opt_tracker *t, const char *header_id, long rev, const char *hash)
{
	json_t *op = json_pack("[s,i,i,I]", "logRev", 0, 0, (json_int_t)rev);
	int rc = 0;

	if (op && (rc = opt_tracker_update(t, header_id, op)) == 0) {
		json_decref(op);
		op = json_pack("[s,i,i,s]", "logHash", 0, 0, hash);
		if (op)
			rc = opt_tracker_update(t, header_id, op);
	}
	json_decref(op);
	if (rc == 0) {
		op = json_pack("[s,i,i,b]", "logBig", 0, 0, 0);
		rc = op ? opt_tracker_update(t, header_id, op) : OPT_EIO;
		json_decref(op);
	}
	return rc;
}

static int append(struct opt_tracker *t, const char *header_id, const json_t *fields,
		  const struct opt_log_actions_text *at,
		  int (*sign)(void *ctx, const char *hash, char sig[129]), void *ctx, json_t **out)
{
	char marker[OPT_ID_LEN + 16];
	json_t *entry = NULL;
	const json_t *given;
	char prior[65], hash[65];
	long rev;
	size_t tok;
	int rc, last_big = 0;

	if (out)
		*out = NULL;
	if ((rc = check_fields(fields)) < 0)
		return rc;
	opt_tracker_mark(t, &tok);
	if ((rc = log_tail(t, header_id, &rev, prior, &last_big)) < 0)
		goto done;
	rev++;
	given = json_object_get(fields, "rev");
	if (given && json_integer_value(given) != rev) {
		rc = opt_error_set(OPT_ECONFLICT, "the log of '%.80s' is at rev %ld: cannot append rev %lld",
				   header_id, rev - 1, (long long)json_integer_value(given));
		goto done;
	}
	entry = json_copy((json_t *)fields);  /* shallow: members are shared, never changed */
	if (!entry) {
		rc = opt_error_oom();
		goto done;
	}
	if ((rc = build_entry(entry, rev, prior, at, marker, sizeof(marker), sign, ctx, hash)) < 0 ||
	    (rc = store_entry(t, header_id, entry, at, marker, last_big)) < 0 ||
	    (rc = note_tail(t, header_id, rev, hash)) < 0)
		goto done;
	if (out) {
		*out = entry;
		entry = NULL;
	}
done:
	if (rc < 0)
		opt_tracker_rollback(t, tok);
	else
		opt_tracker_release(t, tok);
	json_decref(entry);
	return rc < 0 ? rc : 0;
}

/* Check one entry against the expected rev and the previous hash; on
 * success copy its hash to hash. */
/* Where known is 1, the entry's actions were left out of e and hashed on
 * their text to known_hash; 0: it had none; -1: e is the whole entry. */
static int check_entry_known(const json_t *e, long expect, const char *prev, char hash[65], int known,
			     const char *known_hash)
{
	const json_t *r, *h, *p, *ah, *actions;
	char got[65], mine[65];
	int rc;

	if (!json_is_object(e))
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: not a JSON object", expect);
	r = json_object_get(e, "rev");
	if (!json_is_integer(r))
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: no integer \"rev\"", expect);
	if (json_integer_value(r) != expect)
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %lld: expected rev %ld (revisions must be consecutive)",
				     (long long)json_integer_value(r), expect);
	h = json_object_get(e, "hash");
	if (!json_is_string(h))
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: no \"hash\"", expect);
	if ((rc = opt_log_entry_hash(e, mine)) < 0)
		return rc;
	if (strcmp(mine, json_string_value(h)) != 0)
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: hash mismatch", expect);
	p = json_object_get(e, "prior");
	if (!json_is_string(p))
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: no \"prior\"", expect);
	if (strcmp(json_string_value(p), prev) != 0)
		return expect == 1
			? opt_error_set(OPT_EINTEGRITY, "log entry rev 1: \"prior\" is not empty")
			: opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: \"prior\" does not match the hash of rev %ld",
					expect, expect - 1);
	ah = json_object_get(e, "actionsHash");
	if (!json_is_string(ah))
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: no \"actionsHash\"", expect);
	actions = json_object_get(e, "actions");
	if (known == 1) {
		snprintf(got, sizeof(got), "%s", known_hash);
		if (strcmp(got, json_string_value(ah)) != 0)
			return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: actionsHash mismatch (the actions were altered)",
					     expect);
	} else if (actions) {
		if ((rc = opt_json_hash(got, actions)) < 0)
			return rc;
		if (strcmp(got, json_string_value(ah)) != 0)
			return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: actionsHash mismatch (the actions were altered)",
					     expect);
	}
	if (!json_is_string(json_object_get(e, "trx")))
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: no \"trx\"", expect);
	if (!json_is_object(json_object_get(e, "blocks")))
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: no \"blocks\" object", expect);
	memcpy(hash, mine, sizeof(mine));
	return 0;
}

/* The header's note of the last entry (which appends trust) must agree
 * with the log: n entries, the last hashing to last. */
static int check_note(const struct opt_source *src, const char *header_id, long n, const char *last)
{
	json_t *h = NULL;
	int rc = 0;

	if (src->get(src->ctx, header_id, &h) == 0 && json_object_get(h, "logRev")) {
		const json_t *lr = json_object_get(h, "logRev"), *lh = json_object_get(h, "logHash");
		if (!json_is_integer(lr) || json_integer_value(lr) != n ||
		    (n > 0 && (!json_is_string(lh) || strcmp(json_string_value(lh), last) != 0)))
			rc = opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: the header says the log ends at rev %lld",
					   n, json_is_integer(lr) ? (long long)json_integer_value(lr) : -1LL);
	}
	json_decref(h);
	return rc;
}

/* A link of chain block b ("priorId", "nextId", or the header's
 * "tailId"): 0 and *out (borrowed, NULL when absent), or OPT_EINTEGRITY. */
static int link_of(const json_t *b, const char *field, const char *id, const char **out)
{
	const json_t *v = json_object_get(b, field);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v) || !opt_id_valid(json_string_value(v)))
		return opt_error_set(OPT_EINTEGRITY, "log block '%.80s': \"%s\" is not a block ID", id, field);
	*out = json_string_value(v);
	return 0;
}

/* ---- log blocks read as stored text ----
 *
 * A log block is canonical JSON text, and most of it may be one entry's
 * actions (a bulk load: a million of them).  The text is checked
 * canonical in one pass (opt_canon_scan), each entry's actions are hashed
 * as they stand in it (the canonical JSON of a part of a canonical text
 * is that part), and only the rest is parsed: the entries come without
 * their "actions", with the hash of each on the side. */

struct lean_ent {
	const json_t *e;       /* the entry as parsed (borrowed from block) */
	int has;               /* it had actions, hashed to h */
	char h[OPT_SHA256_HEX + 1];
};

struct lean {
	struct opt_source inner;
	opt_log_bytes_fn bytes;
	void *bctx;
	const char *hid;
	json_t *visited;       /* the IDs of the blocks read (may be NULL) */
	struct opt_ctape tape;
	struct lean_ent *v;    /* the entries of the block read last */
	size_t n, cap, pos;
};

/* The text of log block id, canonical, into *out without its entries'
 * actions, noting their hashes in l. */
static int lean_parse(struct lean *l, const char *id, const char *text, size_t len, json_t **out)
{
	const struct opt_cnode *t;
	json_error_t jerr;
	const json_t *es;
	char *buf = NULL;
	size_t ents, i, e, a, from = 0, bl = 0;
	int rc;

	*out = NULL;
	l->n = l->pos = 0;
	rc = opt_canon_scan(text, len, 3, &l->tape);
	if (rc == 0 && (rc = opt_canon_check_parsed(text, len)) == 1)
		rc = 2;  /* canonical, beyond the scanner: parsed whole */
	if (rc < 0)
		return rc;
	if (rc == 0)
		return opt_error_set(OPT_EINTEGRITY, "log block '%.80s' is not stored as canonical JSON", id);
	t = l->tape.v;
	if (rc == 2 || t[0].t != '{' || !(ents = opt_ctape_member(&l->tape, text, 0, "entries")) || t[ents].t != '[')
		goto whole;  /* (the chain's checks say what is wrong) */
	if (!(buf = malloc(len)))
		return opt_error_oom();
	for (i = 0; (e = opt_ctape_child(&l->tape, ents, i)); i++) {
		struct lean_ent *le;
		size_t cut, cut_end;
		if ((rc = OPT_ALLOC_GROW(l->v, l->n + 1, l->cap)) < 0) {
			free(buf);
			return rc;
		}
		le = &l->v[l->n++];
		le->e = NULL;
		le->has = 0;
		if (t[e].t != '{' || !(a = opt_ctape_member(&l->tape, text, e, "actions")))
			continue;
		le->has = 1;
		opt_sha256_hex(le->h, text + t[a].v, t[a].vl);
		/* cut "actions":[...] and one comma next to it */
		if (t[a].next < t[e].next) {
			cut = t[a].k;
			cut_end = t[t[a].next].k;
		} else if (a != e + 1) {
			cut = t[a].k - 1;
			cut_end = t[a].v + t[a].vl;
		} else {
			cut = t[a].k;
			cut_end = t[a].v + t[a].vl;
		}
		memcpy(buf + bl, text + from, cut - from);
		bl += cut - from;
		from = cut_end;
	}
	memcpy(buf + bl, text + from, len - from);
	bl += len - from;
	*out = json_loadb(buf, bl, 0, &jerr);
	free(buf);
	if (!*out)
		return opt_error_set(OPT_EINTEGRITY, "log block '%.80s' is not valid JSON: %s", id, opt_esc(jerr.text));
	es = json_object_get(*out, "entries");
	if (json_array_size(es) != l->n) {
		json_decref(*out);
		*out = NULL;
		return opt_error_set(OPT_EINTEGRITY, "log block '%.80s' is not valid JSON", id);
	}
	for (i = 0; i < l->n; i++)
		l->v[i].e = json_array_get(es, i);
	return 0;
whole:
	l->n = 0;
	*out = json_loadb(text, len, 0, &jerr);
	if (!*out)
		return opt_error_set(OPT_EINTEGRITY, "log block '%.80s' is not valid JSON: %s", id, opt_esc(jerr.text));
	return 0;
}

static int lean_get(void *ctx, const char *id, json_t **out)
{
	struct lean *l = ctx;
	struct opt_bytes b;
	int rc;

	*out = NULL;
	if (strcmp(id, l->hid) == 0)
		return l->inner.get(l->inner.ctx, id, out);
	l->n = l->pos = 0;
	if (l->visited && json_object_set_new(l->visited, id, json_true()) < 0)
		return opt_error_oom();
	if ((rc = l->bytes(l->bctx, id, &b)) < 0)
		return rc;
	rc = lean_parse(l, id, b.data, b.len, out);
	opt_bytes_release(&b);
	return rc;
}

/* A source reading the log's blocks of src through bytes, set up in l. */
static struct opt_source lean_open(struct lean *l, const struct opt_source *src, opt_log_bytes_fn bytes, void *bctx,
				   const char *header_id, json_t *visited)
{
	struct opt_source ls = { lean_get, l, NULL };

	memset(l, 0, sizeof(*l));
	l->inner = *src;
	l->bytes = bytes;
	l->bctx = bctx;
	l->hid = header_id;
	l->visited = visited;
	return ls;
}

static void lean_close(struct lean *l)
{
	opt_ctape_free(&l->tape);
	free(l->v);
}

/* What l knows of entry e: 1 and its actions' hash, 0 (it had none), -1
 * (not an entry l read). */
static int lean_known(struct lean *l, const json_t *e, const char **h)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		struct lean_ent *le = &l->v[(l->pos + i) % l->n];
		if (le->e == e) {
			l->pos = (l->pos + i + 1) % l->n;
			*h = le->h;
			return le->has;
		}
	}
	return -1;
}

/* ---- only what is new since a base (opt_log_verify with opts->base) ----
 *
 * The log is read from its tail back while its blocks changed; the new
 * entries are gathered, the older entries of the changed blocks checked
 * against the chain as it was; then the new entries are verified oldest
 * first. */

/* What is known of each new entry's actions (lean_known), by its index
 * in the array of new entries. */
struct fresh_known {
	int known;
	char h[OPT_SHA256_HEX + 1];
};

struct since {
	const struct opt_log_verify_opts *o;
	const char *hid;
	struct lean l;
	json_t *fresh;              /* the new entries, newest first */
	struct fresh_known *fk;     /* beside each of them */
	size_t fkcap;
	char cur[OPT_ID_MAX + 1];   /* the block to read next ("": none) */
	char came[OPT_ID_MAX + 1];  /* the block read last (its successor) */
	char prev[65];              /* the hash of the entry checked last */
	char want[65];              /* the hash the next older entry must have */
	long want_rev, loaded;
	int found;                  /* entry `after` was reached */
};

/* Block w->cur did not change since the base: it and all before it are
 * as verified then; the block read last must have followed it there (or,
 * none read, it must have been the tail), and entry `after` is in it. */
static int since_unchanged(struct since *w)
{
	const struct opt_source *base = w->o->base;
	json_t *nb = NULL;
	const char *bp = NULL;
	int rc;

	if (!*w->came) {
		/* nothing read: the tail is the old one */
		json_t *bh = NULL;
		if ((rc = base->get(base->ctx, w->hid, &bh)) == 0 && (rc = link_of(bh, "tailId", w->hid, &bp)) == 0 &&
		    (!bp || strcmp(bp, w->cur) != 0))
			rc = opt_error_set(OPT_EINTEGRITY, "log block '%.80s': the tail, unchanged, but not the "
					   "tail before", w->cur);
		json_decref(bh);
	} else if ((rc = base->get(base->ctx, w->came, &nb)) == 0 && (rc = link_of(nb, "priorId", w->came, &bp)) == 0 &&
		   (!bp || strcmp(bp, w->cur) != 0)) {
		rc = opt_error_set(OPT_EINTEGRITY, "log block '%.80s': linked to '%.80s', which it did not "
				   "follow before", w->came, w->cur);
	} else if (rc == OPT_ENOTFOUND) {
		rc = opt_error_set(OPT_EINTEGRITY, "log block '%.80s': new, but linked to the unchanged block "
				   "'%.80s'", w->came, w->cur);
	}
	json_decref(nb);
	if (rc < 0)
		return rc;
	if (!w->found && w->o->after > 0) {
		/* the entry `after` is in that block, as before */
		size_t nf = json_array_size(w->fresh);
		if (nf && json_integer_value(json_object_get(json_array_get(w->fresh, nf - 1), "rev")) != w->o->after + 1)
			return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: missing", w->o->after + 1);
		w->found = 1;
	}
	return 0;
}

/* Read the changed block w->cur through rd into *b: it must be there and
 * name the block read before it as its next. */
static int since_read(struct since *w, const struct opt_source *rd, json_t **b)
{
	const char *link;
	int rc;

	if (++w->loaded > 1000000)
		return opt_error_set(OPT_EINTEGRITY, "log block '%.80s': the log has a cycle", w->cur);
	if ((rc = rd->get(rd->ctx, w->cur, b)) < 0) {
		if (rc == OPT_ENOTFOUND)
			rc = opt_error_set(OPT_EINTEGRITY, "log block '%.80s' is missing", w->cur);
		return rc;
	}
	if (w->o->visited && json_object_set_new(w->o->visited, w->cur, json_true()) < 0)
		return opt_error_oom();
	/* the block names the one we came from as its next */
	if ((rc = link_of(*b, "nextId", w->cur, &link)) < 0)
		return rc;
	if ((*w->came && (!link || strcmp(link, w->came) != 0)) || (!*w->came && link))
		return opt_error_set(OPT_EINTEGRITY, "log block '%.80s': \"nextId\" does not name the block after it",
				     w->cur);
	return 0;
}

/* Keep e, a new entry (known: what lean_known said of it, kh its hash). */
static int since_keep(struct since *w, const json_t *e, int known, const char *kh)
{
	size_t at = json_array_size(w->fresh);
	int rc;

	if ((rc = OPT_ALLOC_GROW(w->fk, at + 1, w->fkcap)) < 0)
		return rc;
	w->fk[at].known = known;
	snprintf(w->fk[at].h, sizeof(w->fk[at].h), "%s", known == 1 ? kh : "");
	if (json_array_append(w->fresh, (json_t *)e) < 0)
		return opt_error_oom();
	return 0;
}

/* e (rev r), verified before: it must hash to what the next one names as
 * prior, and the newest of them be entry `after` with after_hash. */
static int since_old(struct since *w, const json_t *e, long r, int known, const char *kh)
{
	const json_t *p = json_object_get(e, "prior");
	int rc;

	if ((rc = check_entry_known(e, r < 1 ? 1 : r, json_is_string(p) ? json_string_value(p) : "", w->prev, known,
				    kh)) < 0)
		return rc;
	if (!w->found) {
		if (r != w->o->after || strcmp(w->prev, w->o->after_hash) != 0)
			return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: not the entry verified before (the "
					     "log was rewritten)", w->o->after);
		w->found = 1;
	} else if (r != w->want_rev || strcmp(w->prev, w->want) != 0) {
		return opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: not the entry verified before (the log "
				     "was rewritten)", r);
	}
	w->want_rev = r - 1;
	snprintf(w->want, sizeof(w->want), "%s", json_is_string(p) ? json_string_value(p) : "");
	return 0;
}

/* The entries of changed block b, newest first: the new ones kept, the
 * older ones checked. */
static int since_entries(struct since *w, const json_t *b)
{
	const json_t *es = json_object_get(b, "entries");
	size_t i;
	int rc;

	if (!json_is_array(es))
		return opt_error_set(OPT_EINTEGRITY, "log block '%.80s' has no \"entries\" array", w->cur);
	for (i = json_array_size(es); i-- > 0;) {
		const json_t *e = json_array_get(es, i), *rv = json_object_get(e, "rev");
		long r = json_is_integer(rv) ? (long)json_integer_value(rv) : -1;
		const char *kh = NULL;
		int known = w->o->bytes ? lean_known(&w->l, e, &kh) : -1;
		if (r > w->o->after && !w->found)
			rc = since_keep(w, e, known, kh);
		else
			rc = since_old(w, e, r, known, kh);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Walk the log from its tail back through the blocks that changed. */
static int since_walk(struct since *w, const struct opt_source *src, const struct opt_source *rd)
{
	json_t *h = NULL, *b = NULL;
	const char *link;
	int rc;

	if ((rc = src->get(src->ctx, w->hid, &h)) < 0)
		goto done;
	if ((rc = link_of(h, "tailId", w->hid, &link)) < 0)
		goto done;
	if (link)
		snprintf(w->cur, sizeof(w->cur), "%s", link);
	/* newest block first: the new entries, then the entry `after` and the
	 * older ones while their block changed; an unchanged block and all
	 * before it are as verified before (its link to the next block too:
	 * that block, the last read, was its successor there) */
	while (*w->cur) {
		if (!w->o->recheck || !json_object_get(w->o->recheck, w->cur)) {
			rc = since_unchanged(w);
			break;
		}
		if ((rc = since_read(w, rd, &b)) < 0 || (rc = since_entries(w, b)) < 0)
			goto done;
		snprintf(w->came, sizeof(w->came), "%s", w->cur);
		if ((rc = link_of(b, "priorId", w->cur, &link)) < 0)
			goto done;
		snprintf(w->cur, sizeof(w->cur), "%s", link ? link : "");
		json_decref(b);
		b = NULL;
	}
	if (rc == 0 && !w->found)
		rc = opt_error_set(OPT_EINTEGRITY, "log entry rev %ld: missing (the log was rewritten)", w->o->after);
done:
	json_decref(b);
	json_decref(h);
	return rc;
}

/* The new entries, oldest first, continuing the chain from after_hash;
 * *n counts those that checked out. */
static int since_fresh(struct since *w, const struct opt_source *src, long *n)
{
	const struct opt_log_verify_opts *o = w->o;
	size_t i;
	int rc;

	snprintf(w->prev, sizeof(w->prev), "%s", o->after_hash ? o->after_hash : "");
	for (i = json_array_size(w->fresh); i-- > 0;) {
		const json_t *e = json_array_get(w->fresh, i);
		if ((rc = check_entry_known(e, o->after + *n + 1, w->prev, w->prev, w->fk[i].known, w->fk[i].h)) < 0)
			return rc;
		if (o->cb && (rc = o->cb(e, o->arg)) != 0)
			return rc;
		(*n)++;
	}
	return check_note(src, w->hid, o->after + *n, w->prev);
}

/* opt_log_verify of the entries after o->after, since o->base. */
static int verify_since(const struct opt_source *src, const char *header_id, const struct opt_log_verify_opts *o,
			long *entries)
{
	struct since w;
	struct opt_source ls;
	long n = 0;
	int rc;

	if (entries)
		*entries = 0;
	memset(&w, 0, sizeof(w));
	OPT_CHECK_ALLOC(w.fresh = json_array());
	w.o = o;
	w.hid = header_id;
	w.found = o->after == 0;
	ls = lean_open(&w.l, src, o->bytes, o->bctx, header_id, NULL);
	/* (the log's blocks read as text when o->bytes: see above) */
	if ((rc = since_walk(&w, src, o->bytes ? &ls : src)) == 0)
		rc = since_fresh(&w, src, &n);
	json_decref(w.fresh);
	free(w.fk);
	lean_close(&w.l);
	if (entries)
		*entries = n;
	return rc;
}

/* The entries of the chain of header_id read through walk (src itself,
 * or a lean source over it), oldest first: opt_log_verify. */
static int verify_chain(const struct opt_source *src, const struct opt_source *walk, struct lean *l,
			const char *header_id, int (*cb)(const json_t *entry, void *arg), void *arg, long *entries)
{
	struct opt_chain_iter *it = NULL;
	const json_t *e;
	const char *kh = NULL;
	char prev[65] = "";
	long n = 0;
	int rc;

	if (entries)
		*entries = 0;
	rc = opt_chain_has(src, header_id);
	if (rc <= 0)
		return rc;
	if ((rc = opt_chain_iter_open(&it, walk, header_id, 1)) < 0)
		goto done;
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		int known = l ? lean_known(l, e, &kh) : -1;
		if ((rc = check_entry_known(e, n + 1, prev, prev, known, kh)) < 0)
			goto done;
		if (cb && (rc = cb(e, arg)) != 0)
			goto done;
		n++;
	}
	if (rc < 0)
		goto done;
	rc = check_note(src, header_id, n, prev);
done:
	opt_chain_iter_free(it);
	if (entries)
		*entries = n;
	return rc;
}

/* The whole log: read through o->bytes when given. */
static int verify_whole(const struct opt_source *src, const char *header_id, const struct opt_log_verify_opts *o,
			long *entries)
{
	struct lean l;
	struct opt_source ls;
	int rc;

	if (!o->bytes)
		return verify_chain(src, src, NULL, header_id, o->cb, o->arg, entries);
	ls = lean_open(&l, src, o->bytes, o->bctx, header_id, o->visited);
	rc = verify_chain(src, &ls, &l, header_id, o->cb, o->arg, entries);
	lean_close(&l);
	return rc;
}

int opt_log_verify(const struct opt_source *src, const char *header_id, const struct opt_log_verify_opts *opts,
		   long *entries)
{
	static const struct opt_log_verify_opts none = OPT_LOG_VERIFY_OPTS_INIT;

	if (!opts)
		opts = &none;
	if (opts->base)
		return verify_since(src, header_id, opts, entries);
	return verify_whole(src, header_id, opts, entries);
}

/* ---- iterating ---- */

struct opt_log_iter {
	struct opt_source src;
	char header_id[OPT_ID_MAX + 1];
	long last;                   /* the newest revision; -1: unknown */
	struct opt_chain_iter *it;   /* NULL until started */
};

int opt_log_iter_open(struct opt_log_iter **out, const struct opt_source *src, const char *header_id)
{
	struct opt_log_iter *it;
	int rc;

	*out = NULL;
	if ((rc = opt_chain_has(src, header_id)) <= 0)
		return rc;  /* no log (0), no header, or an error */
	it = calloc(1, sizeof(*it));
	OPT_CHECK_ALLOC(it);
	it->src = *src;
	snprintf(it->header_id, sizeof(it->header_id), "%s", header_id);
	/* the last revision, to read a range from the nearer end: a
	 * malformed last entry only means reading from the start */
	if (opt_log_rev(src, header_id, &it->last) < 0) {
		opt_error_clear();
		it->last = -1;
	}
	*out = it;
	return 0;
}

long opt_log_iter_last(const struct opt_log_iter *it)
{
	return it->last;
}

/* Walk from the end nearer to revision start (near_head: the oldest) to
 * its entry and take its position: 1 and *pos, 0 when not found. */
static int find_rev(struct opt_log_iter *it, int near_head, long start, struct opt_chain_pos *pos)
{
	struct opt_chain_iter *walk = NULL;
	const json_t *e;
	int rc;

	if ((rc = opt_chain_iter_open(&walk, &it->src, it->header_id, near_head)) < 0)
		return rc;
	while ((rc = opt_chain_iter_next(walk, &e)) == 1) {
		const json_t *r = json_object_get(e, "rev");
		if (json_is_integer(r) && json_integer_value(r) == start)
			break;
	}
	if (rc == 1 && (rc = opt_chain_iter_pos(walk, pos)) == 0)
		rc = 1;
	opt_chain_iter_free(walk);
	return rc;
}

int opt_log_iter_start(struct opt_log_iter *it, int forward, long start)
{
	struct opt_chain_pos pos;
	long from_head = start - 1, from_tail = it->last - start;
	int near_head = from_head <= from_tail, rc;

	opt_chain_iter_free(it->it);
	it->it = NULL;
	/* the output starts at the nearer end (or the log's length is not
	 * known): read from there, skipping */
	if (it->last < 0 || near_head == forward)
		return opt_chain_iter_open(&it->it, &it->src, it->header_id, forward);
	if ((rc = find_rev(it, near_head, start, &pos)) == 1)
		return opt_chain_iter_open_at(&it->it, &it->src, &pos, forward);
	if (rc < 0)
		return rc;
	return opt_chain_iter_open(&it->it, &it->src, it->header_id, forward);
}

int opt_log_iter_next(struct opt_log_iter *it, const json_t **entry)
{
	if (!it->it)
		return 0;
	return opt_chain_iter_next(it->it, entry);
}

void opt_log_iter_free(struct opt_log_iter *it)
{
	if (!it)
		return;
	opt_chain_iter_free(it->it);
	free(it);
}
