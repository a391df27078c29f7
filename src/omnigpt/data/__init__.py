"""Everything between files on disk and batches of tensors."""
