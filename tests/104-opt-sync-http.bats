#!/usr/bin/env bats
# opt-sync against git over HTTP(S): git http-backend as a CGI program of
# lighttpd (Debian's package), started by each test on loopback with its
# own configuration, on one high port for http:// and one for https://
# (a self-signed certificate for localhost made here with openssl).  The
# served stores allow push without authentication (http.receivepack).
# A push is compare-and-swap through receive-pack, as over git://.

load test_helper
load servers

# the tests say which certificates to trust: none from the environment
unset GIT_SSL_CAINFO GIT_SSL_CAPATH SSL_CERT_FILE SSL_CERT_DIR GIT_SSL_NO_VERIFY

# Serve the stores under $TMP/srv with lighttpd + git http-backend; sets
# HTTPURL and HTTPSURL to the base URLs and CERT to the server's
# certificate (a self-signed one, trusted by nothing yet).
start_web_server() {
	local lighttpd backend port sport tries
	lighttpd=$(command -v lighttpd || echo /usr/sbin/lighttpd)
	[ -x "$lighttpd" ] || skip "lighttpd is not installed (apt-get install lighttpd)"
	backend="$(git --exec-path)/git-http-backend"
	[ -x "$backend" ] || skip "git http-backend is not available"
	command -v openssl >/dev/null || skip "openssl is not installed"
	mkdir -p "$TMP/srv" "$TMP/www"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj /CN=localhost -addext "subjectAltName=DNS:localhost" \
		-keyout "$TMP/www/key.pem" -out "$TMP/www/cert.pem" 2>/dev/null || skip "cannot make a certificate"
	cat "$TMP/www/cert.pem" "$TMP/www/key.pem" >"$TMP/www/server.pem"
	CERT="$TMP/www/cert.pem"
	for tries in 1 2 3; do
		port=$(free_port) || skip "no free port"
		sport=$(free_port) || skip "no free port"
		[ "$port" != "$sport" ] || continue
		cat >"$TMP/www/lighttpd.conf" <<EOF
server.document-root = "$TMP/www"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$TMP/www/error.log"
server.modules = ("mod_alias", "mod_setenv", "mod_cgi", "mod_openssl")
alias.url = ("/git" => "$backend")
cgi.assign = ("" => "")
setenv.set-environment = ("GIT_PROJECT_ROOT" => "$TMP/srv", "GIT_HTTP_EXPORT_ALL" => "1", "PATH" => "$PATH")
\$SERVER["socket"] == "127.0.0.1:$sport" {
	ssl.engine = "enable"
	ssl.pemfile = "$TMP/www/server.pem"
}
EOF
		"$lighttpd" -D -f "$TMP/www/lighttpd.conf" >"$TMP/www/out.log" 2>&1 &
		SERVER_PIDS+=($!)
		if wait_port "$port" && wait_port "$sport"; then
			HTTPURL="http://localhost:$port/git"
			HTTPSURL="https://localhost:$sport/git"
			return 0
		fi
	done
	skip "lighttpd did not start: $(cat "$TMP/www/out.log" "$TMP/www/error.log" 2>/dev/null)"
}

# seed_served, and let anyone push to it over http
seed_pushable() {
	seed_served
	git --git-dir="$TMP/srv/r" config http.receivepack true
}

# Clone, push, a diverged push replayed, fetch and pull through base URL $1.
round_trip() {
	cd "$TMP"
	run --separate-stderr opt-sync clone "$1/r" c --trust "$(key_of "$TMP/srv/r")"
	assert_success
	assert_output '{"remote":"origin","collection":"log","rev":1,"status":"new"}
{"remote":"origin","collection":"users","rev":1,"status":"new"}'
	run opt-log -C c verify
	assert_success
	opt-log -C "$TMP/srv/r" trust "$(key_of c)" --name c
	opt-diary -C c append log '"from c"' >/dev/null
	run opt-sync -C c push
	assert_success
	assert_line '{"remote":"origin","collection":"log","rev":2,"status":"pushed"}'
	# both move on: the push replays c's entry on the server's head
	opt-diary -C "$TMP/srv/r" append log '"on the server"' >/dev/null
	opt-tree -C c put users bob 2 >/dev/null
	opt-diary -C c append log '"c again"' >/dev/null
	run opt-sync -C c push
	assert_success
	assert_line '{"remote":"origin","collection":"log","rev":4,"status":"replayed","replayed":1}'
	assert_line '{"remote":"origin","collection":"users","rev":2,"status":"pushed"}'
	run opt-diary -C "$TMP/srv/r" read log --compact
	assert_output '"start"
"from c"
"on the server"
"c again"'
	# fetch moves the tracking refs only; pull brings the server's state in
	opt-tree -C "$TMP/srv/r" put users carol 3 >/dev/null
	run opt-sync -C c fetch
	assert_success
	assert_line '{"remote":"origin","collection":"users","rev":3,"from":2,"status":"updated"}'
	run opt-tree -C c get users carol
	assert_failure 1
	run opt-sync -C c pull
	assert_success
	run opt-tree -C c get users carol
	assert_success
	[ "$(opt-diary -C c read log)" = "$(opt-diary -C "$TMP/srv/r" read log)" ]
	run opt-log -C "$TMP/srv/r" verify
	assert_success
	fsck_ok "$TMP/srv/r"
	fsck_ok c
}

