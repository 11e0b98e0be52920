#include "common.h"

#include <dlfcn.h>

#include <errno.h>
#include <limits.h>
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
	{ "store", 'C', "DIR", "the store (default: $OPT_STORE, else the nearest .opt upward)" },
	{ "pretty", 0, NULL, "indented JSON output (the default on a terminal)" },
	{ "compact", 0, NULL, "JSON Lines output (the default elsewhere)" },
	{ "quiet", 'q', NULL, "only what changed or failed: no notes, progress or nothing-to-do records" },
	{ "help", 'h', NULL, "show this help" },
	{ "version", 0, NULL, "show the version" },
	{ NULL, 0, NULL, NULL },
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

static void verb_usage(const struct cmd_prog *p, const struct cmd_verb *v, FILE *f)
{
	fprintf(f, "usage: %s %s %s\n", p->name, v->name, v->synopsis);
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

const char *cmd_get(struct cmd *c, const char *lng)
{
	int i;

	for (i = 0; c->verb->opts && c->verb->opts[i].lng; i++)
		if (strcmp(c->verb->opts[i].lng, lng) == 0)
			return c->val[i];
	return NULL;
}

int cmd_flag(struct cmd *c, const char *lng)
{
	return cmd_get(c, lng) != NULL;
}

int cmd_long(struct cmd *c, const char *lng, long def, long min, long *out)
{
	const char *v = cmd_get(c, lng);
	char *end;
	long n;

	*out = def;
	if (!v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < min)
		return cmd_usage(c, "--%s needs a whole number >= %ld, not '%s'", lng, min, v);
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

int cmd_usage(struct cmd *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(c, OPT_EXIT_USAGE, fmt, ap);
	va_end(ap);
	if (c->verb)
		verb_usage(c->prog, c->verb, err_file(c));
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

int cmd_json_arg(struct cmd *c, const char *text, const char *what, json_t **out)
{
	json_error_t err;

	*out = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
	if (!*out)
		return cmd_usage(c, "%s is not valid JSON (%s): %s", what, err.text, text);
	return 0;
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
		return cmd_fail(c, OPT_EIO, "no store at '%s' (opt-block init %s creates one)", dir, dir);
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

static int finish(struct cmd *c, int st)
{
	if (fflush(stdout) == EOF || ferror(stdout) || c->out_err) {
		fprintf(stderr, "%s: cannot write output: %s\n", c->prog->name, strerror(errno ? errno : EIO));
		if (st == 0)
			st = OPT_EXIT_OTHER;
	}
	opt_store_free(c->store);
	c->store = NULL;
	return st;
}

int cmd_main(const struct cmd_prog *p, int argc, char **argv)
{
	struct cmd c;
	const struct cmd_verb *v;
	const char *inl;
	char **pos;
	int i, dashdash = 0, help = 0, st;

	memset(&c, 0, sizeof(c));
	c.prog = p;
	c.pretty = isatty(1);
	pos = calloc((size_t)argc + 1, sizeof(*pos));
	if (!pos) {
		fprintf(stderr, "%s: out of memory\n", p->name);
		return OPT_EXIT_OTHER;
	}
	/* hidden: --complete [VERB] lists words for shell completion */
	if (argc >= 2 && strcmp(argv[1], "--complete") == 0) {
		complete(p, argc >= 3 ? argv[2] : NULL);
		free(pos);
		return 0;
	}
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		int oi;

		if (dashdash || a[0] != '-' || a[1] == '\0') {
			if (!c.verb) {
				for (v = p->verbs; v->name; v++)
					if (strcmp(v->name, a) == 0)
						break;
				if (!v->name) {
					const char *near = nearest_verb(p, a);
					if (near)
						fprintf(stderr, "%s: unknown command '%s' (did you mean '%s'?)\n", p->name, a,
							near);
					else
						fprintf(stderr, "%s: unknown command '%s'\n", p->name, a);
					fprintf(stderr, "Run '%s --help' for the list of commands.\n", p->name);
					free(pos);
					return OPT_EXIT_USAGE;
				}
				c.verb = v;
				continue;
			}
			pos[c.npos++] = argv[i];
			continue;
		}
		if (strcmp(a, "--") == 0) {
			dashdash = 1;
			continue;
		}
		if (c.verb && (oi = match(c.verb->opts, a, &inl)) >= 0) {
			const struct cmd_opt *o = &c.verb->opts[oi];
			if (o->arg) {
				if (!inl) {
					if (i + 1 >= argc) {
						free(pos);
						st = cmd_usage(&c, "option --%s needs a value (%s)", o->lng, o->arg);
						return st;
					}
					inl = argv[++i];
				}
				c.val[oi] = inl;
			} else {
				if (inl && a[1] == '-') {
					free(pos);
					return cmd_usage(&c, "option --%s takes no value", o->lng);
				}
				c.val[oi] = "1";
			}
			continue;
		}
		oi = match(common_opts, a, &inl);
		switch (oi) {
		case 0:
			if (!inl) {
				if (i + 1 >= argc) {
					free(pos);
					return cmd_usage(&c, "option --store needs a directory");
				}
				inl = argv[++i];
			}
			c.store_dir = inl;
			continue;
		case 1: c.pretty = 1; continue;
		case 2: c.pretty = 0; continue;
		case 3: c.quiet = 1; continue;
		case 4: help = 1; continue;
		case 5:
			printf("%s %s\n", p->name, OPT_VERSION);
			free(pos);
			return 0;
		default:
			break;
		}
		free(pos);
		if (c.verb)
			return cmd_usage(&c, "unknown option '%s'", a);
		fprintf(stderr, "%s: unknown option '%s'\n", p->name, a);
		prog_help(p, stderr);
		return OPT_EXIT_USAGE;
	}
	if (help) {
		if (c.verb)
			verb_help(p, c.verb, stdout);
		else
			prog_help(p, stdout);
		free(pos);
		return finish(&c, 0);
	}
	if (!c.verb) {
		fprintf(stderr, "%s: no command given\n", p->name);
		prog_help(p, stderr);
		free(pos);
		return OPT_EXIT_USAGE;
	}
	c.pos = pos;
	st = c.verb->fn(&c);
	st = finish(&c, st);
	free(pos);
	return st;
}
