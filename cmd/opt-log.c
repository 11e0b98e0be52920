/* opt-log - the transaction logs of collections: show their entries and
 * verify their hash chains against the revisions they account for. */
#include "common.h"
#include "collection.h"
#include "identity.h"
#include "txn.h"
#include "log.h"
#include "verify.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The values of the options (each row of the tables below binds one). */
static struct {
	const char *from, *to, *limit, *rev, *format, *upto, *name;
	int reverse, follow, oneline, each, off, show;
} opt;

static const struct cmd_opt opts_show[] = {
	CMD_VALUE("from", 0, "REV", "start at revision REV, inclusive", &opt.from),
	CMD_VALUE("to", 0, "REV", "end at revision REV, inclusive", &opt.to),
	CMD_FLAG("reverse", 'r', "newest entry first", &opt.reverse),
	CMD_VALUE("limit", 'n', "N", "at most N entries", &opt.limit),
	CMD_VALUE("rev", 0, "N", "read the log as it was at revision N", &opt.rev),
	CMD_FLAG("follow", 'f', "then wait for new entries and print them as they come", &opt.follow),
	CMD_FLAG("oneline", 0, "one line an entry: revision, transaction, date, status, actions", &opt.oneline),
	CMD_VALUE("format", 0, "FMT", "one line an entry as FMT: %r %x %d %t %T %s %A %N %c %p %H %h %a %n %% (see opt-log(1))", &opt.format),
	CMD_OPT_END,
};

/* How often show --follow looks for new revisions. */
#define FOLLOW_POLL_MS 100

static const struct cmd_opt opts_none[] = {
	CMD_OPT_END,
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
	const char *format; /* a line per entry (--oneline, --format), else JSON */
};

/* ---- the resolved status of entries ----
 *
 * The part of a multi-collection transaction on a collection other than
 * the primary is stored as "status": "pending" (the entry is hashed and
 * signed, so it stays so); readers read it through the primary's
 * decision.  show does the same: it walks each primary's history once,
 * newest first, as far as the transactions asked about need, keeping the
 * decisions it passes (the newest decision on a transaction wins, as in
 * opt_store_decision_at). */

struct walker {
	char *primary;
	struct opt_snap *cur;   /* the next revision to look at; NULL: done */
	json_t *seen;           /* trx -> "committed" | "aborted" */
};

struct resolver {
	struct opt_store *store;
	struct walker *w;
	size_t n, cap;
};

static void resolver_clear(struct resolver *r)
{
	size_t i;

	for (i = 0; i < r->n; i++) {
		free(r->w[i].primary);
		opt_snap_free(r->w[i].cur);
		json_decref(r->w[i].seen);
	}
	free(r->w);
	r->w = NULL;
	r->n = r->cap = 0;
}

static int walker_of(struct resolver *r, const char *primary, struct walker **out)
{
	struct walker *w;
	size_t i;
	int rc;

	for (i = 0; i < r->n; i++)
		if (strcmp(r->w[i].primary, primary) == 0) {
			*out = &r->w[i];
			return 0;
		}
	if ((rc = OPT_ALLOC_GROW(r->w, r->n + 1, r->cap)) < 0)
		return rc;
	w = &r->w[r->n];
	memset(w, 0, sizeof(*w));
	w->primary = strdup(primary);
	w->seen = json_object();
	if (!w->primary || !w->seen) {
		free(w->primary);
		json_decref(w->seen);
		return opt_error_oom();
	}
	r->n++;
	rc = opt_snap_head(&w->cur, r->store, primary);
	if (rc == OPT_ENOTFOUND) {
		/* no primary here (yet): nothing is decided */
		opt_error_clear();
		w->cur = NULL;
	} else if (rc < 0) {
		return rc;
	}
	*out = w;
	return 0;
}

/* The status of transaction trx as readers see it: "committed",
 * "aborted", or "pending" while its primary holds no decision. */
