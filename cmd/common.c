#include "common.h"

#include <dlfcn.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Start-up: git_libgit2_init parses the whole system CA bundle (about 5 ms
 * of a 9 ms floor) although only an https peer needs it.  These two
 * definitions take the place of mbedtls's for libgit2 (the executable's
 * symbols come first): they do nothing until cmd_tls_enable() says TLS is
 * wanted, then they forward to the real ones. */
static int tls_wanted;

int mbedtls_x509_crt_parse_file(void *chain, const char *path);
int mbedtls_x509_crt_parse_path(void *chain, const char *path);

int mbedtls_x509_crt_parse_file(void *chain, const char *path)
{
	int (*real)(void *, const char *);

	if (!tls_wanted)
		return 0;
	real = (int (*)(void *, const char *))dlsym(RTLD_NEXT, "mbedtls_x509_crt_parse_file");
	return real ? real(chain, path) : -1;
}

int mbedtls_x509_crt_parse_path(void *chain, const char *path)
{
	int (*real)(void *, const char *);

	if (!tls_wanted)
		return 0;
	real = (int (*)(void *, const char *))dlsym(RTLD_NEXT, "mbedtls_x509_crt_parse_path");
	return real ? real(chain, path) : -1;
}

void cmd_tls_enable(void)
{
	tls_wanted = 1;
}

static const struct cmd_opt common_opts[] = {
	{ "store", 'C', "DIR", "the store (default: $OPT_STORE, else the nearest .opt upward)", NULL, NULL },
	{ "pretty", 0, NULL, "indented JSON output (the default on a terminal)", NULL, NULL },
	{ "compact", 0, NULL, "JSON Lines output (the default elsewhere)", NULL, NULL },
	{ "quiet", 'q', NULL, "only what changed or failed: no notes, progress or nothing-to-do records", NULL, NULL },
	{ "help", 'h', NULL, "show this help", NULL, NULL },
	{ "version", 0, NULL, "show the version", NULL, NULL },
	CMD_OPT_END,
};

/* --help is at most HELP_WIDTH columns wide: text is wrapped at spaces
 * (in a synopsis, only at spaces outside brackets, so "[--min N]" stays
 * whole) into lines that go on at a fixed column. */
#define HELP_WIDTH 80

/* Print text starting at column col, wrapping at HELP_WIDTH; continuation
 * lines start at column indent.  Ends the last line. */
static void wrap(FILE *f, const char *text, int col, int indent, int keep_groups)
{
	const char *p = text;

	while (*p) {
		const char *w = p, *e;
		int depth = 0, len;

		/* the next word: up to a space outside brackets */
		for (e = w; *e && (*e != ' ' || (keep_groups && depth > 0)); e++) {
			if (*e == '[' || *e == '{' || *e == '(')
				depth++;
			else if ((*e == ']' || *e == '}' || *e == ')') && depth > 0)
				depth--;
		}
		len = (int)(e - w);
		if (w != text) {
			if (col + 1 + len > HELP_WIDTH && col > indent) {
				fprintf(f, "\n%*s", indent, "");
				col = indent;
			} else {
				fputc(' ', f);
				col++;
			}
		}
		fwrite(w, 1, (size_t)len, f);
		col += len;
		p = e;
		while (*p == ' ')
			p++;
	}
	fputc('\n', f);
}

/* Two columns: left (at column 2) and text (at column at, wrapped); a left
 * part that reaches column at puts the text on the next line. */
static void two_columns(FILE *f, const char *left, int at, const char *text, int keep_groups)
{
	int n = (int)strlen(left);

	fprintf(f, "  ");
	if (2 + n + 1 > at) {
		wrap(f, left, 2, 6, keep_groups);
		fprintf(f, "%*s", at, "");
	} else {
		fprintf(f, "%s%*s", left, at - 2 - n, "");
	}
	wrap(f, text, at, at, 0);
}

static void print_opts(FILE *f, const struct cmd_opt *o)
{
	for (; o && o->lng; o++) {
		char left[80];
		if (o->shrt)
			snprintf(left, sizeof(left), "-%c, --%s%s%s", o->shrt, o->lng, o->arg ? " " : "",
				 o->arg ? o->arg : "");
		else
			snprintf(left, sizeof(left), "    --%s%s%s", o->lng, o->arg ? " " : "", o->arg ? o->arg : "");
		two_columns(f, left, 29, o->help, 0);
	}
}

