// Package prometheus pins the Prometheus release whose prometheus and promtool the alert
// tests use (rule unit tests, and a real Prometheus scraping the operator).
// The binaries are built by build.sh; nothing here is imported.
package prometheus
