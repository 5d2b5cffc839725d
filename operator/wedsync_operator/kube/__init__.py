"""Adapters to the Kubernetes API: clients per cluster, server-side apply, conflict handling."""