static void prog_help(const struct cmd_prog *p, FILE *f)
{
	const struct cmd_verb *v;

	fprintf(f, "usage: %s COMMAND [OPTIONS] [ARGS]\n\n%s\n\ncommands:\n", p->name, p->summary);
	for (v = p->verbs; v->name; v++) {
		char left[400];
		snprintf(left, sizeof(left), "%s %s", v->name, v->synopsis);
		two_columns(f, left, 36, v->summary, 1);
	}
	fprintf(f, "\ncommon options:\n");
	print_opts(f, common_opts);
	{
		char tail[200];
		snprintf(tail, sizeof(tail), "Run '%s COMMAND --help' for the options of a command; 'man %s' for more.",
			 p->name, p->name);
		fputc('\n', f);
		wrap(f, tail, 0, 0, 0);
	}
}

/* The usage line of --help, wrapped: its lines go on under the first
 * operand, as git's do. */
static void verb_usage_wrapped(const struct cmd_prog *p, const struct cmd_verb *v, FILE *f)
{
	int col = fprintf(f, "usage: %s %s ", p->name, v->name);

	wrap(f, v->synopsis, col, col, 1);
}

static void verb_help(const struct cmd_prog *p, const struct cmd_verb *v, FILE *f)
{
	verb_usage_wrapped(p, v, f);
	fprintf(f, "\n");
	wrap(f, v->summary, 0, 0, 0);
	if (v->opts && v->opts->lng) {
		fprintf(f, "\noptions:\n");
		print_opts(f, v->opts);
	}
	fprintf(f, "\ncommon options:\n");
	print_opts(f, common_opts);
}

static void complete(const struct cmd_prog *p, const char *verb)
{
	const struct cmd_verb *v;
	const struct cmd_opt *o;

	if (!verb) {
		for (v = p->verbs; v->name; v++)
			printf("%s\n", v->name);
		for (o = common_opts; o->lng; o++)
			printf("--%s\n", o->lng);
		return;
	}
	for (v = p->verbs; v->name; v++) {
		if (strcmp(v->name, verb))
			continue;
		for (o = v->opts; o && o->lng; o++)
			printf("--%s%s\n", o->lng, o->arg ? "=" : "");
		for (o = common_opts; o->lng; o++)
			printf("--%s%s\n", o->lng, o->arg ? "=" : "");
	}
}

/* Edit distance between a and b (insertions, deletions, substitutions and
 * swaps of two neighbours count 1), at most 32 characters each; more is
 * "far" (99). */
