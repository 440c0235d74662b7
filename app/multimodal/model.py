"""The product classifier: a small CNN for the image, an embedding bag for the title, a fusion head.

Plain torch (torchvision is not available everywhere we run). Inputs are what the
preprocessing service sends: uint8 pixels [N, 64, 64, 3] and int64 token ids [N, 16];
normalization happens here, so it runs on the accelerator and the wire carries bytes.
Output: class probabilities [N, 6], float32.
"""

from __future__ import annotations

import torch
from torch import nn

from app.multimodal.dataset import CLASSES
from app.multimodal.tokenizer import VOCAB_SIZE


class ProductClassifier(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_classes: int = len(CLASSES), vocab: int = VOCAB_SIZE, text_dim: int = 32) -> None:
        super().__init__()
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
        self.embed = nn.Embedding(vocab, text_dim, padding_idx=0)
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
