/* opt-log - the transaction logs of collections: show their entries and
 * verify their hash chains against the revisions they account for. */
#include "common.h"
#include "collection.h"
#include "identity.h"
#include "txn.h"
#include "chain.h"
#include "log.h"
#include "verify.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>

static const struct cmd_opt opts_show[] = {
	{ "from", 0, "REV", "start at revision REV, inclusive" },
	{ "to", 0, "REV", "end at revision REV, inclusive" },
	{ "reverse", 'r', NULL, "newest entry first" },
	{ "limit", 'n', "N", "at most N entries" },
	{ "rev", 0, "N", "read the log as it was at revision N" },
	{ "follow", 'f', NULL, "then wait for new entries and print them as they come" },
	{ NULL, 0, NULL, NULL },
};

/* How often show --follow looks for new revisions. */
#define FOLLOW_POLL_MS 100

static const struct cmd_opt opts_none[] = {
	{ NULL, 0, NULL, NULL },
};

/* ---- helpers ---- */

static int check_name(struct cmd *c, const char *name)
{
	if (opt_store_name_check(name) < 0)
		return cmd_usage(c, "%s", opt_error_last());
	return 0;
}

/* ---- show ---- */

struct show_range {
	long lo, hi;      /* inclusive revision bounds */
	long limit;       /* -1: no limit */
	int reverse;
};

/* Open an iterator in the output direction that starts at the entry of
 * revision `start`, reached from whichever end of the log is nearer (the
 * log holds revisions 1..last in order; last < 0: unknown): a range near
 * the tail of a long log costs what the range costs, not the whole log.
 * Falls back to the start of the log when the entry is not where it
 * should be. */
static int open_at_rev(struct opt_chain_iter **out, const struct opt_source *src, const char *hid,
		       int forward, long start, long last)
{
	struct opt_chain_iter *it = NULL;
	struct opt_chain_pos pos;
	const json_t *e;
	long from_head = start - 1, from_tail = last - start;
	int near_head = from_head <= from_tail, rc;

	*out = NULL;
	/* the output starts at the nearer end (or the log's length is not
	 * known): read from there, skipping */
	if (last < 0 || near_head == forward)
		return opt_chain_iter_open(out, src, hid, forward);
	/* walk from the nearer end to the entry, take its position */
	if ((rc = opt_chain_iter_open(&it, src, hid, near_head)) < 0)
		return rc;
	while ((rc = opt_chain_iter_next(it, &e)) == 1) {
		const json_t *r = json_object_get(e, "rev");
		if (json_is_integer(r) && json_integer_value(r) == start)
			break;
	}
	if (rc == 1 && (rc = opt_chain_iter_pos(it, &pos)) == 0) {
		opt_chain_iter_free(it);
		return opt_chain_iter_open_at(out, src, &pos, forward);
	}
	opt_chain_iter_free(it);
	if (rc < 0)
		return rc;
	return opt_chain_iter_open(out, src, hid, forward);
}

/* An entry as its canonical JSON (as stored and hashed: 0.1 stays 0.1). */
static int print_entry(struct cmd *c, const json_t *e)
{
	char *s;
	size_t n;
	int rc;

	if ((rc = opt_json_canon(&s, &n, e)) < 0)
		return cmd_lib_fail(c, rc);
	rc = cmd_print_text(c, s, n);
	free(s);
	return rc;
}