static int distance(const char *a, const char *b)
{
	int d[33][33];
	size_t la = strlen(a), lb = strlen(b), i, j;

	if (la > 32 || lb > 32)
		return 99;
	for (i = 0; i <= la; i++)
		d[i][0] = (int)i;
	for (j = 0; j <= lb; j++)
		d[0][j] = (int)j;
	for (i = 1; i <= la; i++)
		for (j = 1; j <= lb; j++) {
			int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	return d[la][lb];
}

/* The command nearest to the mistyped word w, as git's "did you mean":
 * at most 2 edits away, and fewer edits than the command has letters;
 * NULL when none is. */
static const char *nearest_verb(const struct cmd_prog *p, const char *w)
{
	const struct cmd_verb *v;
	const char *best = NULL;
	int bd = 3;

	for (v = p->verbs; v->name; v++) {
		int d = distance(w, v->name);
		if (d < bd && d < (int)strlen(v->name)) {
			bd = d;
			best = v->name;
		}
	}
	return best;
}

/* Match argument a against table t; returns the index or -1; *inl gets an
 * inline value ("--x=v", "-xv"). */
static int match(const struct cmd_opt *t, const char *a, const char **inl)
{
	int i;

	*inl = NULL;
	for (i = 0; t && t[i].lng; i++) {
		if (a[1] == '-') {
			size_t n = strlen(t[i].lng);
			if (strncmp(a + 2, t[i].lng, n) == 0 && (a[2 + n] == '\0' || a[2 + n] == '=')) {
				if (a[2 + n] == '=')
					*inl = a + 3 + n;
				return i;
			}
		} else if (t[i].shrt && a[1] == t[i].shrt) {
			if (a[2])
				*inl = a + 2;
			return i;
		}
	}
	return -1;
}

int cmd_long(struct cmd *c, const char *const *val, long def, long min, long *out)
{
	const struct cmd_opt *o;
	const char *v = *val;
	char *end;
	long n;

	*out = def;
	if (!v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < min) {
		/* the row that binds val names the option */
		for (o = c->verb->opts; o->lng && o->val != val; o++)
			;
		return cmd_usage(c, "--%s needs a whole number >= %ld, not '%s'", o->lng ? o->lng : "?", min,
				 opt_esc(v));
	}
	*out = n;
	return 0;
}

static FILE *err_file(const struct cmd *c)
{
	return c->err ? c->err : stderr;
}

static int vfail(struct cmd *c, int status, const char *fmt, va_list ap)
{
	fprintf(err_file(c), "%s: ", c->prog->name);
	vfprintf(err_file(c), fmt, ap);
	fputc('\n', err_file(c));
	return status;
}

int cmd_fail(struct cmd *c, int code, const char *fmt, ...)
{
	va_list ap;
	int st;

	va_start(ap, fmt);
	st = vfail(c, opt_exit_status(code), fmt, ap);
	va_end(ap);
	return st;
}

int cmd_lib_fail(struct cmd *c, int code)
{
	fprintf(err_file(c), "%s: %s\n", c->prog->name, opt_error_last());
	return opt_exit_status(code);
}

/* A usage error is one line: the message and, on the same line, where
 * the usage is: "prog: MESSAGE; try 'prog VERB --help'". */
static int usage_line(struct cmd *c, const char *fmt, va_list ap)
{
	FILE *f = err_file(c);

	fprintf(f, "%s: ", c->prog->name);
	vfprintf(f, fmt, ap);
	if (c->verb)
		fprintf(f, "; try '%s %s --help'\n", c->prog->name, c->verb->name);
	else
		fprintf(f, "; try '%s --help'\n", c->prog->name);
	return OPT_EXIT_USAGE;
}

int cmd_usage(struct cmd *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	usage_line(c, fmt, ap);
	va_end(ap);
	return OPT_EXIT_USAGE;
}

void cmd_note(struct cmd *c, const char *fmt, ...)
{
	va_list ap;

	if (c->quiet)
		return;
	va_start(ap, fmt);
	vfail(c, 0, fmt, ap);
	va_end(ap);
}

int cmd_progress_ok(struct cmd *c)
{
	return !c->quiet && isatty(2);
}

int cmd_line_operand(char *line, size_t n, char **dec, size_t *cap, const char **s, size_t *len)
{
	size_t a = 0, b = n, i;
	json_t *v;
	int plain = 1;

	*s = line;
	*len = n;
	while (a < b && (line[a] == ' ' || line[a] == '\t'))
		a++;
	while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t' || line[b - 1] == '\r'))
		b--;
	if (b - a < 2 || line[a] != '"' || line[b - 1] != '"')
		return 0;
	for (i = a + 1; i + 1 < b && plain; i++)
		if (line[i] == '"' || line[i] == '\\' || (unsigned char)line[i] < 0x20)
			plain = 0;
	if (plain) {
		/* the common case, "abc": the bytes between the quotes */
		line[b - 1] = '\0';
		*s = line + a + 1;
		*len = b - a - 2;
		return 0;
	}
	/* escapes: let the JSON parser decide whether it is one string */
	v = json_loadb(line + a, b - a, JSON_DECODE_ANY, NULL);
	if (json_is_string(v)) {
		size_t l = json_string_length(v);
		if (OPT_ALLOC_GROW(*dec, l + 1, *cap) < 0) {
			json_decref(v);
			return OPT_EIO;
		}
		memcpy(*dec, json_string_value(v), l + 1);
		*s = *dec;
		*len = l;
	}
	json_decref(v);
	return 0;
}

void cmd_args_init(struct cmd_args *a, struct cmd *c, int from)
{
	memset(a, 0, sizeof(*a));
	a->c = c;
	a->i = from;
}

void cmd_args_free(struct cmd_args *a)
{
	free(a->buf);
	free(a->dec);
	a->buf = a->dec = NULL;
	opt_jsonl_free(a->in);
	a->in = NULL;
}

int cmd_args_expand(struct cmd *c, int from)
{
	struct cmd_args a;
	const char *s;
	size_t len, n = 0, cap = 0;
	int i, rc = 0;

	for (i = from; i < c->npos && strcmp(c->pos[i], "-") != 0; i++)
		;
	if (i == c->npos || c->expanded)
		return 0;
	/* every operand is copied: the array owns what it holds */
	cmd_args_init(&a, c, 0);
	for (;;) {
		if (OPT_ALLOC_GROW(c->expanded, n + 2, cap) < 0) {
			rc = -cmd_lib_fail(c, OPT_EIO);
			break;
		}
		c->expanded[n] = NULL;
		/* operands before `from` are taken as they are */
		if (a.i < from && !a.from_stdin) {
			s = c->pos[a.i++];
			rc = 1;
		} else if ((rc = cmd_args_next(&a, &s, &len)) != 1) {
			break;
		}
		if (!(c->expanded[n] = strdup(s))) {
			rc = -cmd_lib_fail(c, opt_error_oom());
			break;
		}
		n++;
	}
	cmd_args_free(&a);
	if (!c->expanded)
		return -rc;
	c->expanded[n] = NULL;
	if (rc < 0)
		return -rc;
	c->pos = c->expanded;
	c->npos = (int)n;
	return 0;
}

int cmd_args_next(struct cmd_args *a, const char **s, size_t *len)
{
	for (;;) {
		if (a->from_stdin) {
			ssize_t n = getline(&a->buf, &a->cap, stdin);
			if (n < 0) {
				a->from_stdin = 0;
				if (ferror(stdin))
					return -cmd_fail(a->c, OPT_EIO, "cannot read standard input: %s", strerror(errno));
				continue;
			}
			a->line++;
			if (n > 0 && a->buf[n - 1] == '\n')
				a->buf[--n] = '\0';
			if (cmd_line_operand(a->buf, (size_t)n, &a->dec, &a->deccap, s, len) < 0)
				return -cmd_lib_fail(a->c, OPT_EIO);
			return 1;
		}
		if (a->i >= a->c->npos)
			return 0;
		if (strcmp(a->c->pos[a->i], "-") == 0) {
			a->i++;
			a->from_stdin = 1;
			continue;
		}
		*s = a->c->pos[a->i++];
		*len = strlen(*s);
		return 1;
	}
}

int cmd_args_next_json(struct cmd_args *a, const char **s, json_t **v)
{
	int rc;

	*s = NULL;
	*v = NULL;
	for (;;) {
		if (a->from_stdin) {
			if (!a->in && (rc = opt_jsonl_open(&a->in, stdin)) < 0)
				return rc;
			if ((rc = opt_jsonl_next(a->in, v)) == 1) {
				snprintf(a->where, sizeof(a->where), "line %ld", opt_jsonl_line(a->in));
				return 1;
			}
			a->from_stdin = 0;
			if (rc < 0)
				return rc;
			continue;
		}
		if (a->i >= a->c->npos)
			return 0;
		if (strcmp(a->c->pos[a->i], "-") == 0) {
			a->i++;
			a->from_stdin = 1;
			continue;
		}
		snprintf(a->where, sizeof(a->where), "argument %d", a->i);
		*s = a->c->pos[a->i++];
		return 1;
	}
}

int cmd_args_waiting(struct cmd_args *a)
{
	struct pollfd p = { 0, POLLIN, 0 };

	if (!a->from_stdin)
		return a->i < a->c->npos;
	if (a->in && opt_jsonl_buffered(a->in))
		return 1;
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP));
}

