"""Multimodal (image + text) classification: tokenizer, model, training loop, Triton export. The data, its
class names and its title vocabulary are a scenario's, outside app/; the trained model carries the class names
and the vocabulary."""
