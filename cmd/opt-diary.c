/* opt-diary - Diary collections: append-only logs of JSON entries, kept in
 * a chain of blocks. */
#include "common.h"
#include "collection.h"
#include "txn.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The values of the options (each row of the tables below binds one). */
static struct {
	const char *limit, *rev;
	int each, reverse, follow;
} opt;

static const struct cmd_opt opts_append[] = {
	CMD_FLAG("each", 'e', "one transaction per entry (group-committed) instead of one for all", &opt.each),
	CMD_OPT_END,
};

static const struct cmd_opt opts_read[] = {
	CMD_FLAG("reverse", 'r', "newest entry first", &opt.reverse),
	CMD_VALUE("limit", 'n', "N", "print at most N entries", &opt.limit),
	CMD_FLAG("follow", 'f', "then wait for new entries and print them as they come", &opt.follow),
	CMD_VALUE("rev", 0, "N", "read the diary as it was at revision N", &opt.rev),
	CMD_OPT_END,
};

static const struct cmd_opt opts_count[] = {
	CMD_VALUE("rev", 0, "N", "count the entries of revision N", &opt.rev),
	CMD_OPT_END,
};

static const struct cmd_opt opts_none[] = {
	CMD_OPT_END,
};

/* How often --follow looks for new revisions. */
#define FOLLOW_POLL_MS 100
/* The most transactions of append --each staged in one group. */
#define EACH_GROUP_MAX 256

/* ---- helpers ---- */

/* The diary name: the first operand, a valid collection name. */
static int need_name(struct cmd *c, const char **out)
{
	*out = NULL;
	if (c->npos < 1)
		return cmd_usage(c, "the diary name is required");
	*out = c->pos[0];
	if (opt_store_name_check(*out) < 0)
		return cmd_usage(c, "%s", opt_error_last());
	return 0;
}

/* Open diary name at rev (0: the latest), refusing other kinds. */
static int open_diary(struct cmd *c, const char *name, long rev, struct opt_snap **out)
{
	int rc;

	*out = NULL;
	if ((rc = opt_snap_open(out, c->store, name, rev)) < 0)
		return cmd_lib_fail(c, rc);
	if ((rc = opt_coll_expect(*out, OPT_TYPE_DIARY)) < 0) {
		opt_snap_free(*out);
		*out = NULL;
		return cmd_lib_fail(c, rc);
	}
	return 0;
}

/* read --follow: a closed pipe on stdout ends the command quietly (exit 0)
 * instead of being a write error. */
static int quiet_epipe;
static int pipe_gone;

/* A write to stdout failed: say so once (finish() stays quiet after this),
 * or note a closed pipe that --follow takes as its end. */
static int out_fail(struct cmd *c)
{
	if (quiet_epipe && errno == EPIPE) {
		/* drop what cannot be written, so that the final flush succeeds */
		__fpurge(stdout);
		clearerr(stdout);
		c->out_err = 0;
		pipe_gone = 1;
		return OPT_EXIT_OTHER;
	}
	if (!c->out_err && errno != EPIPE)
		fprintf(stderr, "%s: cannot write output: %s\n", c->prog->name, strerror(errno));
	c->out_err = 1;
	return OPT_EXIT_OTHER;
}

/* cmd_print, with out_fail's reporting. */
static int print_json(struct cmd *c, const json_t *v)
{
	if (cmd_print(c, v) == 0)
		return 0;
	c->out_err = 0;
	return out_fail(c);
}

/* Print one entry: its canonical JSON (keys sorted, shortest reals) as one
 * line, or indented with --pretty. */
static int print_entry(struct cmd *c, const json_t *e)
{
	char *s;
	size_t n;
	int rc;

	if ((rc = opt_json_canon(&s, &n, e)) < 0)
		return cmd_lib_fail(c, rc);
	if (c->pretty) {
		/* indented from the canonical text: 0.1 stays 0.1 */
		rc = cmd_print_text(c, s, n);
		free(s);
		if (rc && c->out_err) {
			c->out_err = 0;
			return out_fail(c);
		}
		return rc;
	}
	s[n] = '\n';
	if (fwrite(s, 1, n + 1, stdout) != n + 1) {
		free(s);
		return out_fail(c);
	}
	free(s);
	return 0;
}

