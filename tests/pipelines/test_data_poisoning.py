import re

import numpy as np
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from ieu_potion.adapters.datasets import (
    ArraysDataset,
    ImageSetDataset,
    JsonDataset,
    PlotlyFigureDataset,
    StegaCodecDataset,
)
from ieu_potion.data.digits import make_digits
from ieu_potion.pipelines.data_poisoning.pipeline import create_pipeline
from ieu_potion.reporting.figures import reading

PARAMS = {
    "data_split": {"pretrain_fraction": 0.25, "seed": 0},
    "data_poisoning": {
        "attacks": ["white", "blend04"],
        "discovery": {"shares": [0.5, 1.0], "seed": 0},
        "gallery_examples": 3,
    },
    "white": {"attack": {"name": "badnets_white", "target_class": 1, "rate": 0.1}},
    "blend04": {
        "attack": {"name": "blended", "target_class": 2, "count": 20, "settings": {"weight": 0.4}}
    },
}


def catalog_for(params, source, folder):
    """Parameters in memory, artifacts through the project's own dataset types."""
    datasets = {"source_images": MemoryDataset(source)}
    for name in ("pretrain_images", "finetune_images", "clean_test"):
        datasets[name] = ImageSetDataset(filepath=str(folder / f"{name}.npz"))
    for ns in params["data_poisoning"]["attacks"]:
        datasets[f"params:{ns}.attack"] = MemoryDataset(params[ns]["attack"])
        for seed in params.get("seeds", [0]):
            run, where = f"{ns}.seed_{seed}", folder / ns / f"seed_{seed}"
            for name in ("poisoned_train", "triggered_test"):
                datasets[f"{run}.{name}"] = ImageSetDataset(filepath=str(where / f"{name}.npz"))
            datasets[f"{run}.discovery_subsets"] = ArraysDataset(filepath=str(where / "d.npz"))
            datasets[f"{run}.attack_gallery"] = PlotlyFigureDataset(filepath=str(where / "g.json"))
            datasets[f"{run}.codec_report"] = JsonDataset(filepath=str(where / "codec.json"))
    for key in ("discovery", "gallery_examples", "stega_codec"):
        if key in params["data_poisoning"]:
            datasets[f"params:data_poisoning.{key}"] = MemoryDataset(params["data_poisoning"][key])
    datasets["stega_codec"] = StegaCodecDataset(filepath=str(folder / "stega_codec"))
    datasets["params:data_split"] = MemoryDataset(params["data_split"])
    return DataCatalog(datasets)


def test_one_namespace_per_listed_attack_and_seed():
    pipe = create_pipeline({**PARAMS, "seeds": [0, 3]})
    assert len(pipe.nodes) == 1 + 2 * 2 * 4
    outputs = pipe.all_outputs()
    for ns in ("white.seed_0", "white.seed_3", "blend04.seed_0", "blend04.seed_3"):
        assert {
            f"{ns}.poisoned_train",
            f"{ns}.triggered_test",
            f"{ns}.discovery_subsets",
            f"{ns}.attack_gallery",
        } <= outputs
    assert {n.namespace for n in pipe.nodes} == {
        None,
        "white.seed_0",
        "white.seed_3",
        "blend04.seed_0",
        "blend04.seed_3",
    }


def test_a_seed_count_stands_for_the_first_seeds():
    names = {n.namespace for n in create_pipeline({**PARAMS, "seeds": 3}).nodes}
    assert {"white.seed_0", "white.seed_1", "white.seed_2"} < names and len(names) == 7


def test_pipeline_runs_on_tiny_data(tmp_path):
    source = make_digits(copies=1, test_copies=1, image_size=16)
    params = {**PARAMS, "seeds": [0, 1]}
    catalog = catalog_for(params, source, tmp_path)
    SequentialRunner().run(create_pipeline(params), catalog)
    finetune = catalog.load("finetune_images")
    assert len(finetune) + len(catalog.load("pretrain_images")) == len(source["train"])
    white = catalog.load("white.seed_0.poisoned_train")
    # another seed poisons other samples, as many of them
    other = catalog.load("white.seed_1.poisoned_train")
    assert other.poisoned.sum() == white.poisoned.sum()
    assert not np.array_equal(other.poisoned, white.poisoned)
    assert white.poisoned.sum() == round(0.1 * len(finetune))
    assert not finetune.poisoned.any() and not catalog.load("pretrain_images").poisoned.any()
    blend = catalog.load("blend04.seed_0.poisoned_train")
    assert blend.poisoned.sum() == 20 and (blend.labels[blend.poisoned] == 2).all()
    subsets = catalog.load("blend04.seed_0.discovery_subsets")
    assert len(subsets["share_0.5"]) == 10 and len(subsets["share_1"]) == 20
    triggered = catalog.load("white.seed_0.triggered_test")
    assert (triggered.true_labels != 1).all()
    figure = catalog.load("white.seed_0.attack_gallery")
    assert len(figure.data) == 3 * 3 and figure.data[0].type == "image"
    # a corner patch: a small, nonzero share of the pixels
    pattern = r"The badnets_white trigger changes (\d+\.\d)% of the pixels"
    changed = re.search(pattern, reading(figure))
    assert changed and 0 < float(changed.group(1)) < 5
    assert np.array_equal(catalog.load("clean_test").images, source["test"].images)


def test_issba_trains_its_codec_once_and_reports_what_it_hid(tmp_path):
    source = make_digits(copies=1, test_copies=1, image_size=16)
    params = {
        **PARAMS,
        "data_poisoning": {
            **PARAMS["data_poisoning"],
            "attacks": ["white", "issba", "trojan"],
            "stega_codec": {"bits": 8, "width": 8, "steps": 30, "batch_size": 16},
        },
        "issba": {"attack": {"name": "issba", "target_class": 1, "rate": 0.1}},
        "trojan": {"attack": {"name": "trojan_sq", "target_class": 1, "rate": 0.1}},
    }
    pipe = create_pipeline(params)
    assert [n.name for n in pipe.nodes].count("train_stega_codec") == 1
    assert "stega_codec" not in create_pipeline(PARAMS).all_outputs()
    catalog = catalog_for(params, source, tmp_path)
    SequentialRunner().run(pipe, catalog)
    codec = catalog.load("stega_codec")
    assert codec.image_size == (16, 16) and 0 <= codec.metrics["bit_accuracy"] <= 1
    report = catalog.load("issba.seed_0.codec_report")
    poisoned = catalog.load("issba.seed_0.poisoned_train")
    assert report["poison_indices"] == np.flatnonzero(poisoned.poisoned).tolist()
    assert len(report["secret"]) == 8 and set(report["secret"]) <= {"0", "1"}
    assert 0 < report["linf"] <= round(0.1 * 255)
    text = reading(catalog.load("issba.seed_0.attack_gallery"))
    assert "of the 8-bit secret back" in text and "Approximation" not in text
    caption = reading(catalog.load("trojan.seed_0.attack_gallery"))
    assert "Approximation: TrojanNN optimises" in caption
