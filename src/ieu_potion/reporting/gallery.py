"""The attack gallery: clean images, their triggered versions, and the difference."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ieu_potion.attacks.triggers import TRIGGERS
from ieu_potion.data.imageset import ImageSet
from ieu_potion.reporting.figures import with_reading


def attack_gallery(
    clean: ImageSet,
    triggered: ImageSet,
    attack: str,
    examples: int,
    codec_report: dict | None = None,
) -> go.Figure:
    """Rows: clean, triggered, |difference| scaled to full range; one column per example.

    ``triggered`` holds the non-target test images, so the clean originals are found by
    position among the clean test images of the same (non-target) true labels.  The
    caption says when the attack approximates its paper's, and for ISSBA what the decoder
    reads back (``codec_report``).
    """
    if examples < 1:
        raise ValueError(f"examples must be >= 1, got {examples}")
    target_free = np.flatnonzero(np.isin(clean.true_labels, np.unique(triggered.true_labels)))
    count = min(examples, len(triggered))
    picks = np.linspace(0, len(triggered) - 1, count).round().astype(int)
    before = clean.images[target_free[picks]].astype(np.int16)
    after = triggered.images[picks].astype(np.int16)
    diff = np.abs(after - before)
    scale = 255.0 / max(1, int(diff.max()))
    rows = {
        "clean": before.astype(np.uint8),
        "triggered": after.astype(np.uint8),
        f"|difference| x{scale:.1f}": np.clip(diff * scale, 0, 255).astype(np.uint8),
    }
    titles = [
        f"{clean.class_names[clean.true_labels[target_free[p]]]}" if r == 0 else ""
        for r in range(3)
        for p in picks
    ]
    fig = make_subplots(
        rows=3, cols=count, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.04
    )
    for r, (row_name, images) in enumerate(rows.items(), start=1):
        for c in range(count):
            fig.add_trace(go.Image(z=images[c], name=row_name), row=r, col=c + 1)
        fig.update_yaxes(title_text=row_name, row=r, col=1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    changed = diff.max(axis=-1) > 0
    reading = (
        f"The {attack} trigger changes {100 * changed.mean():.1f}% of the pixels of these "
        f"{count} test images (at most {100 * changed.mean(axis=(1, 2)).max():.1f}% of one "
        f"image); the changed channel values move by {diff[diff > 0].mean():.1f} on average "
        f"and by at most {int(diff.max())} of 255."
        if changed.any()
        else f"The {attack} trigger leaves these {count} test images unchanged."
    )
    if codec_report:
        reading += (
            f" The decoder reads {100 * codec_report['bit_accuracy']:.1f}% of the "
            f"{len(codec_report['secret'])}-bit secret back from the triggered test images; "
            f"residual PSNR {codec_report['psnr_db']:.1f} dB, largest change "
            f"{codec_report['linf']} of 255."
        )
    if TRIGGERS[attack].approximation:
        reading += f" Approximation: {TRIGGERS[attack].approximation}"
    fig.update_layout(
        height=3 * 150 + 100,
        width=max(500, 120 * count),
        margin={"l": 60, "r": 10},
    )
    return with_reading(fig, f"Attack {attack}: clean vs triggered test images", reading)
