"""Training as iterators of typed events, checkpoints, devices."""
