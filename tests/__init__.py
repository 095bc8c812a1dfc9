"""oro-sync test suite (trial)."""