int cmd_json_arg(struct cmd *c, const char *text, const char *what, json_t **out)
{
	json_error_t err;

	*out = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
	if (*out && opt_json_underflow(*out, text, strlen(text), err.text, sizeof(err.text))) {
		json_decref(*out);
		*out = NULL;
	}
	if (!*out)
		return cmd_usage(c, "%s is not valid JSON (%s): %s", what, opt_esc(err.text), opt_esc(text));
	return 0;
}

/* ---- --each ---- */

/* The default input of cmd_each: JSON values from an opt_jsonl. */
static int jsonl_next(void *in, json_t **doc, char *where, size_t wlen)
{
	int rc = opt_jsonl_next(in, doc);

	if (rc == 1)
		snprintf(where, wlen, "line %ld", opt_jsonl_line(in));
	return rc;
}

/* More of stdin ready now (buffered, or readable without waiting)? */
static int jsonl_waiting(void *in)
{
	struct pollfd p = { 0, POLLIN, 0 };

	if (opt_jsonl_buffered(in))
		return 1;
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP));
}

struct each_run {
	struct cmd *c;
	struct cmd_each *e;
	struct opt_txn_group *g;  /* NULL: every stage commits on its own */
	char *slots;
	json_t **docs;
	size_t k;                 /* documents staged */
};

