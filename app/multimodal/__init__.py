"""Multimodal (image + text) classification: tokenizer, model, training loop, Triton export. The data and its
class names are a scenario's, outside app/; the trained model carries the class names."""