static int resolve(struct resolver *r, const char *primary, const char *trx, const char **out)
{
	struct walker *w = NULL;
	const json_t *d;
	int rc;

	*out = "pending";
	if (!opt_store_name_valid(primary))
		return 0;
	if ((rc = walker_of(r, primary, &w)) < 0)
		return rc;
	while (!(d = json_object_get(w->seen, trx)) && w->cur) {
		const char *t = opt_snap_trx(w->cur), *st = opt_snap_trailer(w->cur, "Opt-Status");
		struct opt_snap *p = NULL;

		if (t && !json_object_get(w->seen, t)) {
			if (!st || strcmp(st, "committed") == 0)
				json_object_set_new(w->seen, t, json_string("committed"));
			else if (strcmp(st, "aborted") == 0)
				json_object_set_new(w->seen, t, json_string("aborted"));
		}
		rc = opt_snap_parent(&p, w->cur);
		opt_snap_free(w->cur);
		w->cur = NULL;
		if (rc == OPT_ENOTFOUND)
			opt_error_clear();
		else if (rc < 0)
			return rc;
		else
			w->cur = p;
	}
	if (d)
		*out = json_string_value(d);
	return 0;
}

/* The status of entry e: its stored one, the primary's decision for a
 * stored "pending", "committed" when it has none (a transaction on one
 * collection). */
static int entry_status(struct resolver *r, const json_t *e, const char **out)
{
	const char *st = json_string_value(json_object_get(e, "status"));
	const char *primary = json_string_value(json_object_get(e, "primary"));
	const char *trx = json_string_value(json_object_get(e, "trx"));

	*out = st ? st : "committed";
	if (st && strcmp(st, "pending") == 0 && primary && trx)
		return resolve(r, primary, trx, out);
	return 0;
}

/* ---- the line forms: --oneline, --format ---- */

#define ONELINE_FORMAT "%r %x %d %s %A"

/* Check FMT's placeholders; a usage error names the first unknown one. */
static int format_check(struct cmd *c, const char *fmt)
{
	const char *p;

	for (p = fmt; *p; p++) {
		if (*p != '%')
			continue;
		p++;
		if (!*p || !strchr("rxdtTsANcpHhan%", *p))
			return cmd_usage(c, "--format: unknown placeholder '%%%.1s' (see opt-log(1))", p);
	}
	return 0;
}

/* ISO 8601 local time of ms (milliseconds since the epoch) with its
 * offset, as git log's %aI: 2026-11-25T10:02:10+01:00. */
static void iso_date(char *out, size_t n, int64_t ms)
{
	time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	struct tm tm;
	long off;
	size_t k;

	if (!localtime_r(&t, &tm)) {
		snprintf(out, n, "?");
		return;
	}
	k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
	off = tm.tm_gmtoff / 60;
	snprintf(out + k, n - k, "%c%02ld:%02ld", off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60);
}

/* The actions of e by count and type, in order of first appearance:
 * "2 put, 1 del"; "pruned" when a checkpoint removed them. */
static void actions_summary(FILE *f, const json_t *e)
{
	const json_t *acts = json_object_get(e, "actions");
	json_t *counts;
	const char *k;
	json_t *v;
	size_t i;
	int first = 1;

	if (!json_is_array(acts)) {
		fputs("pruned", f);
		return;
	}
	if (json_array_size(acts) == 0) {
		fputs("none", f);
		return;
	}
	counts = json_object();
	for (i = 0; i < json_array_size(acts); i++) {
		const char *t = json_string_value(json_object_get(json_array_get(acts, i), "type"));
		json_t *n;
		if (!t)
			t = "?";
		n = json_object_get(counts, t);
		json_object_set_new(counts, t, json_integer(n ? json_integer_value(n) + 1 : 1));
	}
	/* jansson keeps insertion order */
	json_object_foreach(counts, k, v) {
		fprintf(f, "%s%lld %s", first ? "" : ", ", (long long)json_integer_value(v), k);
		first = 0;
	}
	json_decref(counts);
}

static void print_str(FILE *f, const json_t *v, size_t max)
{
	const char *s = json_string_value(v);

	if (s)
		fprintf(f, "%.*s", (int)(max ? max : strlen(s)), s);
}

