"""Real components for tests, benchmarks and the local run: control planes, PostgreSQL."""
