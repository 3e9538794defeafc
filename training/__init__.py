"""diffgemma.training: building tokenizers and models, training the shipped checkpoint."""
