"""The scheduler: the single authority over accelerator memory and compute on one host."""
