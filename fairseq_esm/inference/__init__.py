"""Using a trained model: loading any checkpoint kind, batching proteins, and the per-job tools."""
