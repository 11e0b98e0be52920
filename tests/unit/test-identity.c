/* test-identity.c - a store's Ed25519 identity and its trusted keys. */
#include "harness.h"
#include "fixture.h"
#include "collection.h"
#include "error.h"
#include "identity.h"
#include "json.h"
#include "log.h"
#include "store.h"
#include "txn.h"
#include "util.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the scratch directory ---- */




static struct opt_store *new_store(const char *rel)
{
	struct opt_store *s = NULL;

	CHECK_RC(opt_store_create(&s, at(rel), NULL));
	return s;
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	fputs(text, f);
	if (fclose(f) != 0)
		return -1;
	/* as a store's key file is: readable by its owner only (a wider
	 * mode is refused before the content is read) */
	return chmod(path, 0600);
}

/* A valid key made of one repeated hex digit. */
static const char *key_of(char c)
{
	static char buf[4][OPT_KEY_HEX + 1];
	static int k;
	char *p = buf[k++ % 4];

	memset(p, c, OPT_KEY_HEX);
	p[OPT_KEY_HEX] = '\0';
	return p;
}

/* Entry i of the trust list: key, name, self. */
static const json_t *entry(const json_t *list, size_t i)
{
	return json_array_get(list, i);
}

static int has_name(const json_t *list, const char *key, const char *name)
{
	size_t i;

	for (i = 0; i < json_array_size(list); i++) {
		const json_t *e = entry(list, i);
		if (strcmp(json_string_value(json_object_get(e, "key")), key) == 0)
			return strcmp(json_string_value(json_object_get(e, "name")), name) == 0;
	}
	return 0;
}

static size_t count_key(const json_t *list, const char *key)
{
	size_t i, n = 0;

	for (i = 0; i < json_array_size(list); i++)
		n += strcmp(json_string_value(json_object_get(entry(list, i), "key")), key) == 0;
	return n;
}

/* ---- tests ---- */

TEST(created_on_first_need)
{
	struct opt_store *s = new_store("id/.opt"), *s2 = NULL;
	struct opt_identity id, again, other;
	json_t *list = NULL;
	struct stat st;
	mode_t old;
	char hex[OPT_KEY_HEX + 1];

	if (!s)
		return;
	CHECK(opt_identity_get(&id, s, 0) == OPT_ENOTFOUND);
	CHECK(access(at("id/.opt/opt-identity"), F_OK) != 0);
	/* nobody listed before there is an identity */
	CHECK_RC(opt_trust_list(s, &list));
	CHECK(list && json_array_size(list) == 0);
	json_decref(list);
	/* made on first need, private whatever the umask */
	old = umask(0);
	CHECK_RC(opt_identity_get(&id, s, 1));
	umask(old);
	CHECK(stat(at("id/.opt/opt-identity"), &st) == 0);
	CHECK((st.st_mode & 07777) == 0600);
	CHECK(opt_key_hex_valid(id.pub));
	opt_hex(hex, id.pk, 32);
	CHECK(strcmp(hex, id.pub) == 0);
	CHECK(memcmp(id.sk + 32, id.pk, 32) == 0);
	/* no temporary file left */
	{
		char cmd[PATH_MAX + 64];
		snprintf(cmd, sizeof(cmd), "ls '%s' | grep -q tmp", at("id/.opt"));
		CHECK(system(cmd) != 0);
	}
	/* stable across loads and handles */
	CHECK_RC(opt_identity_get(&again, s, 1));
	CHECK(memcmp(&id, &again, sizeof(id)) == 0);
	CHECK_RC(opt_identity_get(&again, s, 0));
	CHECK(memcmp(&id, &again, sizeof(id)) == 0);
	CHECK_RC(opt_store_open(&s2, at("id/.opt")));
	if (s2) {
		CHECK_RC(opt_identity_get(&again, s2, 0));
		CHECK(strcmp(again.pub, id.pub) == 0 && memcmp(again.sk, id.sk, 64) == 0);
	}
	opt_store_free(s2);
	/* another store has another identity */
	s2 = new_store("id2/.opt");
	if (s2) {
		CHECK_RC(opt_identity_get(&other, s2, 1));
		CHECK(strcmp(other.pub, id.pub) != 0);
	}
	opt_store_free(s2);
	/* the secret key is not in the git objects: it is a file beside them */
	{
		char cmd[PATH_MAX + 128];
		char sk[129];
		opt_hex(sk, id.sk, 32);
		snprintf(cmd, sizeof(cmd), "grep -rqs '%s' '%s/objects' '%s/config'", sk, at("id/.opt"), at("id/.opt"));
		CHECK(system(cmd) != 0);
	}
	opt_store_free(s);
}

