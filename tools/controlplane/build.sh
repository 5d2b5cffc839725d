#!/usr/bin/env bash
# Builds the binaries of the local clusters and their node from the Go modules pinned here,
# into a cache folder keyed by the pinned versions and both go.sum files, and does nothing when
# they are already there. Prints the folder holding the binaries.
#
#   control plane: kube-apiserver, kube-controller-manager, kubectl, etcd, helm  (this module)
#   node:          kubelet, kube-scheduler, kube-proxy                           (this module)
#   node add-ons:  coredns, local-path-provisioner, pause                       (tools/addons)
#
#   tools/controlplane/build.sh            # build if needed, print the bin folder
#   WEDSYNC_CACHE=/some/dir tools/controlplane/build.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
addons=$(cd "$here/../addons" && pwd)
cd "$here"

version_of() { # module [go.mod]: the version required, in a require block or on one line
  awk -v m="$1" '$1 == "require" {$1 = ""; $0 = $0} $1 == m && $2 ~ /^v/ {print $2; exit}' \
    "${2:-go.mod}"
}
k8s=$(version_of k8s.io/kubernetes)
etcd=$(version_of go.etcd.io/etcd/server/v3)
helm=$(version_of helm.sh/helm/v3)
sums=$(cat go.sum "$addons/go.sum" "$addons"/pause/*.go | sha256sum | cut -c1-12)
key="k8s-${k8s}_etcd-${etcd}_helm-${helm}_${sums}"
cache=${WEDSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wedsync-operator}
bin="$cache/controlplane/$key/bin"
tools=(kube-apiserver kube-controller-manager kubectl etcd helm kubelet kube-scheduler kube-proxy
       coredns local-path-provisioner pause)

complete() { for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
minor=${k8s#v1.}; minor=${minor%%.*}
commit=unknown
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=$commit -X $pkg.buildDate=$now"
done
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
coredns=$(version_of github.com/coredns/coredns "$addons/go.mod")
provisioner=$(version_of github.com/rancher/local-path-provisioner "$addons/go.mod")
coredns_ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=${coredns}"
provisioner_ldflags="-s -w -X main.VERSION=${provisioner}"

# a lock per key: two builds of the same key would write the same files
mkdir -p "$cache/controlplane"
exec 9>"$cache/controlplane/$key.lock"
flock 9
if complete; then echo "$bin"; exit 0; fi

tmp="$cache/controlplane/$key/bin.partial"
mkdir -p "$tmp"
build() { # name package ldflags [module folder]
  [ -x "$tmp/$1" ] && return 0
  echo "building $1 ($2)" >&2
  (cd "${4:-$here}" && go build -trimpath -ldflags "$3" -o "$tmp/$1.new" "$2")
  mv "$tmp/$1.new" "$tmp/$1"
}
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
build kubectl k8s.io/kubernetes/cmd/kubectl "$ldflags"
build etcd go.etcd.io/etcd/server/v3 "-s -w"
build helm helm.sh/helm/v3/cmd/helm "$helm_ldflags"
build kubelet k8s.io/kubernetes/cmd/kubelet "$ldflags"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ldflags"
build kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$ldflags"
build coredns ./coredns "$coredns_ldflags" "$addons"
build local-path-provisioner github.com/rancher/local-path-provisioner "$provisioner_ldflags" \
  "$addons"
build pause ./pause "-s -w" "$addons"
rm -rf "$bin"
mv "$tmp" "$bin"
echo "$bin"