/* Print entry e as fmt (checked by format_check) and a newline. */
static int format_entry(struct cmd *c, const char *fmt, const json_t *e, const char *status, const char *coll)
{
	const json_t *t = json_object_get(e, "time");
	int64_t ms = json_is_integer(t) ? (int64_t)json_integer_value(t) : 0;
	FILE *f = stdout;
	const char *p;
	char date[64];

	for (p = fmt; *p; p++) {
		if (*p != '%') {
			fputc(*p, f);
			continue;
		}
		switch (*++p) {
		case 'r': {
			const json_t *r = json_object_get(e, "rev");
			if (json_is_integer(r))
				fprintf(f, "%lld", (long long)json_integer_value(r));
			break;
		}
		case 'x': print_str(f, json_object_get(e, "trx"), 0); break;
		case 'd':
			if (json_is_integer(t)) {
				iso_date(date, sizeof(date), ms);
				fputs(date, f);
			}
			break;
		case 't':
			if (json_is_integer(t))
				fprintf(f, "%lld", (long long)(ms / 1000));
			break;
		case 'T':
			if (json_is_integer(t))
				fprintf(f, "%lld", (long long)ms);
			break;
		case 's': fputs(status, f); break;
		case 'A': actions_summary(f, e); break;
		case 'N': {
			const json_t *a = json_object_get(e, "actions");
			if (json_is_array(a))
				fprintf(f, "%zu", json_array_size(a));
			break;
		}
		case 'c': {
			const json_t *cs = json_object_get(e, "collections");
			size_t i;
			if (!json_is_array(cs)) {
				fputs(coll, f);
				break;
			}
			for (i = 0; i < json_array_size(cs); i++) {
				if (i)
					fputc(',', f);
				print_str(f, json_array_get(cs, i), 0);
			}
			break;
		}
		case 'p': print_str(f, json_object_get(e, "primary"), 0); break;
		case 'H': print_str(f, json_object_get(e, "hash"), 0); break;
		case 'h': print_str(f, json_object_get(e, "hash"), 12); break;
		case 'a': print_str(f, json_object_get(e, "author"), 0); break;
		case 'n': fputc('\n', f); break;
		case '%': fputc('%', f); break;
		}
	}
	if (fputc('\n', f) == EOF || ferror(f)) {
		c->out_err = 1;
		return OPT_EXIT_OTHER;
	}
	return 0;
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

/* Print entry e: as a line of r->format, else as JSON with "resolved"
 * added when its stored status is "pending". */
static int show_entry(struct cmd *c, struct resolver *res, const struct show_range *r, const json_t *e,
		      const char *coll)
{
	const char *status;
	json_t *o;
	int rc, st;

	if ((rc = entry_status(res, e, &status)) < 0)
		return cmd_fail(c, rc, "collection '%s': %s", coll, opt_error_last());
	if (r->format)
		return format_entry(c, r->format, e, status, coll);
	if (!json_is_string(json_object_get(e, "status")) ||
	    strcmp(json_string_value(json_object_get(e, "status")), "pending") != 0)
		return print_entry(c, e);
	o = json_copy((json_t *)e);
	if (!o)
		return cmd_fail(c, OPT_EIO, "out of memory");
	json_object_set_new(o, "resolved", json_string(status));
	st = print_entry(c, o);
	json_decref(o);
	return st;
}

/* Print the entries of snap's log in range r; *shown gets how many. */
static int show_entries(struct cmd *c, struct opt_snap *snap, const struct show_range *r, long *shown)
{
	struct opt_source src = opt_snap_source(snap);
	struct resolver res = { c->store, NULL, 0, 0 };
	struct opt_log_iter *it = NULL;
	const json_t *e;
	char hid[OPT_ID_LEN + 1];
	long last, lo, hi, n = 0;
	int rc, st = 0;

	if (shown)
		*shown = 0;
	opt_collection_header_id(opt_snap_name(snap), hid);
	rc = opt_log_iter_open(&it, &src, hid);
	if (rc == OPT_ENOTFOUND)
		return cmd_fail(c, OPT_EINTEGRITY, "collection '%s' has no header block", opt_snap_name(snap));
	if (rc < 0)
		return cmd_fail(c, rc, "collection '%s': %s", opt_snap_name(snap), opt_error_last());
	if (!it)
		return 0;  /* no log: nothing to show */
	/* the last revision, to read a range from the nearer end */
	last = opt_log_iter_last(it);
	lo = r->lo;
	hi = last >= 0 && last < r->hi ? last : r->hi;
	if (lo > hi || r->limit == 0) {
		opt_log_iter_free(it);
		return 0;
	}
	rc = opt_log_iter_start(it, !r->reverse, r->reverse ? hi : lo);
	while (rc >= 0 && (r->limit < 0 || n < r->limit) && (rc = opt_log_iter_next(it, &e)) == 1) {
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
		if ((st = show_entry(c, &res, r, e, opt_snap_name(snap))))
			break;
		n++;
	}
	if (rc < 0 && !st)
		st = cmd_fail(c, rc, "collection '%s': %s", opt_snap_name(snap), opt_error_last());
	opt_log_iter_free(it);
	resolver_clear(&res);
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
	struct show_range r = { 1, 0, -1, opt.reverse, NULL };
	struct opt_snap *snap = NULL;
	const char *name;
	long rev, shown;
	int st, rc, fol = opt.follow;

	if (c->npos != 1)
		return cmd_usage(c, c->npos ? "show takes one collection name" : "no collection name given");
	name = c->pos[0];
	if ((st = check_name(c, name)) || (st = cmd_long(c, &opt.from, 1, 1, &r.lo)) ||
	    (st = cmd_long(c, &opt.to, 0, 1, &r.hi)) || (st = cmd_long(c, &opt.limit, -1, 0, &r.limit)) ||
	    (st = cmd_long(c, &opt.rev, 0, 1, &rev)))
		return st;
	if (opt.oneline && opt.format)
		return cmd_usage(c, "--oneline and --format are exclusive (--oneline is --format='%s')", ONELINE_FORMAT);
	r.format = opt.oneline ? ONELINE_FORMAT : opt.format;
	if (r.format && (st = format_check(c, r.format)))
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
	if (o && opt_error_reason())
		json_object_set_new(o, "reason", json_string(opt_error_reason()));
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
	CMD_FLAG("each", 'e', "one transaction per input document (default: the input is one document)", &opt.each),
	CMD_OPT_END,
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
	if (!opt.each) {
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
	CMD_VALUE("upto", 0, "REV", "drop action payloads up to revision REV (default: the latest)", &opt.upto),
	CMD_OPT_END,
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
	if ((st = cmd_long(c, &opt.upto, 0, 1, &upto)))
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
	CMD_VALUE("name", 0, "NAME", "a name to remember the key by", &opt.name),
	CMD_OPT_END,
};

static int do_trust(struct cmd *c)
{
	int i, rc, st;

	if (c->npos == 0)
		return cmd_usage(c, "no key given");
	if ((st = cmd_args_expand(c, 0)) || (st = cmd_store(c, 0)))
		return st;
	for (i = 0; i < c->npos; i++) {
		rc = opt_trust_add(c->store, c->pos[i], opt.name);
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

static const struct cmd_opt opts_restrict[] = {
	CMD_FLAG("off", 0, "open the writers again: any key whose signature checks out", &opt.off),
	CMD_FLAG("show", 0, "change nothing, print whether writers are restricted", &opt.show),
	CMD_OPT_END,
};

static int do_restrict(struct cmd *c)
{
	json_t *o;
	int rc, st;

	if (c->npos)
		return cmd_usage(c, "restrict takes no operands");
	if (opt.off && opt.show)
		return cmd_usage(c, "--off and --show exclude each other");
	if ((st = cmd_store(c, 0)))
		return st;
	if (!opt.show && (rc = opt_trust_restrict(c->store, !opt.off)) < 0)
		return cmd_lib_fail(c, rc);
	if ((rc = opt_trust_restricted(c->store)) < 0)
		return cmd_lib_fail(c, rc);
	o = json_pack("{s:b}", "restricted", rc);
	st = cmd_print(c, o);
	json_decref(o);
	return st;
}

static const struct cmd_verb verbs[] = {
	{ "show", do_show, "NAME [--from REV] [--to REV] [--reverse] [--limit N] [--rev N] [--follow] [--oneline | --format FMT]",
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
	{ "restrict", do_restrict, "[--off | --show]",
	  "accept entries only by the trusted keys (--off: by any key): {restricted}", opts_restrict, 0 },
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
