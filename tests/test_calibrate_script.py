"""scripts/calibrate.py: its ``--set`` overrides reach the parameters with their types."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("calibrate", ROOT / "scripts/calibrate.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def test_overrides_nest_and_keep_numbers_that_yaml_would_read_as_strings():
    overrides = script.parse_overrides(
        [
            "finetune.weight_decay=5e-3",
            "finetune.epochs=41",
            "finetune.augment.crop_scale=[1.0, 1.0]",
            "model.robust.name=resnet9",
            "potion.retain_set=exact",
            "finetune.augment.flip_p=0.5",
        ]
    )
    assert overrides == {
        "finetune": {
            "weight_decay": 0.005,
            "epochs": 41,
            "augment": {"crop_scale": [1.0, 1.0], "flip_p": 0.5},
        },
        "model": {"robust": {"name": "resnet9"}},
        "potion": {"retain_set": "exact"},
    }
    assert isinstance(overrides["finetune"]["epochs"], int)
