// Package addons pins what the test bed's node runs as Pods besides the project's own images:
// CoreDNS (the cluster DNS, built from ./coredns with the few plugins it needs) and Rancher's
// local-path-provisioner (dynamic PersistentVolumes on the node's disk), and holds the sandbox
// image's ./pause command. A module of its own, apart from tools/controlplane, so that their
// dependency graphs never move the pinned Kubernetes release. tools/controlplane/build.sh
// builds the commands; nothing imports this package.
package addons
