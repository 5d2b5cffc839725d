"""The API: pydantic models of every spec and status, the single source of the CRD schemas."""
