"""hvx.training: datasets, targets, augmentation, losses, SAM and the trainer.

Inference code (the rest of hvx) never imports this package.

Data side (one tile at a time, NumPy in, NumPy out):

- ``hvx.training.data``: ``load_dataset`` reads a CoNiC npy folder or a
  CoNSeP-style folder into a ``TileDataset`` (uint8 RGB images, int32 instance
  maps, uint8 class maps, source image per tile, class names);
  ``split_by_source`` splits source images, never tiles, into train/val.
- ``hvx.training.augment``: ``Augmenter(AugmentConfig())(image, inst, cls, rng)``
  applies the paper's augmentation (affine + flips with one nearest-neighbour
  draw for image and labels; blur/median/noise; hue/saturation/brightness/
  contrast), driven only by the given ``numpy.random.Generator``.
- ``hvx.training.targets``: ``make_targets(inst, cls)`` gives the np, hv and
  tp targets (SPEC §2, with HV for every instance: SPEC §7f);
  ``gen_instance_hv_map_ref`` is the literal reference twin.
"""
