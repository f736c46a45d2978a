"""Published models by name: ``Engine.load("hovernet-pannuke")``, ``hvx models``.

Each entry says where the checkpoint is published, its SHA-256 when it has been
verified (empty otherwise: the loader then logs the computed digest so a user can
compare it with the publisher's; hvx never invents one), the licence, the
resolution, the type names and colours, and the paper to cite.

:func:`fetch` downloads a checkpoint once into the user cache
(``$HVX_CACHE_DIR`` or ``~/.cache/hvx``, ``downloads/``) with a progress bar,
writing a temporary file that is renamed into place only when complete and
verified, then converts it into a bundle (``models/<name>/``) with
:func:`hvx.model.hovernet_checkpoint.import_hovernet` and deletes the download.
``HVX_MODEL_BASE_URL`` replaces the folder of every URL (mirrors, tests). A
checkpoint put by hand at ``downloads/<file>`` is used without a download
(offline machines).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from hvx._artifacts import cache_root
from hvx.io.atomic import atomic_file
from hvx.io.digest import file_sha256

__all__ = ["REGISTRY", "ModelEntry", "cached_bundle", "fetch", "is_registered", "list_models"]

log = logging.getLogger("hvx.registry")

_TIA = "https://tiatoolbox.dcs.warwick.ac.uk/models/seg"
_NC = "CC BY-NC-SA 4.0 (non-commercial; derived from the {} dataset's licence)"
_MIT = "MIT (hover_net repository); check the {} dataset's terms for your use"
_CITE = (
    "Graham S, Vu QD, Raza SEA, Azam A, Tsang YW, Kwak JT, Rajpoot N. HoVer-Net: "
    "Simultaneous segmentation and classification of nuclei in multi-tissue histology "
    "images. Medical Image Analysis 58 (2019) 101563."
)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One published model.

    Attributes:
        name: Registry name (``hvx infer --model NAME``).
        url: Direct download URL of the checkpoint, or "" when the publisher only
            offers a page (then ``page`` says where; import the file by hand).
        filename: File name in the cache.
        sha256: Verified SHA-256 of the file, or "" (not verified by hvx yet).
        mode: HoVer-Net mode ("fast" or "original").
        class_names: Type names 1.. (background excluded); ("nucleus",) without types.
        class_colors: RGB per name, or None for hvx's palette.
        mpp: Microns per pixel of the training data.
        licence: Licence of the weights.
        citation: Paper(s) to cite.
        dataset: Training dataset.
        page: Where the publisher lists the checkpoint.
    """

    name: str
    url: str
    filename: str
    sha256: str
    mode: str
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...] | None
    mpp: float
    licence: str
    citation: str
    dataset: str
    page: str = "https://github.com/vqdang/hover_net#data-format"

    @property
    def types(self) -> list[str] | None:
        """``types`` argument of ``import_hovernet`` (None: no type branch)."""
        return None if self.class_names == ("nucleus",) else list(self.class_names)


def _tia(name, file, mode, names, colors, dataset, licence, cite=_CITE) -> ModelEntry:
    return ModelEntry(
        name, f"{_TIA}/{file}", file, "", mode, names, colors, 0.25, licence, cite, dataset
    )


#: Name -> entry. Type names and colours: the official type_info.json (PanNuke),
#: the official training code and README legend (CoNSeP), TIAToolbox (MoNuSAC).
REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        _tia(
            "hovernet-pannuke",
            "hovernet_fast-pannuke.pth",
            "fast",
            ("neoplastic", "inflammatory", "connective", "dead", "non-neoplastic epithelial"),
            ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 165, 0)),
            "PanNuke",
            _NC.format("PanNuke"),
            _CITE + " Gamper J et al. PanNuke Dataset Extension, Insights and Baselines. "
            "arXiv:2003.10778 (2020).",
        ),
        _tia(
            "hovernet-monusac",
            "hovernet_fast-monusac.pth",
            "fast",
            ("epithelial", "lymphocyte", "macrophage", "neutrophil"),
            None,
            "MoNuSAC",
            _NC.format("MoNuSAC"),
            _CITE + " Verma R et al. MoNuSAC2020: A Multi-Organ Nuclei Segmentation and "
            "Classification Challenge. IEEE TMI 40(12) (2021) 3413-3423.",
        ),
        _tia(
            "hovernet-consep",
            "hovernet_original-consep.pth",
            "original",
            ("miscellaneous", "inflammatory", "epithelial", "spindle-shaped"),
            ((0, 255, 255), (255, 0, 0), (0, 0, 255), (0, 255, 0)),
            "CoNSeP",
            _MIT.format("CoNSeP"),
        ),
        _tia(
            "hovernet-kumar",
            "hovernet_original-kumar.pth",
            "original",
            ("nucleus",),
            None,
            "Kumar (MoNuSeg 2018 training set)",
            _MIT.format("Kumar"),
            _CITE + " Kumar N et al. A Dataset and a Technique for Generalized Nuclear "
            "Segmentation for Computational Pathology. IEEE TMI 36(7) (2017) 1550-1560.",
        ),
        ModelEntry(
            "hovernet-cpm17",
            "",  # published on Google Drive only: no stable direct link
            "hovernet_original_cpm17_notype_tf2pytorch.tar",
            "",
            "original",
            ("nucleus",),
            None,
            0.25,
            _MIT.format("CPM-17"),
            _CITE + " Vu QD et al. Methods for Segmentation and Classification of Digital "
            "Microscopy Tissue Images. Frontiers in Bioengineering and Biotechnology 7 (2019) 53.",
            "CPM-17",
            "https://github.com/vqdang/hover_net#data-format (CPM17 checkpoint, Google Drive)",
        ),
    )
}


