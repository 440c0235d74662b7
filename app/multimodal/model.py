"""The product classifier: a small CNN for the image, an embedding bag for the title, a fusion head.

Plain torch (torchvision is not available everywhere we run). Inputs are what the
preprocessing service sends: uint8 pixels [N, 64, 64, 3] and int64 token ids [N, 16];
normalization happens here, so it runs on the accelerator and the wire carries bytes.
Output: class probabilities [N, len(classes)], float32.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from app.multimodal.tokenizer import Tokenizer

CHECKPOINT, CLASSES_FILE, VOCABULARY_FILE = "model.pt", "classes.json", "vocabulary.json"


class ProductClassifier(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, classes: Sequence[str], vocabulary: Sequence[str], text_dim: int = 32) -> None:
        """``classes``: the names of the outputs, in order; ``vocabulary``: the title words the tokenizer gives
        ids (in id order). The model carries both (the checkpoint writes them beside its weights, the Triton
        export into config.pbtxt) so that no serving code needs the dataset that defined them."""
        super().__init__()
        if len(classes) < 2 or len(set(classes)) != len(classes) or not all(classes):
            raise ValueError(f"a classifier needs two or more distinct, non-empty class names, got {list(classes)}")
        self.classes = tuple(classes)
        self.tokenizer = Tokenizer(vocabulary)  # a ValueError names what is wrong with the words
        n_classes = len(self.classes)
        self.image = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embed = nn.Embedding(self.tokenizer.size, text_dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(64 + text_dim, 64), nn.ReLU(), nn.Linear(64, n_classes))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

    def logits(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = (image.permute(0, 3, 1, 2).float() - self.mean) / self.std
        img = self.image(x)
        mask = (tokens > 0).float().unsqueeze(-1)
        txt = (self.embed(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out: torch.Tensor = self.head(torch.cat([img, txt], dim=1))
        return out

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(image, tokens), dim=1)


def save_checkpoint(model: ProductClassifier, directory: str | Path) -> Path:
    """``<directory>/model.pt`` (the weights), ``classes.json`` (the outputs' names, in order) and
    ``vocabulary.json`` (the tokenizer's words, in id order)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / CLASSES_FILE).write_text(json.dumps(list(model.classes)))
    (out / VOCABULARY_FILE).write_text(json.dumps(list(model.tokenizer.vocabulary)))
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out / CHECKPOINT)  # the weights last: a checkpoint with its model.pt is complete
    return out


def load_checkpoint(directory: str | Path) -> ProductClassifier:
    """The model ``save_checkpoint`` wrote; a missing or partial checkpoint is a ValueError saying what is missing."""
    d = Path(directory)
    for name in (CHECKPOINT, CLASSES_FILE, VOCABULARY_FILE):
        if not (d / name).exists():
            raise ValueError(f"no checkpoint at {d / name}: run `python -m jobs train-multimodal` first")
    classes = json.loads((d / CLASSES_FILE).read_text())
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{d / CLASSES_FILE} must be a JSON list of class names")
    vocabulary = json.loads((d / VOCABULARY_FILE).read_text())
    if not isinstance(vocabulary, list):
        raise ValueError(f"{d / VOCABULARY_FILE} must be a JSON list of words")
    model = ProductClassifier(classes, vocabulary)
    model.load_state_dict(torch.load(d / CHECKPOINT, map_location="cpu", weights_only=True))
    return model