static void *slot_at(struct each_run *r, size_t i)
{
	return r->slots + i * r->e->slot_size;
}

/* Forget the staged documents (and the group's transactions). */
static void each_forget(struct each_run *r)
{
	size_t i;

	for (i = 0; i < r->k; i++) {
		if (r->e->release)
			r->e->release(slot_at(r, i));
		json_decref(r->docs[i]);
	}
	r->k = 0;
	if (r->g)
		opt_txn_group_clear(r->g);
}

/* Commit what is staged, and print the records of the transactions the
 * flush made durable: those and no other.  0 or an exit status (after
 * the message). */
static int each_flush(struct each_run *r)
{
	const struct opt_txn_result *res = NULL;
	size_t i;
	int n, st = 0;

	if (r->k == 0)
		return 0;
	n = r->g ? opt_txn_group_flush(r->g) : (int)r->k;
	if (n < 0) {
		st = cmd_lib_fail(r->c, n);
		each_forget(r);
		return st;
	}
	for (i = 0; i < r->k && !st; i++) {
		if (r->g && !(res = opt_txn_group_result(r->g, i)))
			continue;  /* not durable: no record */
		st = r->e->print(r->c, r->e->arg, res, slot_at(r, i));
	}
	if (fflush(stdout) == EOF && !st) {
		r->c->out_err = 1;
		st = OPT_EXIT_OTHER;
	}
	if (!st && (size_t)n != r->k)
		st = cmd_fail(r->c, OPT_EIO, "group commit on '%s' made %d of %zu transactions durable", r->e->coll, n,
			      r->k);
	each_forget(r);
	return st;
}

int cmd_each(struct cmd *c, struct cmd_each *e)
{
	struct each_run r = { c, e, NULL, NULL, NULL, 0 };
	int (*next)(void *, json_t **, char *, size_t) = e->next ? e->next : jsonl_next;
	int (*waiting)(void *) = e->waiting ? e->waiting : jsonl_waiting;
	size_t max = e->coll ? (e->max ? e->max : 256) : 1;
	char where[64], msg[1024];
	json_t *doc;
	int got, rc, st = 0, bad = 0;

	e->ndocs = 0;
	r.slots = calloc(max, e->slot_size ? e->slot_size : 1);
	r.docs = calloc(max, sizeof(*r.docs));
	if (!r.slots || !r.docs) {
		st = cmd_fail(c, OPT_EIO, "out of memory");
		goto done;
	}
	if (e->coll && (rc = opt_txn_group_new(&r.g, c->store, e->coll, &e->opts)) < 0) {
		st = cmd_lib_fail(c, rc);
		goto done;
	}
	for (;;) {
		where[0] = '\0';
		got = next(e->in, &doc, where, sizeof(where));
		if (got == 1) {
			void *slot = slot_at(&r, r.k);
			e->ndocs++;
			memset(slot, 0, e->slot_size);
			rc = e->stage(c, e->arg, doc, where, slot);
			if (rc == 0 && r.g && (rc = opt_txn_group_add(r.g, e->fn, slot, NULL)) < 0 && e->release)
				e->release(slot);
			if (rc < 0) {
				json_decref(doc);
				bad = rc;
			} else {
				r.docs[r.k++] = doc;
			}
		} else if (got < 0) {
			bad = got;
		}
		/* the bad document's message waits for the records of the
		 * transactions before it */
		if (bad)
			snprintf(msg, sizeof(msg), "%s", opt_error_last());
		if (r.k == max || got <= 0 || bad || !waiting(e->in))
			if ((st = each_flush(&r)))
				break;
		if (got <= 0 || bad)
			break;
	}
	if (bad) {
		rc = cmd_fail(c, bad, "%s", msg);
		if (!st)
			st = rc;
	}
done:
	each_forget(&r);
	opt_txn_group_free(r.g);
	free(r.docs);
	free(r.slots);
	return st;
}

