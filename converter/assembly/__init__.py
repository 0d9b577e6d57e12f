"""Bundle assembly: stable ids, pruning, merging, transaction entries."""