/* {"collection","rev","appended","count"} */
static int print_appended(struct cmd *c, const char *name, long rev, size_t appended, long count)
{
	json_t *o;
	int st;

	/* valid collection names need no escaping */
	if (!c->pretty) {
		if (printf("{\"collection\":\"%s\",\"rev\":%ld,\"appended\":%zu,\"count\":%ld}\n", name, rev,
			   appended, count) < 0)
			return out_fail(c);
		return 0;
	}
	o = json_pack("{s:s,s:I,s:I,s:I}", "collection", name, "rev", (json_int_t)rev,
		      "appended", (json_int_t)appended, "count", (json_int_t)count);
	st = print_json(c, o);
	json_decref(o);
	return st;
}

/* ---- append ---- */

struct append_ctx {
	json_t *entries;  /* array of the transaction's entries (borrowed) */
	long count;       /* the diary's count after them (set by append_fn) */
};

/* The transaction: derived only from the state it is given, so that a
 * replay after a lost race appends the same entries at the new tail. */
static int append_fn(struct opt_txn *x, void *arg)
{
	struct append_ctx *a = arg;
	size_t i;
	int rc;

	if ((rc = opt_diary_init(x)) < 0)
		return rc;
	for (i = 0; i < json_array_size(a->entries); i++)
		if ((rc = opt_diary_append(x, json_array_get(a->entries, i))) < 0)
			return rc;
	return opt_diary_txn_count(x, &a->count);
}

/* The entries of append, from the operands ("-" reads stdin) or, with no
 * operand after the name, from stdin: 1 and *out (new reference), 0 at
 * the end, <0 an error (opt_error_last). */
static int next_entry(struct cmd_args *a, json_t **out)
{
	const char *text;
	int rc = cmd_args_next_json(a, &text, out);

	if (rc != 1 || !text)
		return rc;
	if ((rc = opt_json_parse(out, text, strlen(text))) < 0)
		return opt_error_wrap(rc, "%s", a->where);
	return 1;
}

/* Read and check the next entry; an error is reported (exit status < 0). */
static int next_checked(struct cmd_args *s, json_t **out, const char *tail)
{
	int rc = next_entry(s, out);

	if (rc < 0)
		return -cmd_fail(s->c, rc, "%s%s", opt_error_last(), tail);
	if (rc == 0)
		return 0;
	if (opt_value_check(*out, "entry") < 0) {
		json_decref(*out);
		*out = NULL;
		return -cmd_fail(s->c, OPT_EINVAL, "%s: %s%s", s->where, opt_error_last(), tail);
	}
	return 1;
}

/* append --each: one transaction per entry (cmd_each), from the operands
 * or stdin. */
static int each_next(void *in, json_t **doc, char *where, size_t wlen)
{
	struct cmd_args *s = in;
	int rc = next_entry(s, doc);

	if (rc == 1)
		snprintf(where, wlen, "%s", s->where);
	return rc;
}

static int each_waiting(void *in)
{
	return cmd_args_waiting(in);
}

static int each_stage(struct cmd *c, void *arg, json_t *doc, const char *where, void *slot)
{
	struct append_ctx *a = slot;

	if (opt_value_check(doc, "entry") < 0)
		return opt_error_wrap(OPT_EINVAL, "%s", where);
	if (!(a->entries = json_pack("[O]", doc)))
		return opt_error_oom();
	return 0;
}

static int each_print(struct cmd *c, void *arg, const struct opt_txn_result *r, void *slot)
{
	return print_appended(c, arg, r->rev, 1, ((struct append_ctx *)slot)->count);
}

static void each_release(void *slot)
{
	json_decref(((struct append_ctx *)slot)->entries);
}

static int do_append(struct cmd *c)
{
	struct cmd_args s;
	struct append_ctx a = { NULL, 0 };
	struct opt_txn_opts o = { OPT_TYPE_DIARY, "opt-diary append", 0, 0 };
	struct opt_txn_result res;
	const char *name;
	json_t *v;
	int st, rc;

	if ((st = need_name(c, &name)))
		return st;
	cmd_args_init(&s, c, 1);
	/* no entry operand: stdin */
	s.from_stdin = c->npos == 1;
	if (opt.each) {
		struct cmd_each e = { 0 };
		e.next = each_next;
		e.waiting = each_waiting;
		e.in = &s;
		e.coll = name;
		e.opts = o;
		e.fn = append_fn;
		e.slot_size = sizeof(struct append_ctx);
		e.max = EACH_GROUP_MAX;
		e.stage = each_stage;
		e.print = each_print;
		e.release = each_release;
		e.arg = (void *)name;
		if ((st = cmd_store(c, 1)) == 0)
			st = cmd_each(c, &e);
		goto done;
	}
	/* one transaction: every entry is read and checked before anything
	 * is written */
	a.entries = json_array();
	if (!a.entries) {
		st = cmd_fail(c, OPT_EIO, "out of memory");
		goto done;
	}
	while ((rc = next_checked(&s, &v, " (nothing written)")) == 1)
		json_array_append_new(a.entries, v);
	if (rc < 0) {
		st = -rc;
		goto done;
	}
	if ((st = cmd_store(c, 1)))
		goto done;
	if ((rc = opt_txn_run(c->store, name, append_fn, &a, &o, &res)) < 0) {
		st = cmd_lib_fail(c, rc);
		goto done;
	}
	st = print_appended(c, name, res.rev, json_array_size(a.entries), a.count);
done:
	cmd_args_free(&s);
	json_decref(a.entries);
	return st;
}

