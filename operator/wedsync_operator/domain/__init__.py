"""Pure logic with the clock as an argument: calendar and freeze evaluation, wall time,
cron firings, desired HPA bounds, desired backup objects and their drift, backup runs and
conditions, pgBackRest configuration, the failover state machine. Imports only `api`."""