# Two clones push at once through base URL $1; the server holds every push
# a second after it received the pack, so both pass the negotiation with
# the same old value and one loses at receive-pack, then replays.
lost_race() {
	local i n
	printf '#!/bin/sh\ncat >/dev/null\nsleep 1\n' >"$TMP/srv/r/hooks/pre-receive"
	chmod +x "$TMP/srv/r/hooks/pre-receive"
	for i in 1 2; do
		opt-sync clone "$1/r" "$TMP/c$i" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	done
	for i in 1 2; do
		for n in srv/r c1 c2; do opt-log -C "$TMP/$n" trust "$(key_of "$TMP/c$i")" --name "c$i"; done
		opt-diary -C "$TMP/c$i" append log "\"c$i\"" >/dev/null
	done
	opt-sync -C "$TMP/c1" push >"$TMP/out1" &
	i=$!
	opt-sync -C "$TMP/c2" push >"$TMP/out2" &
	n=$!
	wait "$i" "$n"
	cat "$TMP/out1" "$TMP/out2" >"$TMP/out"
	run grep -c '"collection":"log","rev":2,"status":"pushed"' "$TMP/out"
	assert_output 1
	run grep -c '"collection":"log","rev":3,"status":"replayed","replayed":1' "$TMP/out"
	assert_output 1
	run opt-diary -C "$TMP/srv/r" count log
	assert_output 3
	run opt-log -C "$TMP/srv/r" verify
	assert_success
}

@test "http://: clone, push, fetch and pull round trips; a diverged push is replayed" {
	seed_pushable
	start_web_server
	round_trip "$HTTPURL"
}

@test "http://: a push that loses the race at receive-pack is replayed" {
	seed_pushable
	start_web_server
	lost_race "$HTTPURL"
}

@test "http://: a server that does not allow push refuses it (exit 5); the store is unchanged" {
	seed_served
	start_web_server
	opt-sync clone "$HTTPURL/r" "$TMP/c" --trust "$(key_of "$TMP/srv/r")" >/dev/null
	opt-log -C "$TMP/srv/r" trust "$(key_of "$TMP/c")" --name c
	opt-diary -C "$TMP/c" append log '"from c"' >/dev/null
	run --separate-stderr opt-sync -C "$TMP/c" push
	assert_failure 5
	run opt-diary -C "$TMP/srv/r" count log
	assert_output 1
}

@test "https://: a self-signed certificate is refused (exit 5) until trusted with GIT_SSL_CAINFO" {
	seed_pushable
	start_web_server
	cd "$TMP"
	run --separate-stderr opt-sync clone "$HTTPSURL/r" c --trust "$(key_of "$TMP/srv/r")"
	assert_failure 5
	[[ $stderr == *"certificate"* ]]
	[ ! -e c ]
	export GIT_SSL_CAINFO="$CERT"
	round_trip "$HTTPSURL"
}

@test "https://: a push that loses the race at receive-pack is replayed" {
	seed_pushable
	start_web_server
	export SSL_CERT_FILE="$CERT"
	lost_race "$HTTPSURL"
}

@test "https://: the store's http.sslCAInfo trusts a certificate; http.sslVerify=false accepts any" {
	seed_pushable
	start_web_server
	opt-block init "$TMP/c" >/dev/null
	opt-log -C "$TMP/c" trust "$(key_of "$TMP/srv/r")"
	opt-sync -C "$TMP/c" remote add origin "$HTTPSURL/r"
	run --separate-stderr opt-sync -C "$TMP/c" fetch
	assert_failure 5
	[[ $stderr == *"certificate"* ]]
	# another certificate trusted is no help
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
		-keyout "$TMP/other.key" -out "$TMP/other.pem" 2>/dev/null
	git --git-dir="$TMP/c" config http.sslCAInfo "$TMP/other.pem"
	run --separate-stderr opt-sync -C "$TMP/c" fetch
	assert_failure 5
	git --git-dir="$TMP/c" config http.sslCAInfo "$CERT"
	run --separate-stderr opt-sync -C "$TMP/c" pull
	assert_success
	assert_output '{"remote":"origin","collection":"log","rev":1,"status":"new"}
{"remote":"origin","collection":"users","rev":1,"status":"new"}'
	git --git-dir="$TMP/c" config --unset http.sslCAInfo
	git --git-dir="$TMP/c" config http.sslVerify false
	opt-diary -C "$TMP/srv/r" append log '"two"' >/dev/null
	run --separate-stderr opt-sync -C "$TMP/c" pull
	assert_success
	run opt-diary -C "$TMP/c" count log
	assert_output 2
	# GIT_SSL_NO_VERIFY as git has it
	git --git-dir="$TMP/c" config --unset http.sslVerify
	opt-diary -C "$TMP/srv/r" append log '"three"' >/dev/null
	run --separate-stderr env GIT_SSL_NO_VERIFY=1 opt-sync -C "$TMP/c" pull
	assert_success
	run opt-diary -C "$TMP/c" count log
	assert_output 3
	# a CA file that cannot be read is said
	run --separate-stderr env GIT_SSL_CAINFO="$TMP/none.pem" opt-sync -C "$TMP/c" fetch
	assert_failure
	[[ $stderr == *"GIT_SSL_CAINFO"* ]]
}
