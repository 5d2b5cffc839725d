#!/usr/bin/env bash
# Builds prometheus and promtool from the Go module pinned in this folder's go.mod into a cache
# folder keyed by the pinned version, the build tags and go.sum, and does nothing when they are
# already there. Prints the folder holding the binaries.
#
#   tools/prometheus/build.sh              # build if needed, print the bin folder
#   WEDSYNC_CACHE=/some/dir tools/prometheus/build.sh
#
# Service discovery: only static, file, http and kubernetes (the build tags below); the
# cloud providers' discoveries are left out, which halves the build.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

module=github.com/prometheus/prometheus
version=$(awk -v m="$module" '$1 == m && $2 ~ /^v/ {print $2; exit}' go.mod)
tags=remove_all_sd,enable_kubernetes_sd
key="prometheus-${version}_$(printf '%s' "$tags" | sha256sum | cut -c1-6)_$(sha256sum go.sum | cut -c1-12)"
cache=${WEDSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wedsync-operator}
bin="$cache/prometheus/$key/bin"
tools=(prometheus promtool)

complete() { for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi
# one build at a time per key: two at once (CI's `make prometheus` and a test that needs
# promtool) shared bin.partial, and the one that finished second failed on a vanished file
mkdir -p "$cache/prometheus"
exec 9>"$cache/prometheus/$key.lock"
flock 9
if complete; then echo "$bin"; exit 0; fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# The module's VERSION file holds the release (3.x.y) that the module version v0.3xy.z tags.
go mod download "$module" >&2
release=$(cat "$(go list -m -f '{{.Dir}}' "$module")/VERSION")
now=$(date -u +%Y%m%d-%H:%M:%S)
v=github.com/prometheus/common/version
ldflags="-s -w -X $v.Version=$release -X $v.Revision=$version -X $v.Branch=module"
ldflags+=" -X $v.BuildUser=wedsync-operator -X $v.BuildDate=$now"

tmp="$cache/prometheus/$key/bin.partial"
mkdir -p "$tmp"
build() { # name package
  [ -x "$tmp/$1" ] && return 0
  echo "building $1 ($2 $version, tags $tags)" >&2
  go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp/$1.new" "$2"
  mv "$tmp/$1.new" "$tmp/$1"
}
build promtool "$module/cmd/promtool"
build prometheus "$module/cmd/prometheus"
rm -rf "$bin"
mv "$tmp" "$bin"
echo "$bin"
