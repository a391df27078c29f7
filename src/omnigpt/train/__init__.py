"""Training: the loop, optimizer and schedule, checkpoints, distributed setup."""
