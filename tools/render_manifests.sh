#!/usr/bin/env bash
# Renders manifests/install.yaml from the Helm chart with its default values, for
# `kubectl apply --server-side -f manifests/install.yaml` without Helm.
# tests/integration/test_chart.py fails when the file drifts from the chart.
#
#   tools/render_manifests.sh            # write manifests/install.yaml
#   tools/render_manifests.sh --stdout   # print it instead
#
# HELM=/path/to/helm overrides the helm that tools/controlplane/build.sh built.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
helm="${HELM:-$("$root/tools/controlplane/build.sh" | tail -n 1)/helm}"
release=wedsync-operator
namespace=wedsync-system

render() {
  cat <<HEADER
# Generated from charts/wedsync-operator by tools/render_manifests.sh (default values,
# release "$release" in namespace "$namespace"); do not edit.
#
# Install:    kubectl apply --server-side -f manifests/install.yaml
#             The first apply may refuse the ClusterKopfPeering while its CRD, in the same
#             file, is not yet served: wait for the CRDs and apply once more.
#               kubectl wait --for=condition=Established crd -l app.kubernetes.io/part-of=wedsync-operator
#               kubectl wait --for=condition=Established crd/clusterkopfpeerings.kopf.dev
#               kubectl apply --server-side -f manifests/install.yaml
# Uninstall:  the chart's pre-delete hook is not part of these manifests, so first delete the
#             operator's custom resources while the operator still runs, and wait for them
#             (the CRDs' "wedsync" category names them all):
#               kubectl delete wedsync --all -A --wait
#             then: kubectl delete -f manifests/install.yaml
#             (CRDs go with it, and with them any custom resource left.)
---
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    app.kubernetes.io/part-of: wedsync-operator
HEADER
  "$helm" template "$release" "$root/charts/wedsync-operator" \
    --namespace "$namespace" --include-crds --no-hooks
}

if [[ "${1:-}" == "--stdout" ]]; then
  render
else
  render > "$root/manifests/install.yaml"
  echo "wrote manifests/install.yaml"
fi
