"""A job's state in the store: status records and leases, progress and cancel, publications, gc's fence."""
