#!/bin/sh
# Build dpflow-vcsim offline, in GOPATH mode, against Debian's govmomi 0.24.2 sources
# (/usr/share/gocode). Idempotent: does nothing when the binary is newer than every
# .go file here. Prints the binary's path.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/build"
bin="$build/dpflow-vcsim"
if [ -x "$bin" ] && [ -z "$(find "$here" -maxdepth 1 -name '*.go' -newer "$bin")" ]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$build/gopath" "$build/gocache"
cd "$here"
GO111MODULE=off GOPROXY=off GOFLAGS= \
GOPATH="$build/gopath:/usr/share/gocode" GOCACHE="$build/gocache" \
    go build -o "$bin.tmp" .
mv "$bin.tmp" "$bin"
echo "$bin"