/* ---- read ---- */

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

/* --follow ends cleanly on these signals, and on a closed pipe. */
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
		/* a signal ignored at start (nohup, a background job) stays so */
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			continue;
		sigaction(sigs[i], &sa, NULL);
	}
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

struct reader {
	struct cmd *c;
	long limit;                 /* entries still to print; <0 no limit */
	int forward;
	int follow;
	struct opt_diary_pos pos;   /* the last entry printed */
	int have_pos;
};

/* The entries from the oldest, printed as stored (compact output). */
static int read_text(struct reader *r, struct opt_snap *snap)
{
	struct cmd *c = r->c;
	struct opt_diary_text *it = NULL;
	const char *s;
	size_t n;
	int rc;

	if ((rc = opt_diary_text_open(&it, snap)) < 0)
		return cmd_lib_fail(c, rc);
	while (!stop_signal && (rc = opt_diary_text_next(it, &s, &n)) == 1) {
		if (fwrite(s, 1, n, stdout) != n || putchar('\n') == EOF) {
			opt_diary_text_free(it);
			return out_fail(c);
		}
		if (r->limit > 0 && --r->limit == 0)
			break;
	}
	opt_diary_text_free(it);
	return rc < 0 ? cmd_lib_fail(c, rc) : 0;
}

/* Print the entries of snap's diary: all of them, or (with a remembered
 * position, forward only) those after the last one printed. */
static int read_entries(struct reader *r, struct opt_snap *snap)
{
	struct cmd *c = r->c;
	struct opt_diary_iter *it = NULL;
	const json_t *e;
	int rc, st = 0;

	if (r->limit == 0)
		return 0;
	if (!r->have_pos && r->forward && !r->follow && !c->pretty)
		return read_text(r, snap);
	if (r->have_pos)
		rc = opt_diary_iter_open_after(&it, snap, &r->pos);
	else
		rc = opt_diary_iter_open(&it, snap, r->forward);
	if (rc < 0)
		return cmd_lib_fail(c, rc);
	while (!stop_signal && (rc = opt_diary_iter_next(it, &e)) == 1) {
		if ((st = print_entry(c, e)))
			break;
		if (r->follow) {
			/* where the next poll goes on from */
			if ((rc = opt_diary_iter_pos(it, &r->pos)) < 0) {
				st = cmd_lib_fail(c, rc);
				break;
			}
			r->have_pos = 1;
		}
		if (r->limit > 0 && --r->limit == 0)
			break;
	}
	if (rc < 0 && !st)
		st = cmd_lib_fail(c, rc);
	opt_diary_iter_free(it);
	if (!st && r->follow && fflush(stdout) == EOF)
		st = out_fail(c);
	return st;
}

/* --follow: poll the latest revision; print what each new one added. */
static int follow(struct reader *r, const char *name, long rev)
{
	struct cmd *c = r->c;
	struct pollfd out = { 1, 0, 0 };
	struct opt_snap *snap;
	int st = 0, rc;

	while (!stop_signal && r->limit != 0) {
		/* the wait; a closed pipe on stdout (POLLERR) ends it at once */
		rc = poll(&out, 1, FOLLOW_POLL_MS);
		if (rc > 0 && (out.revents & (POLLERR | POLLHUP | POLLNVAL)))
			break;
		if (stop_signal)
			break;
		if ((st = open_diary(c, name, 0, &snap)))
			break;
		if (opt_snap_rev(snap) != rev) {
			rev = opt_snap_rev(snap);
			st = read_entries(r, snap);
		}
		opt_snap_free(snap);
		if (st)
			break;
	}
	return st;
}

