/* acceptor.c - the state of one quorum register at one peer: ballots,
 * the deterministic state commit and its two transitions
 * (docs/quorum.md, "The acceptor state"). */
#include "acceptor.h"
#include "error.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY_TREE "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
#define IDENT "optimystic <acceptor@optimystic>"

static int is_hex(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static int oid_ok(const char *s)
{
	return strlen(s) == OPT_HEX_OID && is_hex(s, OPT_HEX_OID);
}

int opt_ballot_cmp(const struct opt_ballot *a, const struct opt_ballot *b)
{
	if (a->n != b->n)
		return a->n < b->n ? -1 : 1;
	return strcmp(a->id, b->id);
}

int opt_ballot_next(struct opt_ballot *out, const struct opt_ballot *b)
{
	if (b->n == 0 || b->n == UINT64_MAX)
		return opt_error_set(OPT_EINVAL, "ballot %" PRIu64 " has no next", b->n);
	*out = *b;
	out->n++;
	return 0;
}

void opt_ballot_format(char buf[OPT_BALLOT_TEXT], const struct opt_ballot *b)
{
	if (b->n == 0)
		snprintf(buf, OPT_BALLOT_TEXT, "0");
	else
		snprintf(buf, OPT_BALLOT_TEXT, "%" PRIu64 ".%s", b->n, b->id);
}

int opt_ballot_parse(struct opt_ballot *out, const char *s, size_t len)
{
	const char *dot = memchr(s, '.', len);
	uint64_t n = 0;
	size_t i, nd;

	memset(out, 0, sizeof(*out));
	if (!dot || dot == s || (nd = (size_t)(dot - s)) > 20 || (s[0] == '0'))
		return opt_error_set(OPT_EINVAL, "a ballot is n.id with n a number from 1, no leading zeros");
	for (i = 0; i < nd; i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (d > 9 || n > (UINT64_MAX - d) / 10)
			return opt_error_set(OPT_EINVAL, "a ballot's number is a decimal below 2^64");
		n = n * 10 + d;
	}
	if (len - nd - 1 != OPT_BALLOT_ID_HEX || !is_hex(dot + 1, OPT_BALLOT_ID_HEX))
		return opt_error_set(OPT_EINVAL, "a ballot's id is 64 lowercase hex digits");
	out->n = n;
	memcpy(out->id, dot + 1, OPT_BALLOT_ID_HEX);
	out->id[OPT_BALLOT_ID_HEX] = '\0';
	return 0;
}

void opt_acceptor_initial(struct opt_acceptor_state *out, const char *reg)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->reg, sizeof(out->reg), "%s", reg);
}

/* The invariant of every state (a < p, or a = p = 0; a value exactly
 * when something is accepted), and the shape of the fields. */
static int state_check(const struct opt_acceptor_state *s)
{
	int none = s->accepted.n == 0;

	if (!s->reg[0] || strchr(s->reg, '\n') || strlen(s->reg) >= OPT_ACCEPTOR_REG_MAX - 1)
		return opt_error_set(OPT_EINVAL, "an acceptor state names its register");
	if (s->prev[0] && !oid_ok(s->prev))
		return opt_error_set(OPT_EINVAL, "an acceptor state's previous state is an object ID");
	if (s->retired)
		return s->prev[0] || s->promise.n || !none || s->value[0] ?
			opt_error_set(OPT_EINVAL, "a tombstone has no parent, promise or value") : 0;
	if (none != !s->value[0] || (s->value[0] && !oid_ok(s->value)))
		return opt_error_set(OPT_EINVAL, "an acceptor state has a value exactly when it accepted a ballot");
	if (s->promise.n == 0 ? !none : opt_ballot_cmp(&s->accepted, &s->promise) >= 0)
		return opt_error_set(OPT_EINVAL, "an acceptor state's accepted ballot is below its promise");
	return 0;
}

