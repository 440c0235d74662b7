"""CPU preprocessing service in front of Triton: image + title in, product class out."""
