"""Multimodal (image + text) product classification: dataset, tokenizer, model, Triton export."""
