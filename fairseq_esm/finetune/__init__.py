"""Supervised fine-tuning of the pretrained model on downstream tasks (mutational effects: ``mutational``)."""
