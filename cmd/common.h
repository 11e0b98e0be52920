/* common.h - what every program shares: option tables that also make
 * --help and the completion word lists, verb dispatch, opening the store,
 * JSON output, and error reporting with the shared exit statuses. */
#ifndef OPT_CMD_COMMON_H
#define OPT_CMD_COMMON_H

#include <jansson.h>
#include <stdio.h>

#include "opt.h"
#include "txn.h"

/* An option row binds its target: an option with an argument stores its
 * value in *val (left NULL when the option is not given), a flag sets
 * *flag to 1.  A program keeps its option values in variables of its own
 * (a verb reads them, never looks an option up by its name). */
struct cmd_opt {
	const char *lng;     /* long name without "--" */
	int shrt;            /* short letter or 0 */
	const char *arg;     /* argument name, or NULL for a flag */
	const char *help;
	const char **val;    /* with arg: where the value goes */
	int *flag;           /* without arg: set to 1 when given */
};

/* Rows of an option table (ended by CMD_OPT_END). */
#define CMD_VALUE(lng, shrt, arg, help, val) { lng, shrt, arg, help, val, NULL }
#define CMD_FLAG(lng, shrt, help, flag) { lng, shrt, NULL, help, NULL, flag }
#define CMD_OPT_END { NULL, 0, NULL, NULL, NULL, NULL }

struct cmd;

struct cmd_verb {
	const char *name;
	int (*fn)(struct cmd *c);
	const char *synopsis;   /* operands after the verb, e.g. "[-c COLL] ID" */
	const char *summary;
	const struct cmd_opt *opts; /* verb options, NULL-terminated by lng==NULL */
	int writes;             /* 1 if the verb may create a store */
};

struct cmd_prog {
	const char *name;
	const char *summary;
	const struct cmd_verb *verbs;  /* terminated by name==NULL */
};

struct cmd {
	const struct cmd_prog *prog;
	const struct cmd_verb *verb;
	char **pos;
	int npos;
	int pretty;                    /* 1 pretty, 0 compact */
	int quiet;
	const char *store_dir;
	struct opt_store *store;
	int out_err;
	char **expanded;               /* operands read from stdin (cmd_args_expand) */
	FILE *err;                     /* messages go here when set (else stderr) */
};

/* A sub-verb (the first operand of a verb such as "remote add"): its
 * name and the function that runs it (operand 0 is the sub-verb). */
struct cmd_sub {
	const char *name;
	int (*fn)(struct cmd *c);
};

/* Run the sub-verb that operand 0 names, from table t (ended by a NULL
 * name).  None or an unknown one is a usage error that lists them
 * ("remote needs add, rm or ls"; "unknown remote command 'x' (add, rm,
 * ls)").  Returns the exit status. */
int cmd_sub_run(struct cmd *c, const struct cmd_sub *t);

/* Run the program: parse argv, dispatch to the verb, return the exit status. */
int cmd_main(const struct cmd_prog *p, int argc, char **argv);

/* Parse the integer option bound to *val (its row in the verb's table
 * names it in the message); returns OPT_EXIT_USAGE on failure after a
 * message, else 0 with *out set (def when absent). */
int cmd_long(struct cmd *c, const char *const *val, long def, long min, long *out);

/* Open the store (found as documented).  create: a writing verb creates
 * ./.opt when none is found, and says so on stderr.  Returns 0 or an exit
 * status after printing the error. */
int cmd_store(struct cmd *c, int create);

/* Print v (borrowed) as one JSON Lines record, or indented with --pretty. */
int cmd_print(struct cmd *c, const json_t *v);

/* Print the JSON text text[0..len) (one valid JSON value, such as a
 * block's stored canonical bytes) as it is, one line, or indented with
 * --pretty as cmd_print indents: its numbers and escapes stay as they
 * are written (0.1 stays 0.1). */
int cmd_print_text(struct cmd *c, const char *text, size_t len);