/* Print the entries of snap's log in range r; *shown gets how many. */
static int show_entries(struct cmd *c, struct opt_snap *snap, const struct show_range *r, long *shown)
{
	struct opt_source src = opt_snap_source(snap);
	struct opt_chain_iter *it = NULL;
	const json_t *e;
	char hid[OPT_ID_LEN + 1];
	long last, lo, hi, n = 0;
	int rc, st = 0;

	if (shown)
		*shown = 0;
	opt_collection_header_id(opt_snap_name(snap), hid);
	rc = opt_chain_has(&src, hid);
	if (rc == 0)
		return 0;  /* no log: nothing to show */
	if (rc == OPT_ENOTFOUND)
		return cmd_fail(c, OPT_EINTEGRITY, "collection '%s' has no header block", opt_snap_name(snap));
	if (rc < 0)
		return cmd_fail(c, rc, "collection '%s': %s", opt_snap_name(snap), opt_error_last());
	/* the last revision, to read a range from the nearer end; show does
	 * not verify: a malformed last entry only means reading from the
	 * start */
	if (opt_log_rev(&src, hid, &last) < 0) {
		opt_error_clear();
		last = -1;
	}
	lo = r->lo;
	hi = last >= 0 && last < r->hi ? last : r->hi;
	if (lo > hi || r->limit == 0)
		return 0;
	rc = open_at_rev(&it, &src, hid, !r->reverse, r->reverse ? hi : lo, last);
	while (rc >= 0 && (r->limit < 0 || n < r->limit) && (rc = opt_chain_iter_next(it, &e)) == 1) {
		const json_t *jr = json_object_get(e, "rev");
		long rev = json_is_integer(jr) ? (long)json_integer_value(jr) : 0;

		if (!json_is_integer(jr)) {
			/* a malformed entry: shown unless a range is asked for */
			if (r->lo > 1 || r->hi != LONG_MAX)
				continue;
		} else if (rev < lo || rev > hi) {
			/* past the range in the direction of travel: done */
			if (r->reverse ? rev < lo : rev > hi)
				break;
			continue;
		}
		if ((st = print_entry(c, e)))
			break;
		n++;
	}
	if (rc < 0 && !st)
		st = cmd_fail(c, rc, "collection '%s': %s", opt_snap_name(snap), opt_error_last());
	opt_chain_iter_free(it);
	if (shown)
		*shown = n;
	return st;
}

/* ---- show --follow ---- */

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

/* --follow ends cleanly on these signals (one ignored at start, under
 * nohup or in a background job, stays ignored). */
static void follow_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa, old;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			continue;
		sigaction(sigs[i], &sa, NULL);
	}
}

/* After the entries up to revision rev: poll the latest revision and print
 * the entries each new one adds, until a signal, a closed pipe (the
 * reader went away: the end, exit 0) or the limit. */
static int follow(struct cmd *c, const char *name, struct show_range *r, long rev)
{
	struct pollfd out = { 1, 0, 0 };
	struct opt_snap *snap;
	long shown;
	int st = 0, rc;

	follow_signals();
	while (!stop_signal && r->limit != 0) {
		/* the wait; a closed pipe on stdout (POLLERR) ends it at once */
		rc = poll(&out, 1, FOLLOW_POLL_MS);
		if (rc > 0 && (out.revents & (POLLERR | POLLHUP | POLLNVAL)))
			break;
		if (stop_signal)
			break;
		if ((rc = opt_snap_open(&snap, c->store, name, 0)) < 0)
			return cmd_lib_fail(c, rc);
		if (opt_snap_rev(snap) > rev) {
			if (r->lo <= rev)
				r->lo = rev + 1;
			rev = opt_snap_rev(snap);
			st = show_entries(c, snap, r, &shown);
			if (r->limit > 0)
				r->limit = r->limit > shown ? r->limit - shown : 0;
			if (!st && fflush(stdout) == EOF)
				st = OPT_EXIT_OTHER;
		}
		opt_snap_free(snap);
		if (st)
			break;
	}
	/* the reader of a --follow went away: its end, not an error */
	if (cmd_stdout_gone()) {
		__fpurge(stdout);
		clearerr(stdout);
		c->out_err = 0;
		st = 0;
	}
	return st;
}

static int do_show(struct cmd *c)
{
	struct show_range r = { 1, 0, -1, cmd_flag(c, "reverse") };
	struct opt_snap *snap = NULL;
	const char *name;
	long rev, shown;
	int st, rc, fol = cmd_flag(c, "follow");

	if (c->npos != 1)
		return cmd_usage(c, c->npos ? "show takes one collection name" : "no collection name given");
	name = c->pos[0];
	if ((st = check_name(c, name)) || (st = cmd_long(c, "from", 1, 1, &r.lo)) ||
	    (st = cmd_long(c, "to", 0, 1, &r.hi)) || (st = cmd_long(c, "limit", -1, 0, &r.limit)) ||
	    (st = cmd_long(c, "rev", 0, 1, &rev)))
		return st;
	if (r.hi && r.lo > r.hi)
		return cmd_usage(c, "--from %ld is after --to %ld", r.lo, r.hi);
	if (fol && r.reverse)
		return cmd_usage(c, "--follow cannot be used with --reverse");
	if (fol && rev)
		return cmd_usage(c, "--follow cannot be used with --rev (an old revision never changes)");
	if (fol && r.hi)
		return cmd_usage(c, "--follow cannot be used with --to (it has no end)");
	if (!r.hi)
		r.hi = LONG_MAX;
	if ((st = cmd_store(c, 0)))
		return st;
	if ((rc = opt_snap_open(&snap, c->store, name, rev)) < 0)
		return cmd_lib_fail(c, rc);
	st = show_entries(c, snap, &r, &shown);
	rev = opt_snap_rev(snap);
	opt_snap_free(snap);
	if (!st && fol) {
		if (r.limit > 0)
			r.limit = r.limit > shown ? r.limit - shown : 0;
		if (fflush(stdout) == EOF)
			st = OPT_EXIT_OTHER;
		else
			st = follow(c, name, &r, rev);
	}
	if (fol && st == OPT_EXIT_OTHER && cmd_stdout_gone()) {
		/* the reader went away: the end of a follow */
		__fpurge(stdout);
		clearerr(stdout);
		c->out_err = 0;
		st = 0;
	}
	return st;
}

