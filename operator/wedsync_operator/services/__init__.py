"""Services: compare what is desired with what is observed and decide what to write. They read
and write through the adapters (`kube`, `database`), see only their typed errors, and keep the
pure decisions in `domain`."""