static int do_read(struct cmd *c)
{
	struct reader r;
	struct opt_snap *snap = NULL;
	const char *name;
	long limit, rev;
	int st;

	memset(&r, 0, sizeof(r));
	r.c = c;
	r.follow = opt.follow;
	r.forward = !opt.reverse;
	if (r.follow && !r.forward)
		return cmd_usage(c, "--follow cannot be used with --reverse");
	if (r.follow && opt.rev)
		return cmd_usage(c, "--follow cannot be used with --rev (an old revision never changes)");
	if ((st = need_name(c, &name)))
		return st;
	if (c->npos > 1)
		return cmd_usage(c, "too many arguments");
	if ((st = cmd_long(c, &opt.limit, -1, 0, &limit)) || (st = cmd_long(c, &opt.rev, 0, 1, &rev)))
		return st;
	r.limit = limit;
	if ((st = cmd_store(c, 0)) || (st = open_diary(c, name, rev, &snap)))
		return st;
	if (r.follow) {
		follow_signals();
		quiet_epipe = 1;
	}
	st = read_entries(&r, snap);
	rev = opt_snap_rev(snap);
	opt_snap_free(snap);
	if (!st && r.follow)
		st = follow(&r, name, rev);
	/* the reader of a --follow went away: its end, not an error */
	if (pipe_gone)
		st = 0;
	return st;
}

/* ---- count ---- */

static int do_count(struct cmd *c)
{
	struct opt_snap *snap = NULL;
	const char *name;
	size_t n;
	long rev;
	int st, rc;

	if ((st = need_name(c, &name)))
		return st;
	if (c->npos > 1)
		return cmd_usage(c, "too many arguments");
	if ((st = cmd_long(c, &opt.rev, 0, 1, &rev)))
		return st;
	if ((st = cmd_store(c, 0)) || (st = open_diary(c, name, rev, &snap)))
		return st;
	rc = opt_diary_count(snap, &n);
	opt_snap_free(snap);
	if (rc < 0)
		return cmd_lib_fail(c, rc);
	if (printf("%zu\n", n) < 0)
		return out_fail(c);
	return 0;
}

/* ---- ls ---- */

static int do_ls(struct cmd *c)
{
	json_t *names = NULL;
	size_t i;
	int st, rc;

	if (c->npos)
		return cmd_usage(c, "ls takes no operands");
	if ((st = cmd_store(c, 0)))
		return st;
	if ((rc = opt_store_list(c->store, &names)) < 0)
		return cmd_lib_fail(c, rc);
	for (i = 0; i < json_array_size(names) && !st; i++) {
		const char *name = json_string_value(json_array_get(names, i));
		struct opt_snap *snap;
		const char *kind;
		size_t n;
		json_t *o;

		if ((rc = opt_snap_open(&snap, c->store, name, 0)) < 0) {
			st = cmd_lib_fail(c, rc);
			break;
		}
		if ((rc = opt_coll_kind(snap, &kind)) < 0 ||
		    (strcmp(kind, "diary") == 0 && (rc = opt_diary_count(snap, &n)) < 0)) {
			opt_snap_free(snap);
			st = cmd_lib_fail(c, rc);
			break;
		}
		if (strcmp(kind, "diary") == 0) {
			o = json_pack("{s:s,s:I,s:I}", "collection", name, "count", (json_int_t)n,
				      "rev", (json_int_t)opt_snap_rev(snap));
			st = print_json(c, o);
			json_decref(o);
		}
		opt_snap_free(snap);
	}
	json_decref(names);
	return st;
}

static const struct cmd_verb verbs[] = {
	{ "append", do_append, "NAME [--each] [JSON...]", "append entries (operands, else stdin) in one transaction", opts_append, 1 },
	{ "read", do_read, "NAME [--reverse] [--limit N] [--follow] [--rev N]", "print the entries, oldest first", opts_read, 0 },
	{ "count", do_count, "NAME [--rev N]", "print the number of entries", opts_count, 0 },
	{ "ls", do_ls, "", "list the diaries: {collection, count, rev} lines", opts_none, 0 },
	{ NULL, NULL, NULL, NULL, NULL, 0 },
};

static const struct cmd_prog prog = {
	"opt-diary",
	"Diary collections of optimystic: append-only logs of JSON entries, kept\n"
	"in a chain of blocks; every append is a transaction.",
	verbs,
};

int main(int argc, char **argv)
{
	return cmd_main(&prog, argc, argv);
}
