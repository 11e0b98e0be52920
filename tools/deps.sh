#!/bin/sh
# tools/deps.sh check|install|install-build - make sure the dependencies
# (Debian packages) are present: "check" the build's, "install" the build's
# and the tests', "install-build" the build's only (what `make demo`
# needs).  The install modes run apt-get when root, else name what is
# missing.
mode=${1:-check}
case $mode in
check | install | install-build) ;;
*)
	echo "usage: tools/deps.sh check|install|install-build" >&2
	exit 2
	;;
esac
missing=""
pkgconf_ok() { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$1" 2>/dev/null; }
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
command -v cc >/dev/null 2>&1 || missing="$missing gcc"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v git >/dev/null 2>&1 || missing="$missing git"
pkgconf_ok libgit2 || missing="$missing libgit2-dev"
pkgconf_ok jansson || missing="$missing libjansson-dev"
pkgconf_ok libsodium || missing="$missing libsodium-dev"
pkgconf_ok zlib || missing="$missing zlib1g-dev"
pkgconf_ok libdeflate || missing="$missing libdeflate-dev"
pkgconf_ok libcrypto || missing="$missing libssl-dev"
if [ "$mode" = install ]; then
	command -v bats >/dev/null 2>&1 || missing="$missing bats"
	[ -d /usr/lib/bats/bats-support ] || missing="$missing bats-support"
	[ -d /usr/lib/bats/bats-assert ] || missing="$missing bats-assert"
	command -v spin >/dev/null 2>&1 || missing="$missing spin"
	command -v mandoc >/dev/null 2>&1 || missing="$missing mandoc"
	command -v fish >/dev/null 2>&1 || missing="$missing fish"
	command -v zsh >/dev/null 2>&1 || missing="$missing zsh"
	command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
	command -v ssh >/dev/null 2>&1 || missing="$missing openssh-client"
	command -v python3 >/dev/null 2>&1 || missing="$missing python3"
	command -v jq >/dev/null 2>&1 || missing="$missing jq"
	command -v clang >/dev/null 2>&1 || missing="$missing clang"
	ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 ||
		missing="$missing libclang-rt-14-dev"
	command -v git-daemon >/dev/null 2>&1 || [ -x /usr/lib/git-core/git-daemon ] || missing="$missing git"
	command -v lighttpd >/dev/null 2>&1 || [ -x /usr/sbin/lighttpd ] || missing="$missing lighttpd"
	[ -e /usr/lib/lighttpd/mod_openssl.so ] || missing="$missing lighttpd-mod-openssl"
	command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
fi
[ -z "$missing" ] && exit 0
if [ "$mode" != check ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "installing:$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null 2>&1 || true
	# shellcheck disable=SC2086
	apt-get install -y -qq $missing >/dev/null || { echo "apt-get install failed:$missing" >&2; exit 1; }
	exit 0
fi
echo "missing Debian packages:$missing" >&2
echo "install them with: sudo apt-get install$missing" >&2
exit 1
