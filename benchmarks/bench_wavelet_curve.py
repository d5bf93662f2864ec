"""Benchmark: storage ratio against PSNR for wavelet compression on an MRI-like phantom.

The phantom is a head-like volume with smooth tissue classes (skull shell, grey and
white matter, ventricles), a low-frequency bias field, fine texture (band-limited noise
inside tissue) and Rician-like background noise, 256x256x160 (``--quick``: 64x64x40).
For db2 at levels 2 and 3 and ``keep`` in 0.01..0.2 it records the record size, the
ratio against float16 of the same volume, PSNR (data range of the volume) and the central
SSIM, with int16 and int8 values, to ``benchmarks/results/wavelet_curve.json`` and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from volprep.preprocess import fidelity, wavelet

RESULTS = Path(__file__).resolve().parent / "results"
KEEPS = [0.01, 0.02, 0.05, 0.1, 0.2]


def mri_phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A T1-like head phantom in [0, ~1000], float32 ``[D, H, W, 1]``."""
    rng = np.random.default_rng([seed, 2])
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    r = np.sqrt(x**2 / 0.75 + y**2 / 0.9 + z**2 / 0.8)
    wobble = 0.04 * np.sin(7 * x + 3 * y) * np.cos(5 * z)  # folded cortex-like boundary
    head = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
    head += 350 * ((r > 0.86) & (r < 0.95))                   # scalp / skull marrow
    head += 550 * (r + wobble < 0.84)                          # grey matter
    head += 250 * (r + wobble < 0.70)                          # white matter (brighter)
    vent = ((x / 0.12) ** 2 + ((y - 0.05) / 0.3) ** 2 + (z / 0.2) ** 2) < 1
    head = np.where(vent, 180, head)                           # ventricles (CSF, dark)
    head = ndimage.gaussian_filter(head, 0.8)                  # partial volume
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 1.0)
    head *= 1 + 0.08 * texture / texture.std() * (head > 50)   # fine tissue texture
    head *= 1 + 0.15 * (x + 0.5 * y)                           # bias field
    noise = rng.normal(0, 8, (2, *shape)).astype(np.float32)
    magnitude = np.sqrt((head + noise[0]) ** 2 + noise[1] ** 2)  # Rician
    return magnitude.astype(np.float32)[..., None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64x64x40 volume")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("wavelet_curve_quick.json" if args.quick else "wavelet_curve.json")
    shape = (64, 64, 40) if args.quick else (256, 256, 160)
    volume = mri_phantom(shape)
    span = float(volume.max() - volume.min())
    rows = []
    print(f"{'wavelet':>7} {'lvl':>3} {'keep':>5} {'values':>6} {'index':>7} {'bytes':>9} {'ratio':>6} {'PSNR dB':>8} {'SSIM':>6}")
    for level in (2, 3):
        for values in ("int16", "int8"):
            for keep in KEEPS:
                spec = wavelet.layout(volume.shape, "db2", level, keep, values)  # type: ignore[arg-type]
                decoded = wavelet.decode(wavelet.encode(volume, "db2", level, keep, values), spec)
                row = {
                    "wavelet": "db2", "level": level, "keep": keep, "values": values,
                    "index_coding": spec["index_coding"], "bytes": spec["nbytes"],
                    "ratio_vs_float16": fidelity.storage_ratio(volume.size, spec["nbytes"]),
                    "psnr_db": fidelity.psnr(volume, decoded, span),
                    "ssim_central": fidelity.central_ssim(volume, decoded),
                }
                rows.append(row)
                print(f"{'db2':>7} {level:>3} {keep:>5} {values:>6} {row['index_coding']:>7} {row['bytes']:>9} "
                      f"{row['ratio_vs_float16']:>6.2f} {row['psnr_db']:>8.2f} {row['ssim_central']:>6.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"shape": list(shape), "data_range": span, "rows": rows}, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for level in (2, 3):
        for values, style in (("int16", "-o"), ("int8", "--s")):
            pts = [r for r in rows if r["level"] == level and r["values"] == values]
            ax.plot([r["ratio_vs_float16"] for r in pts], [r["psnr_db"] for r in pts], style, label=f"db2 L{level} {values}")
            for r in pts:
                ax.annotate(f"{r['keep']}", (r["ratio_vs_float16"], r["psnr_db"]), fontsize=6)
    ax.axhline(35, color="grey", lw=0.5)
    ax.axvline(4, color="grey", lw=0.5)
    ax.set_xlabel("storage ratio vs float16 (x smaller)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"wavelet compress on an MRI-like phantom {shape}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
