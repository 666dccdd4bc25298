"""Shared data pipeline: corpus readers, manifests, features, augmentation, tokenizer."""
