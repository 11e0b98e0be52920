/* json.h - canonical JSON, tree keys, and a streaming JSON reader.
 *
 * Ownership of json_t (the one rule, as in jq): a function that hands a
 * json_t out through a `json_t **out` parameter gives the caller a new
 * reference, which the caller must json_decref.  A function that returns a
 * `json_t *` directly returns a borrowed reference, valid as long as the
 * object it was taken from.  A function that takes a `json_t *` argument
 * borrows it, unless its comment says it "steals" the reference.
 *
 * Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant
 * white space, UTF-8 (no \u escapes except the ones JSON requires),
 * integers as integers.  Every hash in the system is over canonical bytes.
 */
#ifndef OPT_JSON_H
#define OPT_JSON_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/* The deepest nesting a stored document (a block) may have, counted as
 * jansson's parser counts it, which refuses deeper text ("maximum parsing
 * depth reached"): the document is level 1, and a value inside an array
 * or object one level below it.  A write must never store what cannot be
 * read back, so every block a transaction writes is held to it, log
 * blocks included, as it is stored: a tree value sits 5 levels down in
 * its log entry's block, so it may nest 2043 levels itself. */
#define OPT_JSON_MAX_DEPTH JSON_PARSER_MAX_DEPTH

/* Canonical serialization; *out is malloc'd and NUL-terminated (caller
 * frees), *len its length without the NUL.  0, OPT_EINVAL (NaN or
 * infinity; nesting deeper than OPT_JSON_MAX_DEPTH) or OPT_EIO. */
int opt_json_canon(char **out, size_t *len, const json_t *v);

/* The same for v stored `above` levels down in a document (0: v is the
 * document): OPT_EINVAL, by opt_json_too_deep(what), when it would nest
 * the document deeper than OPT_JSON_MAX_DEPTH. */
int opt_json_canon_at(char **out, size_t *len, const json_t *v, int above, const char *what);

/* The levels that JSON text[0..len) (valid JSON) nests, counted as
 * OPT_JSON_MAX_DEPTH counts them: 1 for a scalar, [] or {}, 2 for [1]. */
int opt_json_text_depth(const char *text, size_t len);

/* 1 when JSON text[0..len) (valid JSON), stored `above` levels down in a
 * document, keeps it within OPT_JSON_MAX_DEPTH; 0 when it does not.
 * Cheap for text with few brackets (it counts them first). */
int opt_json_text_fits(const char *text, size_t len, int above);

/* Set the message "nested too deeply: WHAT would nest more than 2048
 * levels, the most a stored document may" (what NULL: "the value");
 * returns OPT_EINVAL. */
int opt_json_too_deep(const char *what);

/* SHA-256 (hex) of the canonical serialization of v. */
int opt_json_hash(char out[65], const json_t *v);

/* Parse exactly one JSON value from buf (any type).  0 or OPT_EINVAL with
 * the message "invalid JSON: <reason>".  A number too small for a double
 * (1e-400, which jansson reads as 0) is refused as one too large is:
 * "real number underflow near '1e-400'". */
int opt_json_parse(json_t **out, const char *buf, size_t len);

/* For v parsed by jansson from text[0..len): 1 when a number in the text
 * underflowed (a digit other than 0, read as 0), with the reason, worded
 * as jansson words an overflow, in msg; 0 when none did.  Every reader of
 * input here (opt_json_parse, opt_jsonl_next) checks this. */
int opt_json_underflow(const json_t *v, const char *text, size_t len, char *msg, size_t msgsz);

/* A deep copy of v (a new reference; NULL when out of memory).  Faster
 * than json_deep_copy, which builds a loop-detection table per value. */
json_t *opt_json_copy(const json_t *v);

/* 1 if v may be a tree key: a number, a string, or an array of keys. */
int opt_key_valid(const json_t *v);

/* Total order of keys: numbers (numerically) < strings (by UTF-8 bytes) <
 * arrays (element-wise, a prefix first).  Both arguments must be valid
 * keys.  Returns <0, 0, >0. */
int opt_key_cmp(const json_t *a, const json_t *b);

/* Canonical JSON text (how blocks are stored), read without building
 * values.  opt_raw_skip: the end of the one value that starts at p (no
 * white space outside strings; nesting up to 64), or NULL when the text
 * is not such a value.  It checks structure (strings, brackets, commas),
 * not every detail: use it only on text that was valid canonical JSON
 * when written (a stored block). */
const char *opt_raw_skip(const char *p, const char *end);

/* Compare a key stored as canonical text raw[0..len) with key (a valid
 * key), or two stored keys, as opt_key_cmp does.  A stored key that is not
 * a valid key sets *err (OPT_EINTEGRITY) and the result is 0. */
int opt_raw_key_cmp(const char *raw, size_t len, const json_t *key, int *err);
int opt_raw_keys_cmp(const char *a, size_t al, const char *b, size_t bl, int *err);

