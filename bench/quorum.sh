#!/bin/sh
# bench/quorum.sh - writes through a quorum cluster over git:// on
# loopback, beside a plain git push of the same change (bench/quorum.py
# says what it measures).
# Usage: sh bench/quorum.sh [BINDIR]   (K=N writes per figure, STREAM=N)
top=$(cd "$(dirname "$0")/.." && pwd)
exec python3 "$top/bench/quorum.py" "${1:-$top/build/bin}"