int cmd_store(struct cmd *c, int create)
{
	char *found = NULL;
	const char *dir = c->store_dir;
	int rc, created = 0;

	if (c->store)
		return 0;
	if (!dir)
		dir = getenv("OPT_STORE");
	if (dir && !*dir)
		dir = NULL;
	if (!dir) {
		rc = opt_store_discover(&found, ".");
		if (rc == OPT_ENOTFOUND && create) {
			rc = opt_store_create(&c->store, OPT_STORE_DIRNAME, &created);
			if (rc < 0)
				return cmd_lib_fail(c, OPT_EIO);
			cmd_note(c, "created store '%s'", OPT_STORE_DIRNAME);
			return 0;
		}
		if (rc < 0)
			return cmd_lib_fail(c, OPT_EIO);
		dir = found;
	}
	rc = opt_store_open(&c->store, dir);
	/* a store named explicitly (--store, -C, OPT_STORE) must exist: a
	 * typo must not make a new store somewhere; only the implicit ./.opt
	 * is created on the first write (opt-block init makes others) */
	if (rc == OPT_ENOTFOUND && !found)
		return cmd_fail(c, OPT_EIO, "no store at '%s' (opt-block init %s creates one)", opt_esc(dir), opt_esc(dir));
	free(found);
	/* every failure to open the store is exit 7, so that 1 keeps meaning
	 * "no such block/key/collection" */
	if (rc < 0)
		return cmd_lib_fail(c, OPT_EIO);
	return 0;
}

int cmd_print(struct cmd *c, const json_t *v)
{
	size_t flags = JSON_ENCODE_ANY | JSON_REAL_PRECISION(17);

	if (c->pretty)
		flags |= JSON_INDENT(2);
	else
		flags |= JSON_COMPACT;
	if (json_dumpf(v, stdout, flags) < 0 || fputc('\n', stdout) == EOF) {
		c->out_err = 1;
		return OPT_EXIT_OTHER;
	}
	return 0;
}

/* A new line at depth levels of two spaces. */
static int newline(struct opt_text *out, size_t depth)
{
	static const char spaces[32 + 1] = "                                ";
	size_t n = depth * 2;
	int rc = opt_text_add(out, "\n", 1);

	for (; rc == 0 && n > 0; n -= n < 32 ? n : 32)
		rc = opt_text_add(out, spaces, n < 32 ? n : 32);
	return rc;
}

static int is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* Indent JSON text as jansson's JSON_INDENT(2) does: "{" and "[" open a
 * level (empty ones stay "{}" and "[]"), members one a line, ": " after
 * names.  Strings, numbers and literals are copied as they are. */