/* Canonical text checked, not trusted: opt_canon_scan reads text[0..len)
 * in one pass, building no values, and says whether it is exactly what
 * opt_json_canon makes of its parse (so that hashing a span of it is
 * hashing the canonical JSON of the value there).  It records a tape of
 * the values down to depth maxdepth (0: the top value only), in text
 * order, each with its span, the key it is under (in an object) and the
 * tape index after its recorded descendants (its next sibling, when it
 * has one). */
struct opt_cnode {
	uint32_t k, kl;     /* its key as stored (quotes included), 0 0 in an array or at the top */
	uint32_t v, vl;     /* the value as stored */
	uint32_t next;      /* tape index after this node and its recorded descendants */
	char t;             /* '{', '[', '"', '0' (a number), 't', 'f', 'n' */
};

struct opt_ctape {
	struct opt_cnode *v;
	size_t n, cap;
};

/* 1 when the text is canonical (one value, nothing around it), 0 when it
 * is not or cannot be told here (nesting deeper than 512, a key with an
 * escape, a text of 4 GB or more: parse it and compare instead);
 * OPT_EIO when out of memory.  The tape is reused across calls. */
int opt_canon_scan(const char *text, size_t len, int maxdepth, struct opt_ctape *tape);
void opt_ctape_free(struct opt_ctape *tape);

/* The same question answered the slow way (parse, serialize, compare):
 * 1 canonical, 0 not (or not JSON), OPT_EIO out of memory. */
int opt_canon_check_parsed(const char *text, size_t len);

/* Child i of tape node at (a container), or 0 when it has fewer children. */
size_t opt_ctape_child(const struct opt_ctape *tape, size_t at, size_t i);
/* The member of object node at whose key is the string key (no escapes),
 * or 0 when it has none. */
size_t opt_ctape_member(const struct opt_ctape *tape, const char *text, size_t at, const char *key);

/* A streaming reader of JSON values (JSON Lines, or any concatenation of
 * JSON texts separated by white space) in constant memory per value. */
struct opt_jsonl;

/* Start reading from f (borrowed; not closed by the reader). */
int opt_jsonl_open(struct opt_jsonl **out, FILE *f);
void opt_jsonl_free(struct opt_jsonl *r);

/* Read the next value: 1 and *out (new reference) when there is one, 0 at
 * the end of the input, OPT_EINVAL ("line N: ...") on malformed input,
 * OPT_EIO on a read error. */
int opt_jsonl_next(struct opt_jsonl *r, json_t **out);

/* The same in two steps: the text of the next value (framed as
 * opt_jsonl_next frames it; valid until the next call on r): 1, 0 at the
 * end, OPT_EIO; then, when wanted, parse it as opt_jsonl_next does (0 or
 * OPT_EINVAL "line N: invalid JSON: ..."). */
int opt_jsonl_next_text(struct opt_jsonl *r, const char **text, size_t *len);
int opt_jsonl_parse_text(struct opt_jsonl *r, const char *text, size_t len, json_t **out);

/* 1 if more input is already buffered (the next value can be read without
 * waiting), 0 otherwise. */
int opt_jsonl_buffered(const struct opt_jsonl *r);

/* The line number (1-based) where the last value read began. */
long opt_jsonl_line(const struct opt_jsonl *r);

/* A growing text buffer (p NUL-terminated when not NULL). */
struct opt_text {
	char *p;
	size_t len, cap;
};

/* Append n bytes (0 or OPT_EIO); free the buffer (it may be reused). */
int opt_text_add(struct opt_text *t, const char *s, size_t n);
void opt_text_free(struct opt_text *t);

/* The canonical JSON of the one JSON value in in[0..len) (white space
 * around it allowed), appended to out, without building values: 1 when
 * done; 0 when the text is not handled by this fast path (out unchanged)
 * -- \u escapes, reals, integers of more than 18 digits, -0, escaped or
 * duplicate object names, nesting deeper than 64, or text that is not
 * JSON -- and the caller must use jansson (opt_json_parse) and
 * opt_json_canon, which decide; OPT_EIO when out of memory.  What it
 * produces is byte for byte what that path produces. */
int opt_json_canon_text(struct opt_text *out, const char *in, size_t len);

/* A record {"key": K, "value": V} as canonical text. */
struct opt_text_rec {
	size_t koff, klen;   /* K at out->p + koff */
	size_t voff, vlen;   /* V */
};

/* The fast path for one record: appends K's and V's canonical text to out
 * and sets *rec: 1; 0 (out unchanged) when the fast path does not handle
 * the text or the record is not a plain valid one (not an object, no
 * "key" or "value", a member besides them, a key that is not a key, V
 * longer than max_value):
 * the caller parses it with jansson and reports what is wrong. */
int opt_json_record_text(struct opt_text *out, const char *in, size_t len, size_t max_value,
			 struct opt_text_rec *rec);

#endif
