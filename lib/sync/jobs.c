/* jobs.c - a cluster's sessions with its peers: one child process per
 * peer, each with its own store and sync handles, its records sent back
 * through a pipe (see cluster.h). */
#include "internal.h"
#include "error.h"
#include "json.h"
#include "util.h"

#include <errno.h>
#include <git2.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void job_clear(struct job *j)
{
	json_decref(j->names);
	json_decref(j->replicas);
	json_decref(j->held);
	json_decref(j->recs);
	free(j->buf);
	free(j->error);
	memset(j, 0, sizeof(*j));
}

static int child_emit(const json_t *rec, void *arg)
{
	return json_array_append_new(arg, opt_json_copy(rec)) < 0 ? opt_error_set(OPT_EIO, "out of memory") : 0;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void write_rec(int fd, const json_t *rec)
{
	char *s = json_dumps(rec, JSON_COMPACT);

	if (s) {
		write_all(fd, s, strlen(s));
		write_all(fd, "\n", 1);
	}
	free(s);
}

struct home_want {
	const struct opt_cluster *c;
	size_t peer;
	const json_t *only;
	json_t *held;
};

/* OP_PULL_HOME: note every collection the peer lists; take those it is
 * the home of (among those asked for). */
static int want_home(const char *name, void *arg)
{
	struct home_want *w = arg;
	size_t idx[OPT_CLUSTER_PEERS_MAX];

	json_array_append_new(w->held, json_string(name));
	if (json_array_size(w->only) && !cluster_has_name(w->only, name))
		return 0;
	return opt_cluster_place((const char *const *)w->c->peers, w->c->n, name, opt_cluster_replicas(w->c), idx) > 0 &&
	       idx[0] == w->peer;
}

/* The child's part: its own store and sync handles, attempts with
 * backoff while the peer cannot be reached, the records of the last
 * attempt and then {"_done": {...}} on fd. */
static void child_run(const struct opt_cluster *c, const struct job *j, enum op op, const struct opt_cluster_opts *o,
		      int fd)
{
	struct opt_store *s = NULL;
	struct opt_sync *y = NULL;
	struct opt_sync_opts so = o->sync;
	const char **v = NULL;
	json_t *recs = NULL, *done;
	struct home_want hw = { c, j->peer, j->only, NULL };
	size_t i, n = json_array_size(j->names);
	int rc, a = 0, retries = o->retries < 0 ? 3 : o->retries;
	unsigned base = o->backoff_ms ? o->backoff_ms : 200;

	so.progress = NULL;
	so.emit = child_emit;
	if (op == OP_LIST)
		so.dry_run = 1;
	so.replica = 0;
	so.replicas = op == OP_PUSH ? j->replicas : NULL;
	v = calloc(n + 1, sizeof(*v));
	for (i = 0; v && i < n; i++)
		v[i] = json_string_value(json_array_get(j->names, i));
	if (!v)
		rc = opt_error_set(OPT_EIO, "out of memory");
	else if ((rc = opt_store_open(&s, opt_store_path(c->s))) == 0 && (rc = opt_sync_open(&y, s)) == 0) {
		for (a = 0;; a++) {
			json_decref(recs);
			recs = json_array();
			so.arg = recs;
			if (op == OP_PULL_HOME) {
				json_decref(hw.held);
				hw.held = json_array();
				so.want = want_home;
				so.want_arg = &hw;
			}
			if (op == OP_PUSH)
				rc = opt_sync_push(y, c->peers[j->peer], v, n, &so);
			else if (op == OP_PULL || op == OP_PULL_HOME)
				rc = opt_sync_pull(y, c->peers[j->peer], v, n, &so);
			else if (op == OP_REMOVE)
				rc = opt_sync_remove(y, c->peers[j->peer], v, n, &so);
			else
				rc = opt_sync_fetch(y, c->peers[j->peer], v, n, &so);
			/* a listing that skipped collections (see opt_sync_pull)
			 * lists the rest: the pulls report what they skip */
			if (op == OP_LIST && rc < 0 && opt_sync_partial(y))
				rc = 0;
			if (rc != OPT_ENET || a >= retries)
				break;
			opt_sleep_ms(opt_backoff_ms((unsigned)a, base, 5000));
		}
	}
	for (i = 0; i < json_array_size(recs); i++)
		write_rec(fd, json_array_get(recs, i));
	if (hw.held && rc != OPT_ENET) {
		json_t *h = json_pack("{s:O}", "_held", hw.held);
		if (h)
			write_rec(fd, h);
		json_decref(h);
	}
	json_decref(hw.held);
	done = json_pack("{s:{s:i,s:i,s:s?}}", "_done", "rc", rc, "attempts", a + 1, "error",
			 rc < 0 ? opt_error_last() : NULL);
	if (done)
		write_rec(fd, done);
	json_decref(done);
	json_decref(recs);
	free(v);
	opt_sync_free(y);
	opt_store_free(s);
}

/* Parse what child j sent. */
static void job_parse(struct job *j)
{
	char *p = j->buf, *nl;
	size_t left = j->len;

	j->recs = json_array();
	j->rc = OPT_EIO;
	while (left > 0 && (nl = memchr(p, '\n', left))) {
		json_t *v = json_loadb(p, (size_t)(nl - p), 0, NULL), *d;
		left -= (size_t)(nl - p) + 1;
		p = nl + 1;
		if (!v)
			continue;
		if ((d = json_object_get(v, "_done"))) {
			const char *e = json_string_value(json_object_get(d, "error"));
			j->rc = (int)json_integer_value(json_object_get(d, "rc"));
			j->attempts = (int)json_integer_value(json_object_get(d, "attempts"));
			free(j->error);
			j->error = e ? strdup(e) : NULL;
			json_decref(v);
		} else if ((d = json_object_get(v, "_held"))) {
			json_decref(j->held);
			j->held = json_incref(d);
			json_decref(v);
		} else {
			json_array_append_new(j->recs, v);
		}
	}
}

/* Start a child per job, each writing to a pipe (jobs[i].fd): *open_n of
 * them started. */
static int start_jobs(const struct opt_cluster *c, struct job *jobs, size_t nj, enum op op,
		      const struct opt_cluster_opts *o, size_t *open_n)
{
	size_t i, k;
	int p[2];

	for (i = 0; i < nj; i++) {
		jobs[i].fd = -1;
		jobs[i].pid = -1;
	}
	for (i = 0; i < nj; i++) {
		if (pipe(p) < 0)
			return opt_error_set(OPT_EIO, "cannot make a pipe: %s", strerror(errno));
		jobs[i].pid = fork();
		if (jobs[i].pid < 0) {
			close(p[0]);
			close(p[1]);
			return opt_error_set(OPT_EIO, "cannot start a process: %s", strerror(errno));
		}
		if (jobs[i].pid == 0) {
			close(p[0]);
			for (k = 0; k < i; k++)
				if (jobs[k].fd >= 0)
					close(jobs[k].fd);
			child_run(c, &jobs[i], op, o, p[1]);
			_exit(0);
		}
		close(p[1]);
		jobs[i].fd = p[0];
		(*open_n)++;
	}
	return 0;
}

/* Read what job j's child sent so far: 1 when its pipe closed. */
static int read_job(struct job *j, int *rc)
{
	ssize_t got;

	if (j->cap - j->len < 4096 && OPT_ALLOC_GROW(j->buf, j->len + 4096, j->cap) < 0) {
		*rc = OPT_EIO;
		return 1;
	}
	got = read(j->fd, j->buf + j->len, j->cap - j->len);
	if (got < 0 && errno == EINTR)
		return 0;
	if (got <= 0)
		return 1;
	j->len += (size_t)got;
	return 0;
}

/* Read what the children send until every pipe is closed. */
static int read_jobs(struct job *jobs, size_t nj, size_t open_n, const struct opt_cluster_opts *o)
{
	struct pollfd *pf = calloc(nj, sizeof(*pf));
	size_t i;
	int rc = 0;

	while (pf && open_n > 0) {
		for (i = 0; i < nj; i++) {
			pf[i].fd = jobs[i].fd;
			pf[i].events = POLLIN;
			pf[i].revents = 0;
		}
		if (poll(pf, nj, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (i = 0; i < nj; i++) {
			if (jobs[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)) || !read_job(&jobs[i], &rc))
				continue;
			close(jobs[i].fd);
			jobs[i].fd = -1;
			open_n--;
			if (o->sync.progress)
				o->sync.progress("sessions with peers", nj - open_n, nj, o->sync.arg);
		}
	}
	free(pf);
	return rc;
}

/* Wait for the children; parse what each sent. */
static void reap_jobs(const struct opt_cluster *c, struct job *jobs, size_t nj)
{
	char msg[128];
	size_t i;
	int st;

	for (i = 0; i < nj; i++) {
		st = 0;
		if (jobs[i].fd >= 0)
			close(jobs[i].fd);
		jobs[i].fd = -1;
		if (jobs[i].pid > 0)
			while (waitpid(jobs[i].pid, &st, 0) < 0 && errno == EINTR)
				;
		job_parse(&jobs[i]);
		if (jobs[i].rc != OPT_EIO || jobs[i].error)
			continue;
		if (WIFSIGNALED(st))
			snprintf(msg, sizeof(msg), "the session with peer '%s' died (signal %d)", c->peers[jobs[i].peer],
				 WTERMSIG(st));
		else
			snprintf(msg, sizeof(msg), "the session with peer '%s' ended without a result", c->peers[jobs[i].peer]);
		jobs[i].error = strdup(msg);
	}
}

int cluster_run_jobs(const struct opt_cluster *c, struct job *jobs, size_t nj, enum op op,
		     const struct opt_cluster_opts *o)
{
	size_t open_n = 0;
	int rc, rrc;

	if (nj == 0)
		return 0;
	fflush(NULL);
	rc = start_jobs(c, jobs, nj, op, o, &open_n);
	rrc = read_jobs(jobs, nj, open_n, o);
	reap_jobs(c, jobs, nj);
	return rc < 0 ? rc : rrc;
}

struct job *cluster_jobs_of(json_t *per, size_t *nj)
{
	struct job *jobs = calloc(json_object_size(per) + 1, sizeof(*jobs));
	const char *key;
	json_t *v;

	*nj = 0;
	if (!jobs)
		return NULL;
	json_object_foreach(per, key, v) {
		size_t k;
		/* in peer order: the records come out in an order that
		 * depends only on the placement */
		for (k = *nj; k > 0 && jobs[k - 1].peer > strtoul(key, NULL, 10); k--)
			jobs[k] = jobs[k - 1];
		jobs[k].peer = strtoul(key, NULL, 10);
		jobs[k].names = json_incref(v);
		(*nj)++;
	}
	return jobs;
}

void cluster_per_add(json_t *per, size_t peer, const char *name)
{
	char key[24];
	json_t *a;

	snprintf(key, sizeof(key), "%zu", peer);
	if (!(a = json_object_get(per, key))) {
		a = json_array();
		json_object_set_new(per, key, a);
	}
	json_array_append_new(a, json_string(name));
}

void cluster_jobs_free(struct job *jobs, size_t nj)
{
	size_t i;

	for (i = 0; jobs && i < nj; i++)
		job_clear(&jobs[i]);
	free(jobs);
}
