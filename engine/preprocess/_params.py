"""Host-side constants shared by every implementation (numba, Triton, tests).

Everything here is computed once per call on the host, in exactly the
precision OpenCV uses, so the kernels only have to replay OpenCV's per-pixel
arithmetic. Sources of each formula: ../shared/TOOLCHAIN.md ("OpenCV's exact
8-bit formulas"), OpenCV ``imgproc/src/clahe.cpp`` and ``color_hsv``/``color_yuv``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Round-half-to-even of a float32 0 <= x < 2**22: ``(x + MAGIC) - MAGIC`` (= cvRound).
MAGIC = 12582912.0  # 1.5 * 2**23

#: OpenCV ``COLOR_RGB2HSV`` 8-bit: ``S = (diff * SDIV[V] + 2048) >> 12``.
SDIV = np.array([0] + [int(np.rint((255 << 12) / float(i))) for i in range(1, 256)], dtype=np.int32)

#: Output channel order of the "6ch" mode (SPEC §7a, paper Fig. 1).
CHANNELS_6CH = ("B", "G", "R", "S", "Cr", "Cb")
#: Output channel order of the "rgb" mode.
CHANNELS_RGB = ("R", "G", "B")


@dataclasses.dataclass(frozen=True)
class ClaheGeometry:
    """OpenCV CLAHE's tiling of an H x W uint8 plane (identical for R, G and B).

    OpenCV pads the plane bottom/right with BORDER_REFLECT_101 (for the LUTs
    only) when H or W is not a multiple of the grid; note that it then pads
    *both* axes, by ``grid - size % grid`` (a full ``grid`` when that axis was
    already a multiple).

    Attributes:
        height, width: Image size H, W.
        grid_x, grid_y: Tiles across (width) and down (height).
        tile_w, tile_h: Tile size in the padded plane.
        clip: Integer histogram clip limit, ``max(int(clipLimit*area/256), 1)``.
        lut_scale: ``float32(255) / float32(tile area)``.
        inv_tw, inv_th: ``float32(1) / float32(tile_w)``, same for tile_h.
    """

    height: int
    width: int
    grid_x: int
    grid_y: int
    tile_w: int
    tile_h: int
    clip: int
    lut_scale: np.float32
    inv_tw: np.float32
    inv_th: np.float32

    @classmethod
    def create(
        cls,
        height: int,
        width: int,
        grid: tuple[int, int],
        clip_limit: float,
        tile_size: int | None = None,
    ):
        """Computes the geometry of ``cv2.createCLAHE(clip_limit, grid)`` on H x W.

        With ``tile_size`` (``PreprocessConfig.tile_size``), ``grid`` is ignored:
        the geometry is OpenCV's on the image padded to multiples of
        ``tile_size``, i.e. ``ceil(size / tile_size)`` tiles of ``tile_size``.
        """
        if tile_size is not None:
            t = int(tile_size)
            gx, gy, tw, th = -(-width // t), -(-height // t), t, t
        else:
            gx, gy = int(grid[0]), int(grid[1])
            if width % gx == 0 and height % gy == 0:
                wp, hp = width, height
            else:
                wp, hp = width + gx - width % gx, height + gy - height % gy
            tw, th = wp // gx, hp // gy
        area = tw * th
        clip = max(int(float(clip_limit) * area / 256), 1)  # C++: double, truncated
        return cls(
            height=height,
            width=width,
            grid_x=gx,
            grid_y=gy,
            tile_w=tw,
            tile_h=th,
            clip=clip,
            lut_scale=np.float32(255.0) / np.float32(area),
            inv_tw=np.float32(1.0) / np.float32(tw),
            inv_th=np.float32(1.0) / np.float32(th),
        )

    @property
    def n_tiles(self) -> int:
        """Tiles per plane, ``grid_x * grid_y``."""
        return self.grid_x * self.grid_y

    def padded_to_source(self) -> tuple[np.ndarray, np.ndarray]:
        """Source row/column of every padded row/column (BORDER_REFLECT_101).

        Returns:
            ``(ymap ndarray[grid_y * tile_h] int32, xmap ndarray[grid_x * tile_w] int32)``.
        """
        return (
            reflect101(np.arange(self.grid_y * self.tile_h), self.height),
            reflect101(np.arange(self.grid_x * self.tile_w), self.width),
        )


def reflect101(p: np.ndarray, n: int) -> np.ndarray:
    """OpenCV ``borderInterpolate(p, n, BORDER_REFLECT_101)`` for p >= 0, any pad length.

    Args:
        p: ndarray[K] int, padded coordinates >= 0.
        n: Length of the source axis, >= 1.

    Returns:
        ndarray[K] int32 of source coordinates in [0, n).
    """
    p = np.asarray(p, dtype=np.int64)
    if n == 1:
        return np.zeros(p.shape, dtype=np.int32)
    period = 2 * (n - 1)
    q = p % period
    return np.where(q < n, q, period - q).astype(np.int32)


def norm_table(n_channels: int, mean, std) -> np.ndarray:
    """Per-channel map from a uint8 plane value to the network input.

    ``table[c, v] = float32((v / 255 - mean[c]) / std[c])`` evaluated in float64
    and rounded once, so every implementation writes bit-identical floats and
    ``mean=None, std=None`` gives exactly ``float32(v / 255)``.

    Args:
        n_channels: C, output channels.
        mean: Sequence of C floats, or None for 0.
        std: Sequence of C floats, or None for 1.

    Returns:
        ndarray[C, 256] float32.
    """
    v = np.arange(256, dtype=np.float64)[None, :] / 255.0
    m = np.zeros((n_channels, 1)) if mean is None else np.asarray(mean, np.float64)[:, None]
    s = np.ones((n_channels, 1)) if std is None else np.asarray(std, np.float64)[:, None]
    return np.ascontiguousarray(((v - m) / s).astype(np.float32))
