"""Test helpers: real proteins and the one FASTA writer (proteins), the fair-esm oracle (oracle), tiny real
fairseq-train runs (training) and the hostile-input corpus (hostile_inputs)."""
