"""Using a trained model: representations, scores, variant effects, contacts and MSA features."""
