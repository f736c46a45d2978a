"""hvx.training: datasets, targets, augmentation, losses, SAM and the trainer.

Inference code (the rest of hvx) never imports this package.
"""
