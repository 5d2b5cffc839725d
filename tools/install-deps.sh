#!/usr/bin/env bash
# Installs the Debian packages the tests, the local run and the image builds need, when any is
# missing. As root it runs apt-get; otherwise it fails and prints the one command to run.
#
#   PostgreSQL 15, pgBackRest, hypopg, pg_qualstats   the database tests and the tuning work
#   faketime                                          time-based retention of pgBackRest expire
#   zstd                                              reading archived WAL (a restore's inspection)
#   openssl                                           the local clusters' certificates
#   containerd, runc, containernetworking-plugins,
#   iptables, iproute2, util-linux                    the test bed's real node
#   buildah, debootstrap                              the images, built here (no registry)
#   python3-venv, make, ca-certificates, git, tar     the build itself
#
#   tools/install-deps.sh            # install what is missing (root), or say how
#   tools/install-deps.sh --check    # only say what is missing (exit 1 if anything)
set -euo pipefail
packages=(
  postgresql-15 postgresql-client-15 pgbackrest postgresql-15-hypopg postgresql-15-pg-qualstats
  faketime openssl zstd
  containerd runc containernetworking-plugins iptables iproute2 util-linux
  buildah debootstrap
  python3-venv make ca-certificates git tar
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "${1:-}" = "--check" ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${missing[*]}; install them with:" >&2
  echo "  sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends" \
       "${missing[*]}'" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