/* ---- verify ---- */

struct progress {
	struct cmd *c;
	const char *name;
	int64_t next_ms;
	int shown;
};

static void progress_cb(long done, long total, void *arg)
{
	struct progress *p = arg;
	int64_t now = opt_now_ms();

	if (now < p->next_ms && done < total)
		return;
	p->next_ms = now + 100;
	fprintf(stderr, "\r%s: verifying '%s': %ld/%ld revisions", p->c->prog->name, p->name, done, total);
	p->shown = 1;
}

static void progress_end(struct progress *p)
{
	if (p->shown)
		fprintf(stderr, "\r\033[K");
	p->shown = 0;
}

/* Verify one collection; prints its record.  Returns 0, or the exit
 * status of what went wrong (after the message). */
static int verify_one(struct cmd *c, const char *name)
{
	struct opt_verify_result res;
	struct progress p = { c, name, opt_now_ms() + 300, 0 };
	char msg[1024];
	json_t *o;
	int rc, st;

	rc = opt_verify_collection(c->store, name, NULL, cmd_progress_ok(c) ? progress_cb : NULL, &p, &res);
	progress_end(&p);
	if (rc == OPT_ENOTFOUND || rc == OPT_EINVAL)
		return cmd_lib_fail(c, rc);
	if (rc == 0) {
		o = json_pack("{s:s,s:I,s:I,s:b}", "collection", name, "entries", (json_int_t)res.entries,
			      "rev", (json_int_t)res.rev, "ok", 1);
		st = cmd_print(c, o);
		json_decref(o);
		return st;
	}
	snprintf(msg, sizeof(msg), "%s", opt_error_last());
	o = json_pack("{s:s,s:I,s:I,s:b,s:s}", "collection", name, "entries", (json_int_t)res.entries,
		      "rev", (json_int_t)res.rev, "ok", 0, "error", msg);
	st = cmd_print(c, o);
	json_decref(o);
	fflush(stdout);
	rc = cmd_fail(c, rc, "collection '%s': %s", name, msg);
	return st ? st : rc;
}

static int do_verify(struct cmd *c)
{
	json_t *names = NULL;
	size_t i;
	int st, rc, integrity = 0, other = 0, named = c->npos > 0;

	if ((st = cmd_args_expand(c, 0)))
		return st;
	for (i = 0; i < (size_t)c->npos; i++)
		if ((st = check_name(c, c->pos[i])))
			return st;
	if ((st = cmd_store(c, 0)))
		return st;
	if (named) {
		names = json_array();
		for (i = 0; i < (size_t)c->npos; i++)
			json_array_append_new(names, json_string(c->pos[i]));
	} else if ((rc = opt_store_list(c->store, &names)) < 0) {
		return cmd_lib_fail(c, rc);
	}
	/* every collection is verified; a broken one does not stop the others */
	for (i = 0; i < json_array_size(names); i++) {
		st = verify_one(c, json_string_value(json_array_get(names, i)));
		if (st == OPT_EXIT_INTEGRITY)
			integrity = 1;
		else if (st && !other)
			other = st;
		if (c->out_err)
			break;
	}
	json_decref(names);
	return integrity ? OPT_EXIT_INTEGRITY : other;
}

/* ---- commit ---- */

static const struct cmd_opt opts_commit[] = {
	{ "each", 'e', NULL, "one transaction per input document (default: the input is one document)" },
	{ NULL, 0, NULL, NULL },
};

