"""Datasets and FASTA handling for protein language modelling."""
