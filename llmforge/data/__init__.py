"""Data: raw sources, tokenizers, token stores, mixtures and procedural generators."""