TEST(damaged_identity)
{
	struct opt_store *s = new_store("dmg/.opt");
	struct opt_identity id;
	char text[512];

	if (!s)
		return;
	CHECK(write_file(at("dmg/.opt/opt-identity"), "{") == 0);
	CHECK(opt_identity_get(&id, s, 1) == OPT_EINTEGRITY);
	CHECK(write_file(at("dmg/.opt/opt-identity"), "{\"public\":\"00\",\"secret\":\"11\"}") == 0);
	CHECK(opt_identity_get(&id, s, 0) == OPT_EINTEGRITY);
	/* a secret key that does not go with the public key */
	snprintf(text, sizeof(text), "{\"public\":\"%s\",\"secret\":\"%s%s\"}", key_of('a'), key_of('b'), key_of('c'));
	CHECK(write_file(at("dmg/.opt/opt-identity"), text) == 0);
	CHECK(opt_identity_get(&id, s, 1) == OPT_EINTEGRITY);
	CHECK(strstr(opt_error_last(), "damaged") != NULL);
	/* and nothing was overwritten */
	{
		FILE *f = fopen(at("dmg/.opt/opt-identity"), "r");
		char back[512] = "";
		if (f) {
			if (!fgets(back, sizeof(back), f))
				back[0] = '\0';
			fclose(f);
		}
		CHECK(strcmp(back, text) == 0);
	}
	opt_store_free(s);
}

TEST(sign_and_verify)
{
	struct opt_store *s = new_store("sign/.opt");
	struct opt_identity id, other;
	char sig[OPT_SIG_HEX + 1], sig2[OPT_SIG_HEX + 1], bad[OPT_SIG_HEX + 1], msg[64];
	const char *m = "the hash of a log entry";
	size_t i, n;
	int b, fails;

	if (!s)
		return;
	CHECK_RC(opt_identity_get(&id, s, 1));
	CHECK_RC(opt_identity_sign(&id, m, sig));
	CHECK(strlen(sig) == OPT_SIG_HEX);
	CHECK(strspn(sig, "0123456789abcdef") == OPT_SIG_HEX);
	CHECK(opt_sig_verify(id.pub, m, sig) == 0);
	/* Ed25519 is deterministic */
	CHECK_RC(opt_identity_sign(&id, m, sig2));
	CHECK(strcmp(sig, sig2) == 0);
	/* every flipped bit of the message fails */
	fails = 0;
	n = strlen(m);
	for (i = 0; i < n; i++)
		for (b = 0; b < 7; b++) {
			snprintf(msg, sizeof(msg), "%s", m);
			msg[i] ^= (char)(1 << b);
			fails += opt_sig_verify(id.pub, msg, sig) == OPT_EINTEGRITY;
		}
	CHECK(fails == (int)n * 7);
	/* every flipped bit of the signature fails */
	fails = 0;
	for (i = 0; i < OPT_SIG_HEX; i++)
		for (b = 0; b < 4; b++) {
			static const char hexd[] = "0123456789abcdef";
			unsigned v;
			memcpy(bad, sig, sizeof(bad));
			v = (unsigned)(strchr(hexd, bad[i]) - hexd) ^ (1u << b);
			bad[i] = hexd[v];
			fails += opt_sig_verify(id.pub, m, bad) == OPT_EINTEGRITY;
		}
	CHECK(fails == OPT_SIG_HEX * 4);
	/* longer or shorter messages fail */
	snprintf(msg, sizeof(msg), "%s.", m);
	CHECK(opt_sig_verify(id.pub, msg, sig) == OPT_EINTEGRITY);
	snprintf(msg, sizeof(msg), "%.*s", (int)n - 1, m);
	CHECK(opt_sig_verify(id.pub, msg, sig) == OPT_EINTEGRITY);
	/* another key fails */
	s = (opt_store_free(s), new_store("sign2/.opt"));
	if (s) {
		CHECK_RC(opt_identity_get(&other, s, 1));
		CHECK(opt_sig_verify(other.pub, m, sig) == OPT_EINTEGRITY);
	}
	/* malformed keys and signatures */
	CHECK(opt_sig_verify("abc", m, sig) == OPT_EINTEGRITY);
	CHECK(opt_sig_verify(id.pub, m, "abc") == OPT_EINTEGRITY);
	memcpy(bad, sig, sizeof(bad));
	bad[5] = 'x';
	CHECK(opt_sig_verify(id.pub, m, bad) == OPT_EINTEGRITY);
	CHECK(opt_sig_verify(id.pub, m, "") == OPT_EINTEGRITY);
	/* the empty message */
	CHECK_RC(opt_identity_sign(&id, "", sig));
	CHECK(opt_sig_verify(id.pub, "", sig) == 0);
	CHECK(opt_sig_verify(id.pub, "x", sig) == OPT_EINTEGRITY);
	opt_store_free(s);
}