int opt_acceptor_encode(char **out, size_t *len, const struct opt_acceptor_state *s)
{
	char p[OPT_BALLOT_TEXT], a[OPT_BALLOT_TEXT];
	size_t cap = 2 * strlen(s->reg) + 1024;
	char *buf;
	int rc, n;

	*out = NULL;
	*len = 0;
	if ((rc = state_check(s)) < 0)
		return rc;
	OPT_CHECK_ALLOC(buf = malloc(cap));
	opt_ballot_format(p, &s->promise);
	opt_ballot_format(a, &s->accepted);
	n = snprintf(buf, cap,
		     "tree " EMPTY_TREE "\n"
		     "%s%s%s"
		     "%s%s%s"
		     "author " IDENT " %" PRIu64 " +0000\n"
		     "committer " IDENT " %" PRIu64 " +0000\n"
		     "\n"
		     "acceptor %s\n"
		     "\n"
		     "Opt-Acceptor: %s\n"
		     "Opt-Epoch: %" PRIu64 "\n",
		     s->prev[0] ? "parent " : "", s->prev, s->prev[0] ? "\n" : "",
		     s->value[0] ? "parent " : "", s->value, s->value[0] ? "\n" : "",
		     s->promise.n, s->promise.n, s->reg, s->reg, s->epoch);
	if (s->retired)
		n += snprintf(buf + n, cap - (size_t)n, "Opt-Retired: yes\n");
	else
		n += snprintf(buf + n, cap - (size_t)n, "Opt-Promise: %s\n", p);
	if (s->value[0])
		n += snprintf(buf + n, cap - (size_t)n, "Opt-Accepted: %s\nOpt-Value: %s\n", a, s->value);
	*out = buf;
	*len = (size_t)n;
	return 0;
}

int opt_acceptor_oid(char out[OPT_HEX_OID + 1], const struct opt_acceptor_state *s)
{
	struct opt_sha1 c;
	uint8_t h[20];
	char hdr[32];
	char *buf;
	size_t len;
	int rc, n;

	if ((rc = opt_acceptor_encode(&buf, &len, s)) < 0)
		return rc;
	n = snprintf(hdr, sizeof(hdr), "commit %zu", len);
	opt_sha1_init(&c);
	opt_sha1_update(&c, hdr, (size_t)n + 1);
	opt_sha1_update(&c, buf, len);
	opt_sha1_final(&c, h);
	opt_hex(out, h, sizeof(h));
	free(buf);
	return 0;
}

/* The value of trailer "key: " in the message lines [m, end), or NULL;
 * *vlen its length. */
static const char *trailer(const char *m, const char *end, const char *key, size_t *vlen)
{
	size_t kl = strlen(key);
	const char *l = m;

	while (l < end) {
		const char *nl = memchr(l, '\n', (size_t)(end - l));
		const char *le = nl ? nl : end;
		if ((size_t)(le - l) > kl + 2 && !memcmp(l, key, kl) && l[kl] == ':' && l[kl + 1] == ' ') {
			*vlen = (size_t)(le - l) - kl - 2;
			return l + kl + 2;
		}
		l = le + 1;
	}
	return NULL;
}

