"""Running one job to its end: in a worker's thread (runner) or as a detached Ray actor."""