static int put_fn(struct opt_txn *x, void *arg)
{
	json_t *k = json_string("k"), *v = json_integer(1);
	int rc = opt_tree_init(x, 0);

	(void)arg;
	if (rc == 0)
		rc = opt_tree_put(x, k, v);
	json_decref(k);
	json_decref(v);
	return rc;
}

TEST(log_entries_signed_by_the_store)
{
	struct opt_store *s = new_store("logsig/.opt");
	struct opt_txn_opts o = { OPT_TYPE_TREE, "put", 0, 0 };
	struct opt_txn_result res;
	struct opt_identity id;
	struct opt_snap *snap = NULL;
	json_t *e = NULL;
	char hid[OPT_ID_LEN + 1], hash[65];

	if (!s)
		return;
	/* the first transaction makes the identity */
	CHECK(opt_identity_get(&id, s, 0) == OPT_ENOTFOUND);
	CHECK_RC(opt_txn_run(s, "t", put_fn, NULL, &o, &res));
	CHECK_RC(opt_identity_get(&id, s, 0));
	CHECK_RC(opt_snap_open(&snap, s, "t", 0));
	if (snap) {
		struct opt_source src = opt_snap_source(snap);
		opt_collection_header_id("t", hid);
		CHECK_RC(opt_log_last(&src, hid, &e));
	}
	if (e) {
		const char *author = json_string_value(json_object_get(e, "author"));
		const char *sig = json_string_value(json_object_get(e, "sig"));
		CHECK(author && strcmp(author, id.pub) == 0);
		CHECK_RC(opt_log_entry_hash(e, hash));
		CHECK(strcmp(hash, json_string_value(json_object_get(e, "hash"))) == 0);
		CHECK(sig && opt_sig_verify(author, hash, sig) == 0);
	}
	json_decref(e);
	opt_snap_free(snap);
	opt_store_free(s);
}