static int commit_one(struct cmd *c, json_t *doc, long line)
{
	/* a document is always committed, even when its actions change
	 * nothing (a del of an absent key): the ID printed is always one
	 * that status knows, as for a document over several collections */
	struct opt_txn_opts o = { NULL, NULL, 0, 1 };
	json_t *out = NULL;
	int rc, st;

	if (opt_txdoc_check(doc) < 0)
		return cmd_fail(c, OPT_EINVAL, "line %ld: %s (nothing committed)", line, opt_error_last());
	rc = opt_txdoc_run(c->store, doc, &o, &out);
	if (rc < 0)
		return cmd_lib_fail(c, rc);
	st = cmd_print(c, out);
	json_decref(out);
	fflush(stdout);
	return st;
}

/* commit --each (cmd_each): each document is committed as it is staged
 * (a transaction may cover several collections: no group commit); the
 * slot keeps its record. */
static int each_stage(struct cmd *c, void *arg, json_t *doc, const char *where, void *slot)
{
	if (opt_txdoc_check(doc) < 0)
		return opt_error_set(OPT_EINVAL, "%s: %s (nothing committed)", where, opt_error_last());
	return opt_txdoc_run(c->store, doc, NULL, slot);
}

static int each_print(struct cmd *c, void *arg, const struct opt_txn_result *r, void *slot)
{
	return cmd_print(c, *(json_t **)slot);
}

static void each_release(void *slot)
{
	json_decref(*(json_t **)slot);
}

static int do_commit(struct cmd *c)
{
	struct opt_jsonl *in = NULL;
	json_t *v;
	int rc, st = 0, n = 0;

	if (c->npos)
		return cmd_usage(c, "commit reads the transaction from stdin and takes no operands");
	if ((st = cmd_store(c, 1)))
		return st;
	opt_jsonl_open(&in, stdin);
	if (!cmd_flag(c, "each")) {
		/* one document: read all of the input before committing it */
		json_t *doc = NULL;
		long line = 0;
		while ((rc = opt_jsonl_next(in, &v)) == 1) {
			if (++n > 1) {
				json_decref(v);
				st = cmd_usage(c, "the input holds more than one transaction document (use --each; nothing committed)");
				break;
			}
			doc = v;
			line = opt_jsonl_line(in);
		}
		if (!st && rc >= 0 && doc)
			st = commit_one(c, doc, line);
		json_decref(doc);
	} else {
		struct cmd_each e = { 0 };
		e.in = in;
		e.slot_size = sizeof(json_t *);
		e.stage = each_stage;
		e.print = each_print;
		e.release = each_release;
		st = cmd_each(c, &e);
		rc = 0;
		n = (int)e.ndocs;
	}
	if (rc < 0 && !st)
		st = cmd_fail(c, rc, "%s (nothing committed)", opt_error_last());
	else if (rc == 0 && n == 0 && !st)
		st = cmd_usage(c, "no transaction document on stdin");
	opt_jsonl_free(in);
	return st;
}

/* ---- status ---- */

static int do_status(struct cmd *c)
{
	json_t *out = NULL;
	int i, rc, st = 0, missing = 0;

	if (c->npos == 0)
		return cmd_usage(c, "no transaction ID given (use - to read IDs from stdin)");
	if ((st = cmd_args_expand(c, 0)) || (st = cmd_store(c, 0)))
		return st;
	for (i = 0; i < c->npos && !st; i++) {
		rc = opt_txn_status(c->store, c->pos[i], &out);
		if (rc == OPT_ENOTFOUND) {
			cmd_lib_fail(c, rc);
			missing = 1;
			continue;
		}
		if (rc < 0)
			return cmd_lib_fail(c, rc);
		st = cmd_print(c, out);
		json_decref(out);
	}
	return st ? st : missing ? OPT_EXIT_NOTFOUND : 0;
}

/* ---- checkpoint ---- */

static const struct cmd_opt opts_checkpoint[] = {
	{ "upto", 0, "REV", "drop action payloads up to revision REV (default: the latest)" },
	{ NULL, 0, NULL, NULL },
};