static int indent_text(struct opt_text *out, const char *p, size_t n)
{
	size_t i, j, depth = 0;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		char ch = p[i];

		switch (ch) {
		case ' ': case '\t': case '\n': case '\r':
			break;
		case '"':
			for (j = i + 1; j < n && p[j] != '"'; j++)
				if (p[j] == '\\')
					j++;
			if (j >= n)
				return opt_error_set(OPT_EINVAL, "unterminated string in JSON text");
			rc = opt_text_add(out, p + i, j + 1 - i);
			i = j;
			break;
		case '{': case '[':
			for (j = i + 1; j < n && is_ws(p[j]); j++)
				;
			if (j < n && p[j] == (ch == '{' ? '}' : ']')) {
				rc = opt_text_add(out, ch == '{' ? "{}" : "[]", 2);
				i = j;
				break;
			}
			if ((rc = opt_text_add(out, &ch, 1)) == 0)
				rc = newline(out, ++depth);
			break;
		case '}': case ']':
			if (depth == 0)
				return opt_error_set(OPT_EINVAL, "unbalanced JSON text");
			if ((rc = newline(out, --depth)) == 0)
				rc = opt_text_add(out, &ch, 1);
			break;
		case ',':
			if ((rc = opt_text_add(out, ",", 1)) == 0)
				rc = newline(out, depth);
			break;
		case ':':
			rc = opt_text_add(out, ": ", 2);
			break;
		default:
			rc = opt_text_add(out, &ch, 1);
		}
	}
	return rc;
}

int cmd_print_text(struct cmd *c, const char *text, size_t len)
{
	struct opt_text t = { NULL, 0, 0 };
	int rc;

	if (!c->pretty) {
		if (fwrite(text, 1, len, stdout) != len || fputc('\n', stdout) == EOF) {
			c->out_err = 1;
			return OPT_EXIT_OTHER;
		}
		return 0;
	}
	if ((rc = indent_text(&t, text, len)) < 0 || (rc = opt_text_add(&t, "\n", 1)) < 0) {
		opt_text_free(&t);
		return cmd_lib_fail(c, rc);
	}
	rc = fwrite(t.p, 1, t.len, stdout) == t.len ? 0 : OPT_EXIT_OTHER;
	opt_text_free(&t);
	if (rc)
		c->out_err = 1;
	return rc;
}

int cmd_stdout_gone(void)
{
	struct pollfd p = { 1, POLLOUT, 0 };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
}

static int finish(struct cmd *c, int st)
{
	if (fflush(stdout) == EOF || ferror(stdout) || c->out_err) {
		/* the reader went away (head): exit 7, quietly, as head's users
		 * expect; any other failure to write is said */
		if (!cmd_stdout_gone())
			fprintf(stderr, "%s: cannot write output: %s\n", c->prog->name, strerror(errno ? errno : EIO));
		if (st == 0)
			st = OPT_EXIT_OTHER;
	}
	opt_store_free(c->store);
	c->store = NULL;
	if (c->expanded) {
		char **e;
		for (e = c->expanded; *e; e++)
			free(*e);
		free(c->expanded);
		c->expanded = NULL;
	}
	return st;
}

int cmd_sub_run(struct cmd *c, const struct cmd_sub *t)
{
	char list[200] = "", *l = list;
	const char *end = list + sizeof(list);
	size_t i, n;

	for (i = 0; c->npos && t[i].name; i++)
		if (strcmp(t[i].name, c->pos[0]) == 0)
			return t[i].fn(c);
	for (n = 0; t[n].name; n++)
		;
	if (!c->npos) {
		/* "add, rm or ls" */
		for (i = 0; i < n; i++)
			l += snprintf(l, (size_t)(end - l), "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", t[i].name);
		return cmd_usage(c, "%s needs %s", c->verb->name, list);
	}
	for (i = 0; i < n; i++)
		l += snprintf(l, (size_t)(end - l), "%s%s", i ? ", " : "", t[i].name);
	return cmd_usage(c, "unknown %s command '%s' (%s)", c->verb->name, opt_esc(c->pos[0]), list);
}

/* What take_operand and parse_args return to go on with the next argument. */
#define GO_ON (-1)

/* An operand: the first names the verb, the others are kept in pos.
 * GO_ON, or the exit status of a usage error. */
static int take_operand(struct cmd *c, const char *a, char **pos)
{
	const struct cmd_verb *v;
	const char *near;

	if (c->verb) {
		pos[c->npos++] = (char *)a;
		return GO_ON;
	}
	for (v = c->prog->verbs; v->name; v++)
		if (strcmp(v->name, a) == 0) {
			c->verb = v;
			return GO_ON;
		}
	if ((near = nearest_verb(c->prog, a)))
		return cmd_usage(c, "unknown command '%s' (did you mean '%s'?)", opt_esc(a), near);
	return cmd_usage(c, "unknown command '%s'", opt_esc(a));
}