TEST(key_hex)
{
	char k[OPT_KEY_HEX + 2];

	CHECK(opt_key_hex_valid(key_of('0')));
	CHECK(opt_key_hex_valid(key_of('f')));
	CHECK(opt_key_hex_valid("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
	CHECK(!opt_key_hex_valid("0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
	CHECK(!opt_key_hex_valid(key_of('g')));
	CHECK(!opt_key_hex_valid(""));
	CHECK(!opt_key_hex_valid(NULL));
	memset(k, 'a', sizeof(k));
	k[OPT_KEY_HEX - 1] = '\0';
	CHECK(!opt_key_hex_valid(k)); /* 63 */
	k[OPT_KEY_HEX - 1] = 'a';
	k[OPT_KEY_HEX + 1] = '\0';
	CHECK(!opt_key_hex_valid(k)); /* 65 */
	k[OPT_KEY_HEX] = '\0';
	CHECK(opt_key_hex_valid(k));
	k[10] = ' ';
	CHECK(!opt_key_hex_valid(k));
	k[10] = '\n';
	CHECK(!opt_key_hex_valid(k));
}

TEST(trust)
{
	struct opt_store *s = new_store("trust/.opt"), *s2 = NULL;
	struct opt_identity id;
	json_t *list = NULL;
	char k1[OPT_KEY_HEX + 1], k2[OPT_KEY_HEX + 1], k3[OPT_KEY_HEX + 1];
	char longname[202];

	/* copies: key_of's buffers are reused */
	snprintf(k1, sizeof(k1), "%s", key_of('1'));
	snprintf(k2, sizeof(k2), "%s", key_of('2'));
	snprintf(k3, sizeof(k3), "%s", key_of('3'));

	if (!s)
		return;
	CHECK_RC(opt_identity_get(&id, s, 1));
	/* the store's own key, listed as self */
	CHECK_RC(opt_trust_list(s, &list));
	CHECK(list && json_array_size(list) == 1);
	if (json_array_size(list) == 1) {
		CHECK(strcmp(json_string_value(json_object_get(entry(list, 0), "key")), id.pub) == 0);
		CHECK(json_is_true(json_object_get(entry(list, 0), "self")));
	}
	json_decref(list);
	CHECK(opt_trust_has(s, id.pub) == 1);
	CHECK(opt_trust_has(s, k1) == 0);

	/* add, rename, add without a name */
	CHECK_RC(opt_trust_add(s, k1, "alice"));
	CHECK(opt_trust_has(s, k1) == 1);
	CHECK(opt_trust_has(s, k2) == 0);
	CHECK_RC(opt_trust_add(s, k1, "alice smith"));
	CHECK_RC(opt_trust_add(s, k2, NULL));
	CHECK_RC(opt_trust_list(s, &list));
	CHECK(json_array_size(list) == 3);
	CHECK(count_key(list, k1) == 1);
	CHECK(has_name(list, k1, "alice smith"));
	CHECK(has_name(list, k2, ""));
	CHECK(json_object_get(entry(list, 1), "self") == NULL || !json_is_true(json_object_get(entry(list, 1), "self")));
	json_decref(list);
	/* adding the own key changes nothing */
	CHECK_RC(opt_trust_add(s, id.pub, "me again"));
	CHECK_RC(opt_trust_list(s, &list));
	CHECK(count_key(list, id.pub) == 1);
	CHECK(json_array_size(list) == 3);
	json_decref(list);
	/* refused */
	CHECK(opt_trust_add(s, "ABC", "x") == OPT_EINVAL);
	CHECK(opt_trust_add(s, "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", "x") == OPT_EINVAL);
	CHECK(opt_trust_add(s, k3, "two\nlines") == OPT_EINVAL);
	memset(longname, 'n', sizeof(longname));
	longname[201] = '\0';
	CHECK(opt_trust_add(s, k3, longname) == OPT_EINVAL);
	CHECK(opt_trust_has(s, k3) == 0);
	longname[200] = '\0';
	CHECK_RC(opt_trust_add(s, k3, longname));
	CHECK(opt_trust_has(s, k3) == 1);
	/* another handle reads the same */
	CHECK_RC(opt_store_open(&s2, at("trust/.opt")));
	if (s2) {
		CHECK(opt_trust_has(s2, k1) == 1 && opt_trust_has(s2, k3) == 1 && opt_trust_has(s2, id.pub) == 1);
		CHECK_RC(opt_trust_list(s2, &list));
		CHECK(has_name(list, k3, longname));
		CHECK(json_array_size(list) == 4);
		json_decref(list);
	}
	/* remove */
	CHECK(opt_trust_remove(s, id.pub) == OPT_EINVAL);
	CHECK(opt_trust_has(s, id.pub) == 1);
	CHECK(opt_trust_remove(s, key_of('4')) == OPT_ENOTFOUND);
	CHECK(opt_trust_remove(s, "nope") == OPT_EINVAL);
	CHECK_RC(opt_trust_remove(s, k1));
	CHECK(opt_trust_has(s, k1) == 0);
	CHECK(opt_trust_remove(s, k1) == OPT_ENOTFOUND);
	CHECK(opt_trust_has(s, k2) == 1);
	CHECK_RC(opt_trust_list(s, &list));
	CHECK(json_array_size(list) == 3);
	CHECK(count_key(list, k1) == 0);
	json_decref(list);
	/* lines that are not keys are skipped */
	{
		FILE *f = fopen(at("trust/.opt/opt-trusted"), "a");
		if (f) {
			fprintf(f, "garbage line\n\nABC name\n%s bob\n", key_of('5'));
			fclose(f);
		}
		CHECK(opt_trust_has(s, key_of('5')) == 1);
		CHECK_RC(opt_trust_list(s, &list));
		CHECK(json_array_size(list) == 4);
		CHECK(has_name(list, key_of('5'), "bob"));
		json_decref(list);
		CHECK_RC(opt_trust_remove(s, key_of('5')));
		CHECK(opt_trust_has(s, key_of('5')) == 0 && opt_trust_has(s, k2) == 1);
	}
	opt_store_free(s2);
	opt_store_free(s);
}

#define RACERS 12
#define ROUNDS 500

/* A racer: for every byte it reads from go, load or create the identity
 * and write a record (a status character and the public key) to out. */
static void racer(int k, const char *dir, int go, int out)
{
	struct opt_store *s = NULL;
	struct opt_identity id;
	char c, rec[1 + OPT_KEY_HEX];
	int said = 0;

	if (opt_store_open(&s, dir) < 0)
		_exit(2);
	while (read(go, &c, 1) == 1) {
		memset(rec, '-', sizeof(rec));
		rec[0] = 'E';
		if (opt_identity_get(&id, s, 1) == 0) {
			rec[0] = 'K';
			memcpy(rec + 1, id.pub, OPT_KEY_HEX);
		} else if (!said++) {
			printf("# process %d: %s\n", k, opt_error_last());
			fflush(stdout);
		}
		if (write(out, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
			break;
	}
	opt_store_free(s);
	_exit(0);
}

/* Several processes create the identity of one store at once, ROUNDS
 * times (the identity file removed between rounds): every process gets
 * the one identity that ends up on disk. */
TEST(identity_race)
{
	struct opt_store *s = new_store("race/.opt");
	int go[2], out[2], k, round, failed = 0, ok = 1;
	pid_t pids[RACERS];
	char buf[RACERS];

	if (!s || pipe(go) < 0 || pipe(out) < 0) {
		CHECK(!"setup");
		opt_store_free(s);
		return;
	}
	fflush(stdout);
	for (k = 0; k < RACERS; k++) {
		pids[k] = fork();
		if (pids[k] == 0) {
			close(go[1]);
			close(out[0]);
			racer(k, at("race/.opt"), go[0], out[1]);
		}
		if (pids[k] < 0)
			ok = 0;
	}
	close(go[0]);
	close(out[1]);
	memset(buf, 'g', sizeof(buf));
	for (round = 0; round < ROUNDS && ok; round++) {
		struct opt_identity id;
		char rec[1 + OPT_KEY_HEX];
		int bad = 0;
		/* start the round: one byte per racer */
		if (write(go[1], buf, RACERS) != RACERS) {
			ok = 0;
			break;
		}
		if (opt_identity_get(&id, s, 0) < 0)
			memset(&id, 0, sizeof(id));
		for (k = 0; k < RACERS; k++) {
			size_t got = 0;
			ssize_t n;
			while (got < sizeof(rec) && (n = read(out[0], rec + got, sizeof(rec) - got)) > 0)
				got += (size_t)n;
			if (got != sizeof(rec)) {
				ok = 0;
				break;
			}
			if (rec[0] != 'K')
				bad = 1;
			else if (memcmp(rec + 1, id.pub, OPT_KEY_HEX) != 0 &&
				 /* the parent may have read before any racer wrote */
				 (opt_identity_get(&id, s, 0) < 0 || memcmp(rec + 1, id.pub, OPT_KEY_HEX) != 0))
				bad = 1;
		}
		failed += bad;
		unlink(at("race/.opt/opt-identity"));
		if (failed)
			break; /* shown once is enough */
	}
	close(go[1]);
	for (k = 0; k < RACERS; k++) {
		int status = 0;
		if (pids[k] > 0 && (waitpid(pids[k], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0))
			ok = 0;
	}
	close(out[0]);
	if (failed)
		printf("# round %d of %d: a process failed or got another identity\n", round, ROUNDS);
	CHECK(ok);
	CHECK(failed == 0);
	{
		char cmd[PATH_MAX + 64];
		snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -q tmp", at("race/.opt"));
		CHECK(system(cmd) != 0);
	}
	opt_store_free(s);
}

int main(void)
{
	int rc;

	setenv("OPT_FSYNC", "0", 1);
	opt_util_init();
	snprintf(root, sizeof(root), "/tmp/opt-test-identity-XXXXXX");
	if (!mkdtemp(root)) {
		printf("Bail out! cannot make a temporary directory: %s\n", strerror(errno));
		return 1;
	}
	RUN(created_on_first_need);
	RUN(damaged_identity);
	RUN(sign_and_verify);
	RUN(log_entries_signed_by_the_store);
	RUN(key_hex);
	RUN(trust);
	RUN(identity_race);
	rc = DONE();
	nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}
