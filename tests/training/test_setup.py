import numpy as np
import pytest
import torch

from ieu_potion.data.imageset import ImageSet
from ieu_potion.pipelines.ieu_finetune.nodes import gate_backbone
from ieu_potion.training.setup import ModelParams, make_gate, rotation_task

GATE = {
    "name": "vit_tiny_patch16_224",
    "image_size": 16,
    "kwargs": {"patch_size": 4, "embed_dim": 24, "num_heads": 2},
}


def images(n, size=16, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ImageSet.clean(data, rng.integers(0, classes, n), list("abcde")[:classes])


def test_the_rotation_task_turns_every_image_four_ways_and_forgets_its_class():
    clean = images(3)
    turned = rotation_task(clean)
    assert len(turned) == 12 and turned.num_classes == 4
    assert list(turned.labels) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    np.testing.assert_array_equal(turned.images[:3], clean.images)
    # a quarter turn: the first row of the turned image is the last column of the original
    np.testing.assert_array_equal(turned.images[3][0], clean.images[0][:, -1])
    np.testing.assert_array_equal(turned.images[6], clean.images[0][::-1, ::-1])
    assert not turned.poisoned.any()
    oblong = ImageSet.clean(np.zeros((2, 8, 6, 3), np.uint8), [0, 1], "ab")
    with pytest.raises(ValueError, match="needs square images, got 8x6 px"):
        rotation_task(oblong)


def test_a_gate_pretrained_on_turns_is_cut_to_one_block_with_a_head_for_the_task():
    model = {
        "robust": {"name": "resnet10t", "image_size": 16},
        "gate": GATE,
        "gate_pretrain": {
            "depth": 2,
            "objective": "rotation",
            "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "warmup_epochs": 0},
        },
        "weights": {"source": "scratch"},
        "pretrain": {"train": {"epochs": 1, "batch_size": 16, "lr": 1e-3}},
    }
    net, history = gate_backbone(images(12), images(6, seed=1), model, seed=0)
    assert net.spec.num_classes == 4 and len(net.blocks) == 2  # the turns, not the 5 classes
    assert list(history.epoch) == [1] and 0 <= history.clean_accuracy.iloc[0] <= 1
    gate = make_gate(net, ModelParams.model_validate(GATE), depth=1, seed=0, num_classes=5)
    assert gate.spec.num_classes == 5 and len(gate.blocks) == 1
    assert gate(torch.zeros(2, 3, 16, 16)).shape == (2, 5)
    torch.testing.assert_close(gate.blocks[0].attn.qkv.weight, net.blocks[0].attn.qkv.weight)
