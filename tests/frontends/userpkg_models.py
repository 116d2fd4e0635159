"""User models for the torch-frontend tests (imported via search_path)."""
import torch.nn as nn


def tiny_seg(channels: int = 2):
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


def not_a_module():
    return 42


def raises():
    raise RuntimeError("boom")
