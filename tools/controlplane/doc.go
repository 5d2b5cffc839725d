// Package controlplane pins the Kubernetes release whose kube-apiserver, kube-controller-manager,
// kubectl and etcd the tests and the local run use, and the helm release beside them.
// The binaries are built by build.sh; nothing here is imported.
package controlplane