static int u64_parse(uint64_t *out, const char *s, size_t len)
{
	uint64_t n = 0;
	size_t i;

	if (len == 0 || len > 20 || (s[0] == '0' && len > 1))
		return -1;
	for (i = 0; i < len; i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (d > 9 || n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*out = n;
	return 0;
}

/* The fields of the commit at buf, read leniently: the exact bytes are
 * checked afterwards by encoding them again. */
static int fields_read(struct opt_acceptor_state *o, const char *buf, size_t len)
{
	const char *end = buf + len, *body, *v, *parents[2];
	size_t vl, np = 0;
	const char *l = buf;

	body = NULL;
	for (l = buf; l < end;) {
		const char *nl = memchr(l, '\n', (size_t)(end - l));
		if (!nl)
			break;
		if (nl == l) {
			body = nl + 1;
			break;
		}
		if ((size_t)(nl - l) == 7 + OPT_HEX_OID && !memcmp(l, "parent ", 7)) {
			if (np == 2)
				return -1;
			parents[np++] = l + 7;
		}
		l = nl + 1;
	}
	if (!body)
		return -1;
	if ((v = trailer(body, end, "Opt-Epoch", &vl)) == NULL || u64_parse(&o->epoch, v, vl) < 0)
		return -1;
	if ((v = trailer(body, end, "Opt-Retired", &vl)) != NULL) {
		o->retired = 1;
		return np == 0 ? 0 : -1;
	}
	if ((v = trailer(body, end, "Opt-Promise", &vl)) == NULL || opt_ballot_parse(&o->promise, v, vl) < 0)
		return -1;
	if ((v = trailer(body, end, "Opt-Value", &vl)) != NULL) {
		if (np == 0 || vl != OPT_HEX_OID)
			return -1;
		memcpy(o->value, parents[np - 1], OPT_HEX_OID);
		np--;
		if ((v = trailer(body, end, "Opt-Accepted", &vl)) == NULL ||
		    opt_ballot_parse(&o->accepted, v, vl) < 0)
			return -1;
	}
	if (np == 1)
		memcpy(o->prev, parents[0], OPT_HEX_OID);
	return np > 1 ? -1 : 0;
}

int opt_acceptor_decode(struct opt_acceptor_state *out, const char *reg,
			const char *buf, size_t len)
{
	struct opt_acceptor_state s;
	char *again = NULL;
	size_t alen;
	int same;

	opt_acceptor_initial(&s, reg);
	opt_acceptor_initial(out, reg);
	if (fields_read(&s, buf, len) < 0 || opt_acceptor_encode(&again, &alen, &s) < 0)
		return opt_error_set(OPT_EINTEGRITY, "the acceptor state of %s is not one the protocol writes",
				     opt_esc(reg));
	same = alen == len && !memcmp(again, buf, len);
	free(again);
	if (!same)
		return opt_error_set(OPT_EINTEGRITY,
				     "the acceptor state of %s is not one the protocol writes (its bytes differ from its fields')",
				     opt_esc(reg));
	*out = s;
	return 0;
}

static int next_state(struct opt_acceptor_state *out, const struct opt_acceptor_state *cur,
		      const char *cur_oid, uint64_t epoch)
{
	if (cur->retired)
		return opt_error_set(OPT_ECONFLICT, "the acceptor of %s is retired", opt_esc(cur->reg));
	if (cur_oid[0] && !oid_ok(cur_oid))
		return opt_error_set(OPT_EINVAL, "an acceptor state is named by its object ID");
	*out = *cur;
	snprintf(out->prev, sizeof(out->prev), "%s", cur_oid);
	out->epoch = epoch;
	return 0;
}

int opt_acceptor_prepare(struct opt_acceptor_state *out, const struct opt_acceptor_state *cur,
			 const char *cur_oid, const struct opt_ballot *b, uint64_t epoch)
{
	int rc;

	if (b->n == 0)
		return opt_error_set(OPT_EINVAL, "prepare needs a ballot");
	if (opt_ballot_cmp(&cur->promise, b) >= 0)
		return opt_error_set(OPT_ECONFLICT, "the acceptor of %s promised a ballot at least as high",
				     opt_esc(cur->reg));
	if ((rc = next_state(out, cur, cur_oid, epoch)) < 0)
		return rc;
	out->promise = *b;
	return 0;
}

int opt_acceptor_accept(struct opt_acceptor_state *out, const struct opt_acceptor_state *cur,
			const char *cur_oid, const struct opt_ballot *b, const char *value,
			uint64_t epoch)
{
	struct opt_ballot nb;
	int rc;

	if (b->n == 0 || !oid_ok(value))
		return opt_error_set(OPT_EINVAL, "accept needs a ballot and a value");
	if (opt_ballot_cmp(&cur->promise, b) > 0)
		return opt_error_set(OPT_ECONFLICT, "the acceptor of %s promised a higher ballot",
				     opt_esc(cur->reg));
	if ((rc = opt_ballot_next(&nb, b)) < 0 || (rc = next_state(out, cur, cur_oid, epoch)) < 0)
		return rc;
	out->promise = nb;
	out->accepted = *b;
	snprintf(out->value, sizeof(out->value), "%s", value);
	return 0;
}
