"""wedsync-operator: calendar-driven capacity, backups and failover for PostgreSQL on Kubernetes."""

__version__ = "0.1.0"
