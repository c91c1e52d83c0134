"""Hand-made results of a small run: badnets_white over three seeds (IEU, none, Potion
over two seeds), blended with one seed."""

import numpy as np
import pandas as pd

from ieu_potion.results import RunKey

FINGERPRINT = "f00d"


def key(namespace: str, seed: int, attack: str | None = None) -> RunKey:
    return RunKey("digits", namespace, attack or namespace, seed, FINGERPRINT)


def sample_results() -> pd.DataFrame:
    frames = []
    runs = {
        # method: per seed (CA, ASR, seconds)
        "none": [(0.84, 0.93, 110.0), (0.85, 0.92, 100.0), (0.83, 0.94, 120.0)],
        "ieu": [(0.87, 0.02, 136.0), (0.88, 0.01, 124.0), (0.86, 0.03, 148.0)],
    }
    for method, per_seed in runs.items():
        for seed, (ca, asr, seconds) in enumerate(per_seed):
            metrics = {
                "clean_accuracy": ca,
                "attack_success_rate": asr,
                "seconds": seconds,
                "seconds_per_epoch": seconds / 10,
                "gate_precision": 0.99,
            }
            frames.append(key("badnets_white", seed).rows(method, metrics))
    frames += [
        key("blended", 0).rows("none", {"clean_accuracy": 0.86, "attack_success_rate": 0.97}),
        key("blended", 0).rows("ieu", {"clean_accuracy": 0.87, "attack_success_rate": 0.03}),
    ]
    potion = {
        ("share_0.1", "none"): ((0.06, 0.06), 0.0, 0.0, None),
        ("share_0.5", "none"): ((0.06, 0.06), 0.0, 0.0, None),
        ("share_0.1", "xlf_ptn"): ((0.70, 0.72), -6.0, 2.0, 1.0),
        ("share_0.5", "xlf_ptn"): ((0.76, 0.74), -5.0, 3.0, 1.0),
        ("share_0.5", "eu"): ((0.60, 0.62), 1.7, 100.0, None),
        ("one_shot", "xlf_ptn"): ((0.06, 0.08), 0.0, 9.0, 0.0),
    }
    for (share, method), (healed, damage, seconds, converged) in potion.items():
        for seed in (0, 1):
            metrics = {
                "poison_healed": healed[seed],
                "model_damage": damage - seed,
                "seconds": seconds,
                "clean_accuracy": 0.84 + (damage - seed) / 100,
                "attack_success_rate": 1 - healed[seed],
            }
            if converged is not None:
                metrics["ptn_converged"] = converged
            frames.append(key("badnets_white", seed).rows(method, metrics, share))
    return pd.concat(frames, ignore_index=True)


def sample_trace() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": [1, 2, 3, 1, 2],
            "s": [0.004, 0.0044, 0.0048, 0.004, 0.0044],
            "alpha": [50.0, 20.0, 6.0, 40.0, 30.0],
            "forget_accuracy": [0.9, 0.5, 0.08, 0.9, 0.7],
            "share": ["share_0.5"] * 3 + ["share_0.1"] * 2,
            "method": ["xlf_ptn"] * 5,
            "clean_accuracy": [0.84, 0.82, 0.79, np.nan, np.nan],
            "attack_success_rate": [0.9, 0.5, 0.1, np.nan, np.nan],
        }
    )


def sample_confidences() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    poisoned = np.zeros(200, bool)
    poisoned[:20] = True
    confidence = np.where(poisoned, 0.99, rng.uniform(0.1, 0.6, 200))
    confidence[0] = 0.5  # one poisoned sample the gate misses
    return {
        "confidence": confidence,
        "poisoned": poisoned,
        "labels": np.zeros(200, int),
        "tau": np.array(0.95),
    }


def sample_gate_history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "gate_precision": [0.5, 0.9, 0.95],
            "gate_recall": [0.2, 0.8, 0.95],
            "gate_flagged": [8, 18, 20],
        }
    )
