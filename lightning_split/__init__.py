"""lightning_split: train and evaluate LLM steering controls with PyTorch Lightning."""

__version__ = "0.1.0"
