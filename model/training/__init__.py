"""One training from CSV to committed manifest: the stages, the head fit, the run record."""
