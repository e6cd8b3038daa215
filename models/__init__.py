"""Model code: which weights to load (profiles), how to build the tiny ones, and the inference steps."""
