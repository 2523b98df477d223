"""The paper's evaluations: metrics, baselines, probes, remote homology, family alignment, fine-tuning."""
