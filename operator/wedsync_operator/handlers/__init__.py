"""kopf handlers: thin — validate the body into a model, call a service, return the status.

Importing this package registers every handler with kopf's default registry.
"""

from wedsync_operator.handlers import failover, lifecycle, optimization, recovery, restore, tuning

__all__ = ["failover", "lifecycle", "optimization", "recovery", "restore", "tuning"]
