"""The metrics service: request windows per tenant, collectors, snapshots and alerts."""