static int do_checkpoint(struct cmd *c)
{
	json_t *out = NULL;
	long upto;
	int rc, st;

	if (c->npos != 1)
		return cmd_usage(c, "checkpoint takes one collection name");
	if (opt_store_name_check(c->pos[0]) < 0)
		return cmd_usage(c, "%s", opt_error_last());
	if ((st = cmd_long(c, "upto", 0, 1, &upto)))
		return st;
	if ((st = cmd_store(c, 0)))
		return st;
	rc = opt_checkpoint(c->store, c->pos[0], upto, &out);
	if (rc < 0)
		return cmd_lib_fail(c, rc);
	st = cmd_print(c, out);
	json_decref(out);
	return st;
}

/* ---- identity and trust ---- */

static int do_identity(struct cmd *c)
{
	struct opt_identity id;
	json_t *o;
	int rc, st;

	if (c->npos)
		return cmd_usage(c, "identity takes no operands");
	if ((st = cmd_store(c, 1)))
		return st;
	if ((rc = opt_identity_get(&id, c->store, 1)) < 0)
		return cmd_lib_fail(c, rc);
	o = json_pack("{s:s,s:s}", "key", id.pub, "store", opt_store_path(c->store));
	memset(&id, 0, sizeof(id));
	st = cmd_print(c, o);
	json_decref(o);
	return st;
}

static const struct cmd_opt opts_trust[] = {
	{ "name", 0, "NAME", "a name to remember the key by" },
	{ NULL, 0, NULL, NULL },
};

static int do_trust(struct cmd *c)
{
	int i, rc, st;

	if (c->npos == 0)
		return cmd_usage(c, "no key given");
	if ((st = cmd_args_expand(c, 0)) || (st = cmd_store(c, 0)))
		return st;
	for (i = 0; i < c->npos; i++) {
		rc = opt_trust_add(c->store, c->pos[i], cmd_get(c, "name"));
		if (rc < 0)
			return cmd_lib_fail(c, rc);
	}
	return 0;
}

static int do_untrust(struct cmd *c)
{
	int i, rc, st;

	if (c->npos == 0)
		return cmd_usage(c, "no key given");
	if ((st = cmd_args_expand(c, 0)) || (st = cmd_store(c, 0)))
		return st;
	for (i = 0; i < c->npos; i++) {
		rc = opt_trust_remove(c->store, c->pos[i]);
		if (rc < 0)
			return cmd_lib_fail(c, rc);
	}
	return 0;
}

static int do_trusted(struct cmd *c)
{
	json_t *arr = NULL;
	size_t i;
	int rc, st;

	if (c->npos)
		return cmd_usage(c, "trusted takes no operands");
	if ((st = cmd_store(c, 0)))
		return st;
	if ((rc = opt_trust_list(c->store, &arr)) < 0)
		return cmd_lib_fail(c, rc);
	for (i = 0; i < json_array_size(arr) && !st; i++)
		st = cmd_print(c, json_array_get(arr, i));
	json_decref(arr);
	return st;
}

static const struct cmd_verb verbs[] = {
	{ "show", do_show, "NAME [--from REV] [--to REV] [--reverse] [--limit N] [--rev N] [--follow]",
	  "print the log entries of a collection, oldest first", opts_show, 0 },
	{ "verify", do_verify, "[NAME... | -]",
	  "check logs against the revisions: {collection, entries, rev, ok} lines", opts_none, 0 },
	{ "commit", do_commit, "[--each] < {\"collections\": {NAME: [ACTIONS]}}",
	  "commit one atomic transaction over several collections", opts_commit, 1 },
	{ "status", do_status, "TRX... | -", "pending, committed or aborted: {trx, status, collections} lines",
	  opts_none, 0 },
	{ "checkpoint", do_checkpoint, "NAME [--upto REV]",
	  "drop old action payloads from the log, keeping its hash chain", opts_checkpoint, 0 },
	{ "identity", do_identity, "", "the store's public key, which signs its log entries", opts_none, 1 },
	{ "trust", do_trust, "KEY... | - [--name NAME]", "accept log entries signed by KEY", opts_trust, 0 },
	{ "untrust", do_untrust, "KEY... | -", "stop accepting entries signed by KEY", opts_none, 0 },
	{ "trusted", do_trusted, "", "list the trusted keys: {key, name} lines", opts_none, 0 },
	{ NULL, NULL, NULL, NULL, NULL, 0 },
};

static const struct cmd_prog prog = {
	"opt-log",
	"The transaction logs of optimystic: every collection keeps one hash-chained\n"
	"entry per revision; show them, and verify them against the store.",
	verbs,
};

int main(int argc, char **argv)
{
	return cmd_main(&prog, argc, argv);
}
