#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (its S3 gateway is the real S3-compatible server the S3 repository
# tests run against) from the Go module pinned in this folder's go.mod into a cache folder keyed
# by the pinned version and go.sum, and does nothing when it is already there. Prints the
# folder holding the binary.
#
#   tools/s3server/build.sh            # build if needed, print the bin folder
#   WEDSYNC_CACHE=/some/dir tools/s3server/build.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

module=github.com/seaweedfs/seaweedfs
version=$(awk -v m="$module" '$1 == m && $2 ~ /^v/ {print $2; exit}' go.mod)
key="seaweedfs-${version}_$(sha256sum go.sum | cut -c1-12)"
cache=${WEDSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wedsync-operator}
bin="$cache/s3server/$key/bin"

if [ -x "$bin/weed" ]; then echo "$bin"; exit 0; fi

# a lock per key: two builds of the same key would write the same files
mkdir -p "$cache/s3server"
exec 9>"$cache/s3server/$key.lock"
flock 9
if [ -x "$bin/weed" ]; then echo "$bin"; exit 0; fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
tmp="$cache/s3server/$key/bin.partial"
mkdir -p "$tmp"
echo "building weed ($module $version)" >&2
go build -trimpath -ldflags "-s -w -X $module/weed/util/version.COMMIT=${version##*-}" \
  -o "$tmp/weed.new" "$module/weed"
mv "$tmp/weed.new" "$tmp/weed"
rm -rf "$bin"
mv "$tmp" "$bin"
echo "$bin"
