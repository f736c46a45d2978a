"""Typed training configuration: dataclasses with defaults, YAML files, strict loading.

A config is a YAML mapping whose sections mirror :class:`TrainConfig`; keys left
out keep their defaults, unknown keys are an error that names the key and the
allowed ones. Shipped configs live in ``training/configs/`` and resolve by name
(``load_config("paper")``); any other path resolves as a file. The resolved
config (every field, defaults filled in) is what the trainer saves beside its
checkpoints and into the bundle's provenance (:meth:`TrainConfig.to_dict`).

Example::

    name: cpu
    model: {variant: fast_convnext_atto}
    preprocess: {mode: 6ch}
    optim: {lr: 1.0e-3, sam: false}
    epochs: 30
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Any, Literal

import yaml

from hvx import _dictconfig
from hvx.postprocess import PostprocessConfig
from hvx.preprocess import PreprocessConfig
from hvx.training.augment import AugmentConfig
from hvx.training.losses import LossWeights

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "list_configs",
    "load_config",
]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network.

    The number of input channels is not a field: it follows from
    ``preprocess.mode`` (6 for "6ch", 3 for "rgb"), see :attr:`TrainConfig.in_chans`.

    Attributes:
        variant: An ``hvx.model.list_variants()`` name ("convnext_small" is the paper's).
        init_from: Optional local timm/safetensors checkpoint for the encoder
            (nothing is downloaded); None = random init.
        finetune_from: Optional hvx model bundle folder or hvx-train checkpoint
            (``.safetensors``) whose weights start the whole network (encoder and
            decoders), e.g. to fine-tune the default model on your own data. Its
            variant and class count must match. Excludes ``init_from``.
        freeze_bn: Keep every BatchNorm in inference mode while training: its
            running statistics stay those the network started with (a parent's,
            when fine-tuning) and normalise each batch, instead of the statistics of
            a small batch; the BatchNorms' scale and shift still train.
    """

    variant: str = "convnext_small"
    init_from: str | None = None
    finetune_from: str | None = None
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        if self.init_from and self.finetune_from:
            raise ValueError(
                "expected at most one of model.init_from (encoder only) and "
                f"model.finetune_from (whole network), got both: {self.init_from!r}, "
                f"{self.finetune_from!r}"
            )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Dataset handling: split, classes, scale, crops.

    Attributes:
        class_names: Names of the model's classes 1..C; None = the dataset's names
            (after ``class_map``, which then must keep the ids).
        class_map: Dataset class id -> model class id (0 = background type);
            ids not listed keep their value. None = identity.
        mpp: Microns per pixel of the data as stored (CoNiC 0.5, CoNSeP 0.25).
        scale: Resize factor applied to every tile once, at load time (images
            INTER_AREA, labels nearest); 0.5 turns 40x CoNSeP into 20x. The model
            is trained at ``mpp / scale`` microns per pixel (recorded in the bundle).
        crop_size: Edge of the square training crop taken after augmentation
            (random position); validation runs on whole tiles.
        val_fraction: Share of *source images* held out for validation.
        split_seed: Seed of the split by source image.
        max_train_tiles: Use at most this many training tiles (None = all).
        max_val_tiles: Use at most this many validation tiles (None = all).
        epoch_repeats: Each epoch visits every training tile this many times, each
            visit with its own augmentation and crop: longer epochs, so fewer
            DataLoader restarts and validations where steps are fast (a GPU).
        datasets: Several datasets in one run instead of ``--data``: a list of
            mappings ``{path, weight, val_fraction, tile_size, name, fmt}`` (see
            ``hvx.training.datasets.DatasetSpec``; only ``path`` is required).
            Each is split by source image on its own (``val_fraction`` defaults
            to ``data.val_fraction``), an epoch samples them by ``weight``, and
            datasets without class labels train only the np and hv heads.
    """

    class_names: tuple[str, ...] | None = None
    class_map: dict[int, int] | None = None
    mpp: float = 0.5
    scale: float = 1.0
    crop_size: int = 256
    val_fraction: float = 0.2
    split_seed: int = 0
    max_train_tiles: int | None = None
    max_val_tiles: int | None = None
    epoch_repeats: int = 1
    datasets: tuple[dict[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        if self.datasets is not None:
            from hvx.training.datasets import parse_specs

            parse_specs(self.datasets)
        if self.epoch_repeats < 1:
            raise ValueError(f"expected data.epoch_repeats >= 1, got {self.epoch_repeats}")
        if not self.mpp > 0:
            raise ValueError(f"expected data.mpp > 0, got {self.mpp}")
        if not 0 < self.scale <= 4:
            raise ValueError(f"expected data.scale in (0, 4], got {self.scale}")
        if self.crop_size < 8:
            raise ValueError(f"expected data.crop_size >= 8, got {self.crop_size}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"expected data.val_fraction in (0, 1), got {self.val_fraction}")
        for name in ("max_train_tiles", "max_val_tiles"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"expected data.{name} >= 1 or null, got {v}")
        if self.class_map is not None:
            for k, v in self.class_map.items():
                if not (isinstance(k, int) and isinstance(v, int) and k >= 0 and v >= 0):
                    raise ValueError(
                        f"expected data.class_map of non-negative int -> int, got {k!r}: {v!r}"
                    )


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW, optionally inside SAM, with a StepLR schedule stepped once per epoch.

    Adam as in the reference (SPEC §4d) is ``weight_decay: 0`` (AdamW's decay is
    decoupled, so with 0 it is Adam exactly).

    Attributes:
        lr: Learning rate.
        weight_decay: AdamW decoupled weight decay.
        betas: Adam betas.
        eps: Adam epsilon.
        sam: Wrap AdamW in SAM (two forward/backward passes per step).
        rho: SAM radius.
        step_size: StepLR step in epochs (25 in the paper and the reference).
        gamma: StepLR factor.
        budget_decay: A schedule for runs sized by time rather than epochs: with
            ``--max-minutes``, the learning rate is multiplied by ``gamma`` once,
            when this fraction of the time budget is spent (on top of StepLR; set
            ``step_size`` beyond ``epochs`` to use it alone). None: off.
    """

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    sam: bool = True
    rho: float = 0.05
    step_size: int = 25
    gamma: float = 0.1
    budget_decay: float | None = None

    def __post_init__(self) -> None:
        if self.budget_decay is not None and not 0 < self.budget_decay < 1:
            raise ValueError(
                f"expected optim.budget_decay in (0, 1) or null, got {self.budget_decay}"
            )
        if not self.lr > 0:
            raise ValueError(f"expected optim.lr > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"expected optim.weight_decay >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"expected optim.betas two numbers in [0, 1), got {self.betas}")
        if self.sam and not self.rho > 0:
            raise ValueError(f"expected optim.rho > 0 with sam on, got {self.rho}")
        if self.step_size < 1:
            raise ValueError(f"expected optim.step_size >= 1, got {self.step_size}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Runtime options (the device, the output folder, the time budget) are
    arguments of the trainer instead.

    Attributes:
        name: Config name (recorded in provenance).
        model: :class:`ModelConfig`.
        preprocess: ``hvx.preprocess.PreprocessConfig``: the SAME preprocessing as
            inference; it goes into the bundle.
        augment: ``hvx.training.augment.AugmentConfig``.
        loss: :class:`hvx.training.losses.LossWeights`.
        optim: :class:`OptimConfig`.
        data: :class:`DataConfig`.
        postprocess: ``hvx.postprocess.PostprocessConfig`` used for validation
            and written into the bundle.
        epochs: Number of epochs.
        batch_size: Training tiles per step (the last incomplete batch is dropped).
        val_batch_size: Tiles per validation forward.
        val_every: Validate every this many epochs (and after the last one).
        seed: Seed of initialisation, data order and augmentation.
        num_workers: DataLoader worker processes (0 = in the main process).
        amp: Mixed precision autocast; CUDA only, ignored on CPU.
        amp_dtype: ``"float16"`` (with a GradScaler) or ``"bfloat16"`` (float32's
            range, so no loss scaling; Ampere and later).
        channels_last: Run the network in channels-last (NHWC) memory layout: the
            same computation, faster convolutions (a CPU training step of
            ``fast_hr_convnext_atto`` at 4 x 256 x 256: 1.26x, see docs/training.md);
            results differ from the NCHW layout only by float rounding.
        ckpt_every_steps: Also write the "last" checkpoint every this many steps
            (0 = only at epoch ends, on a signal and at the time budget).
        best_metric: Validation metric that picks the "best" checkpoint.
    """

    name: str = "custom"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    loss: LossWeights = dataclasses.field(default_factory=LossWeights)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    postprocess: PostprocessConfig = dataclasses.field(default_factory=PostprocessConfig)
    epochs: int = 50
    batch_size: int = 8
    val_batch_size: int = 8
    val_every: int = 1
    seed: int = 0
    num_workers: int = 0
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    channels_last: bool = True
    ckpt_every_steps: int = 0
    best_metric: Literal["mpq_plus", "pq"] = "mpq_plus"

    #: :mod:`hvx._dictconfig`: a config file lists only what differs from the defaults.
    DEFAULTED_KEYS = _dictconfig.EVERY_FIELD

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "val_batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "ckpt_every_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"expected {name} >= 0, got {getattr(self, name)}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"expected amp_dtype 'float16' or 'bfloat16', got {self.amp_dtype!r}")
        if self.best_metric not in ("mpq_plus", "pq"):
            raise ValueError(f"expected best_metric 'mpq_plus' or 'pq', got {self.best_metric!r}")

    @property
    def in_chans(self) -> int:
        """Input channels of the network (from ``preprocess.mode``)."""
        return self.preprocess.in_chans

    @property
    def model_mpp(self) -> float:
        """Microns per pixel the model is trained at: ``data.mpp / data.scale``."""
        return self.data.mpp / self.data.scale

    def to_dict(self) -> dict[str, Any]:
        """Every field, nested, JSON/YAML-ready (tuples become lists)."""
        return _dictconfig.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Builds a config from a (partial) nested mapping; missing keys keep defaults.

        The rule of :mod:`hvx._dictconfig`, with every field defaulted
        (``DEFAULTED_KEYS``): a section given in part keeps the defaults of the
        keys it leaves out.

        Raises:
            ValueError: On an unknown key (named, with the allowed ones), a value
                of the wrong type, or a value out of range.
        """
        return _dictconfig.from_dict(cls, d, source=source)

    def replace(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with dotted-key overrides applied (``{"optim.lr": 1e-3, "epochs": 3}``).

        None values are dropped (an unset CLI option never overrides the YAML).
        """
        d = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            node = d
            parts = key.split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ValueError(f"override {key!r}: {p!r} is not a config section")
                node = node[p]
            if parts[-1] not in node:
                raise ValueError(
                    f"override {key!r}: unknown key {parts[-1]!r}; expected one of "
                    f"{', '.join(sorted(node))}"
                )
            node[parts[-1]] = value
        return TrainConfig.from_dict(d, source="overrides")


_CONFIG_DIR = "configs"


def list_configs() -> list[str]:
    """Names of the configs shipped in ``training/configs/``."""
    root = importlib.resources.files("hvx.training") / _CONFIG_DIR
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_config(name_or_path: str | Path) -> TrainConfig:
    """Loads a shipped config by name (``"paper"``, ``"cpu"``) or a YAML file by path.

    Raises:
        ValueError: Neither a shipped name nor an existing file, invalid YAML, or
            an invalid config (unknown key, wrong type, out-of-range value).
    """
    s = str(name_or_path)
    path = Path(s)
    if s in list_configs() and not path.suffix:
        text = (importlib.resources.files("hvx.training") / _CONFIG_DIR / f"{s}.yaml").read_text()
        source = f"config {s!r}"
    elif path.is_file():
        text = path.read_text()
        source = str(path)
    else:
        raise ValueError(
            f"expected a config name ({', '.join(list_configs())}) or a YAML file path, got {s!r}"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: invalid YAML: {e}") from None
    return TrainConfig.from_dict(data or {}, source=source)


def dump_config(cfg: TrainConfig) -> str:
    """The resolved config as YAML text (every field)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