def is_registered(name: object) -> bool:
    """Whether ``name`` (str or a one-component path, as argparse gives) is a registry name."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    return isinstance(name, str) and name in REGISTRY


def _entry(name: str) -> ModelEntry:
    if name not in REGISTRY:
        raise ValueError(f"expected a model name from {sorted(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def _root(cache_dir: str | os.PathLike | None) -> Path:

    return cache_root(cache_dir)


def cached_bundle(name: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The converted bundle of ``name`` in the cache, or None when not there yet."""
    path = _root(cache_dir) / "models" / _entry(name).name
    return path if (path / "model.json").is_file() else None


def list_models(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per registry entry: name, mode, dataset, licence, mpp, types, cached."""
    return [
        {
            "name": e.name,
            "mode": e.mode,
            "dataset": e.dataset,
            "types": list(e.class_names),
            "mpp": e.mpp,
            "licence": e.licence,
            "cached": cached_bundle(e.name, cache_dir) is not None,
            "url": e.url or e.page,
        }
        for e in REGISTRY.values()
    ]


def _url(entry: ModelEntry, base_url: str | None) -> str:
    base = base_url or os.environ.get("HVX_MODEL_BASE_URL")
    if base:
        return base.rstrip("/") + "/" + entry.filename
    return entry.url


def _download(url: str, dest: Path, expected: str, progress: bool, timeout: float) -> None:
    """Streams ``url`` into ``dest`` atomically (:func:`hvx.io.atomic.atomic_file`).

    The file appears at ``dest`` only when complete and its SHA-256 verified.
    """
    from tqdm import tqdm

    h = hashlib.sha256()
    with atomic_file(dest) as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress
        ) as bar:
            got = 0
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if total is not None and got != total:
            raise OSError(f"download of {url} stopped at {got} of {total} bytes")
        _verify(h.hexdigest(), expected, url)


def _verify(digest: str, expected: str, what: str) -> None:
    if expected and digest != expected:
        raise ValueError(f"{what}: SHA-256 {digest} differs from the registry's {expected}")
    if not expected:
        log.warning(
            "%s: SHA-256 %s (hvx has no verified checksum for this file yet; compare it "
            "with the publisher's)",
            what,
            digest,
        )


def fetch(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """The bundle of a registered model, downloaded and converted on first use.

    Args:
        name: Registry name (:data:`REGISTRY`).
        cache_dir: Cache root (default ``$HVX_CACHE_DIR`` or ``~/.cache/hvx``).
        base_url: Folder URL replacing the registry's (default
            ``$HVX_MODEL_BASE_URL``); the file name is appended.
        progress: Show a tqdm progress bar.
        timeout: Seconds without data before a download is abandoned.

    Returns:
        The bundle folder (``<cache>/models/<name>``).

    Raises:
        ValueError: Unknown name, checksum mismatch, or a bad checkpoint.
        ConnectionError: The download failed (offline, server error); the message
            says how to proceed without a network.
    """
    name = os.fspath(name) if isinstance(name, os.PathLike) else name
    entry = _entry(name)
    bundle = cached_bundle(name, cache_dir)
    if bundle is not None:
        return bundle
    root = _root(cache_dir)
    ckpt = root / "downloads" / entry.filename
    url = _url(entry, base_url)
    if ckpt.is_file():
        _verify(file_sha256(ckpt), entry.sha256, str(ckpt))
    elif not url:
        raise ConnectionError(
            f"{name}: no direct download; get {entry.filename} from {entry.page} and put it "
            f"at {ckpt} (or run hvx import-hovernet FILE --mode {entry.mode} --out DIR)"
        )
    else:
        log.info("downloading %s (%s) from %s", name, entry.licence, url)
        try:
            _download(url, ckpt, entry.sha256, progress, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ConnectionError(
                f"{name}: cannot download {url} ({reason}); offline? download it elsewhere "
                f"and put it at {ckpt}, or set HVX_MODEL_BASE_URL to a mirror"
            ) from None
    return _convert(entry, ckpt, root, url)


def _convert(entry: ModelEntry, ckpt: Path, root: Path, url: str) -> Path:
    from hvx.model.hovernet_checkpoint import import_hovernet

    out = root / "models" / entry.name
    import_hovernet(
        ckpt,
        out,
        mode=entry.mode,
        types=entry.types,
        class_colors=entry.class_colors,
        mpp=entry.mpp,
        licence=entry.licence,
        citation=entry.citation,
        source=url or entry.page,
        name=entry.name,
    )
    ckpt.unlink(missing_ok=True)  # the bundle holds the same weights (and the file's SHA-256)
    log.info("%s converted to the bundle %s", entry.name, out)
    return out


def remove(name: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """Deletes the cached bundle of ``name``; returns whether there was one."""
    bundle = cached_bundle(name, cache_dir)
    if bundle is None:
        return False
    shutil.rmtree(bundle)
    return True
