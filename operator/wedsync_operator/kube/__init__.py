"""Adapters to the Kubernetes API: clients per cluster, server-side apply, guarded status
writes, and the typed errors (`kube.errors`) that are all services see of a failed request."""