/* Print "prog: message" to stderr and return the exit status for code. */
int cmd_fail(struct cmd *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Print "prog: <opt_error_last()>" and return the exit status for code. */
int cmd_lib_fail(struct cmd *c, int code);

/* A usage error about the current verb: message, then the verb's usage
 * line, exit status 2. */
int cmd_usage(struct cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An informational note on stderr (suppressed by --quiet). */
void cmd_note(struct cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 1 if stdout is a pipe whose reader went away (a write fails with
 * EPIPE): the command ends with exit 7 and no message. */
int cmd_stdout_gone(void);

/* 1 if stderr is a terminal (progress may be shown). */
int cmd_progress_ok(struct cmd *c);

/* Load the system's CA certificates for TLS (https peers) from now on:
 * call before libgit2 is asked to set its certificate locations. */
void cmd_tls_enable(void);

/* Operands, where "-" reads more of them from standard input, one a line
 * (the rule of every program): a line that is one JSON string (white
 * space around it allowed) is that string, as jq prints it; any other
 * line is taken as it is, without its newline.  So `jq .id` and
 * `jq -r .id` both feed a command.  Or, for operands that are JSON
 * values (cmd_args_next_json), "-" reads JSON values from standard
 * input.  The one iterator of every program over its operands, in the
 * manner of mblaze's blaze822_loop. */
struct cmd_args {
	struct cmd *c;
	int i;              /* the next operand */
	int from_stdin;     /* reading standard input now */
	long line;          /* the line of standard input last read */
	char *buf;          /* the line (getline's buffer) */
	size_t cap;
	char *dec;          /* a decoded JSON string */
	size_t deccap;
	struct opt_jsonl *in;  /* JSON values: standard input, once read */
	char where[64];     /* JSON values: "line N" or "argument N" of the last */
};

/* Start at operand `from`. */
void cmd_args_init(struct cmd_args *a, struct cmd *c, int from);
/* The next operand: 1 with *s (NUL-terminated, valid until the next
 * call) and *len, 0 at the end, or -(exit status) after a message. */
int cmd_args_next(struct cmd_args *a, const char **s, size_t *len);
/* The next operand where operands are JSON values: 1 with either *s (an
 * operand as given; *v NULL) or *v (a value read from standard input, a
 * new reference; *s NULL), a->where saying which; 0 at the end; or a
 * negative code with its message (nothing printed). */
int cmd_args_next_json(struct cmd_args *a, const char **s, json_t **v);
/* More operands at hand without waiting (operands left, or standard input
 * buffered or readable now)? */
int cmd_args_waiting(struct cmd_args *a);
void cmd_args_free(struct cmd_args *a);
/* Replace each operand "-" from `from` on by the operands read from
 * standard input (c->pos and c->npos change; kept until the command
 * ends).  0, or an exit status after a message. */
int cmd_args_expand(struct cmd *c, int from);

/* The operand that line[0..n) (no newline) of standard input stands for,
 * by the rule above: *s points into line or into *dec (a buffer of *cap
 * bytes, grown as needed, freed by the caller).  0, or OPT_EIO. */
int cmd_line_operand(char *line, size_t n, char **dec, size_t *cap, const char **s, size_t *len);

/* Parse a JSON value given on the command line. */
int cmd_json_arg(struct cmd *c, const char *text, const char *what, json_t **out);

/* The loop of every --each command (in the manner of mblaze's
 * blaze822_loop): documents come from an input, each becomes a
 * transaction of its own (stage), and the staged ones are committed
 * together -- one pack, one ref update -- when no more input is waiting,
 * when max are staged, at the end of the input, or before an error is
 * reported.  A record is printed only for a transaction that a flush made
 * durable; after a failed flush nothing more is printed or committed.  At
 * bad input, what was staged before it is committed and its records
 * printed, then the error is reported.  Returns the exit status. */
struct cmd_each {
	/* The input: the next document (a new reference) and where it was
	 * ("line N"): 1, 0 at the end, or a negative code with its message.
	 * NULL: JSON values from in, a struct opt_jsonl. */
	int (*next)(void *in, json_t **doc, char *where, size_t wlen);
	/* More input ready without waiting (NULL: from the opt_jsonl). */
	int (*waiting)(void *in);
	void *in;
	/* The collection every transaction writes, through one group
	 * commit; NULL: stage commits each document itself, durably, and
	 * the loop prints its record at once. */
	const char *coll;
	struct opt_txn_opts opts;
	opt_txn_fn fn;          /* with coll: one document's transaction, given its slot */
	size_t slot_size;       /* bytes of state per document (zeroed for stage) */
	size_t max;             /* the most transactions in one group (0: 256) */
	/* Make doc (borrowed; kept until its record is printed) one
	 * transaction: fill slot.  0, or a negative code with its message
	 * (which names where): the loop stops there. */
	int (*stage)(struct cmd *c, void *arg, json_t *doc, const char *where, void *slot);
	/* Print the records of a durable transaction (r: its result; NULL
	 * without coll).  0 or an exit status. */
	int (*print)(struct cmd *c, void *arg, const struct opt_txn_result *r, void *slot);
	/* Free what stage kept in slot (NULL: nothing). */
	void (*release)(void *slot);
	void *arg;              /* passed to stage, print */
	size_t ndocs;           /* out: the documents read */
};

int cmd_each(struct cmd *c, struct cmd_each *e);

#endif