/* Verb option o given as argument a (inline value inl, else the next
 * argument, argv[*i + 1]): store it where its row binds it. */
static int take_verb_opt(struct cmd *c, const struct cmd_opt *o, const char *a, const char *inl, int argc,
			 char **argv, int *i)
{
	if (!o->arg) {
		if (inl && a[1] == '-')
			return cmd_usage(c, "option --%s takes no value", o->lng);
		*o->flag = 1;
		return GO_ON;
	}
	if (!inl) {
		if (*i + 1 >= argc)
			return cmd_usage(c, "option --%s needs a value (%s)", o->lng, o->arg);
		inl = argv[++*i];
	}
	*o->val = inl;
	return GO_ON;
}

/* A common option (or an unknown one) as argument a. */
static int take_common_opt(struct cmd *c, const char *a, int argc, char **argv, int *i, int *help)
{
	const char *inl;

	switch (match(common_opts, a, &inl)) {
	case 0:
		if (!inl) {
			if (*i + 1 >= argc)
				return cmd_usage(c, "option --store needs a directory");
			inl = argv[++*i];
		}
		/* "-C $DIR" with DIR unset must not mean the nearest store */
		if (!*inl)
			return cmd_usage(c, "option --store needs a directory, not an empty string");
		c->store_dir = inl;
		return GO_ON;
	case 1: c->pretty = 1; return GO_ON;
	case 2: c->pretty = 0; return GO_ON;
	case 3: c->quiet = 1; return GO_ON;
	case 4: *help = 1; return GO_ON;
	case 5:
		printf("%s %s\n", c->prog->name, OPT_VERSION);
		return 0;
	default:
		return cmd_usage(c, "unknown option '%s'", opt_esc(a));
	}
}

/* Parse argv into c: the verb, its options (into the variables their
 * rows bind), the operands (into pos), the common options.  GO_ON to run
 * the verb, or the exit status to end with. */
static int parse_args(struct cmd *c, int argc, char **argv, char **pos, int *help)
{
	const char *inl;
	int i, oi, dashdash = 0, st = GO_ON;

	for (i = 1; i < argc && st == GO_ON; i++) {
		const char *a = argv[i];

		if (dashdash || a[0] != '-' || a[1] == '\0')
			st = take_operand(c, a, pos);
		else if (strcmp(a, "--") == 0)
			dashdash = 1;
		else if (c->verb && (oi = match(c->verb->opts, a, &inl)) >= 0)
			st = take_verb_opt(c, &c->verb->opts[oi], a, inl, argc, argv, &i);
		else
			st = take_common_opt(c, a, argc, argv, &i, help);
	}
	return st;
}

int cmd_main(const struct cmd_prog *p, int argc, char **argv)
{
	struct cmd c;
	char **pos;
	int help = 0, st;

	memset(&c, 0, sizeof(c));
	c.prog = p;
	c.pretty = isatty(1);
	/* a closed pipe on stdout is a write error (exit 7), not a signal */
	signal(SIGPIPE, SIG_IGN);
	pos = calloc((size_t)argc + 1, sizeof(*pos));
	if (!pos) {
		fprintf(stderr, "%s: out of memory\n", p->name);
		return OPT_EXIT_OTHER;
	}
	/* hidden: --complete [VERB] lists words for shell completion */
	if (argc >= 2 && strcmp(argv[1], "--complete") == 0) {
		complete(p, argc >= 3 ? argv[2] : NULL);
		st = 0;
		goto done;
	}
	if ((st = parse_args(&c, argc, argv, pos, &help)) != GO_ON)
		goto done;
	if (help) {
		if (c.verb)
			verb_help(p, c.verb, stdout);
		else
			prog_help(p, stdout);
		st = finish(&c, 0);
		goto done;
	}
	if (!c.verb) {
		st = cmd_usage(&c, "no command given");
		goto done;
	}
	c.pos = pos;
	st = c.verb->fn(&c);
	st = finish(&c, st);
done:
	free(pos);
	return st;
}
