"""Hand-made results of a small run: two attacks with IEU, one with Potion."""

import numpy as np
import pandas as pd

from ieu_potion.reporting.results import result_rows


def sample_results() -> pd.DataFrame:
    frames = [
        result_rows(
            "digits",
            "badnets_white",
            "none",
            0,
            {
                "clean_accuracy": 0.84,
                "attack_success_rate": 0.93,
                "seconds": 110.0,
                "seconds_per_epoch": 11.0,
            },
        ),
        result_rows(
            "digits",
            "badnets_white",
            "ieu",
            0,
            {
                "clean_accuracy": 0.87,
                "attack_success_rate": 0.02,
                "seconds": 136.0,
                "seconds_per_epoch": 13.6,
                "gate_precision": 0.99,
            },
        ),
        result_rows(
            "digits", "blended", "none", 0, {"clean_accuracy": 0.86, "attack_success_rate": 0.97}
        ),
        result_rows(
            "digits", "blended", "ieu", 0, {"clean_accuracy": 0.87, "attack_success_rate": 0.03}
        ),
        # rows of another data set and of an attack this run does not list
        result_rows("cifar10", "badnets_white", "ieu", 0, {"clean_accuracy": 0.5}),
        result_rows("digits", "wanet", "ieu", 0, {"clean_accuracy": 0.5}),
    ]
    potion = {
        ("share_0.1", "none"): (0.06, 0.0, 0.0, None),
        ("share_0.5", "none"): (0.06, 0.0, 0.0, None),
        ("share_0.1", "xlf_ptn"): (0.70, -6.0, 2.0, 1.0),
        ("share_0.5", "xlf_ptn"): (0.76, -5.0, 3.0, 1.0),
        ("share_0.5", "eu"): (0.60, 1.7, 100.0, None),
        ("one_shot", "xlf_ptn"): (0.06, 0.0, 9.0, 0.0),
    }
    for (share, method), (healed, damage, seconds, converged) in potion.items():
        metrics = {
            "poison_healed": healed,
            "model_damage": damage,
            "seconds": seconds,
            "clean_accuracy": 0.84 + damage / 100,
            "attack_success_rate": 1 - healed,
        }
        if converged is not None:
            metrics["ptn_converged"] = converged
        frames.append(result_rows("digits", "badnets_white", method, 0, metrics, share))
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
    return {"confidence": confidence, "poisoned": poisoned, "labels": np.zeros(200, int)}


def sample_gate_history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "gate_precision": [0.5, 0.9, 0.95],
            "gate_recall": [0.2, 0.8, 0.95],
            "gate_flagged": [8, 18, 20],
        }
    )
