import pytest
import torch
from safetensors.torch import save_file

from ieu_potion.models import (
    ModelSpec,
    build_model,
    input_size,
    load_model,
    save_model,
    shallow_vit,
)
from ieu_potion.models.factory import load_backbone, read_state_dict
from ieu_potion.training.engine import TrainConfig
from ieu_potion.training.setup import PretrainParams, WeightsParams
from tests.badinput import bad_input

VIT = ModelSpec(
    "vit_tiny_patch16_224",
    5,
    {"patch_size": 4, "embed_dim": 48, "depth": 3, "num_heads": 3},
    image_size=16,
)


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown model 'resnet10'.*close matches: resnet10t"):
        ModelSpec("resnet10", 10).check()


def test_image_size_reaches_the_vit_and_the_views():
    model = build_model(VIT)
    assert input_size(model) == (16, 16)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 5)
    cnn = build_model(ModelSpec("resnet10t", 3, image_size=24))
    assert input_size(cnn) == (24, 24)


def test_shallow_vit_copies_the_first_blocks_and_has_a_fresh_head():
    robust = build_model(VIT)
    gate = shallow_vit(robust, depth=1)
    assert len(gate.blocks) == 1 and gate.spec.kwargs["depth"] == 1
    torch.testing.assert_close(gate.blocks[0].attn.qkv.weight, robust.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(gate.patch_embed.proj.weight, robust.patch_embed.proj.weight)
    torch.testing.assert_close(gate.pos_embed, robust.pos_embed)
    assert not torch.equal(gate.head.weight, robust.head.weight)
    other = shallow_vit(robust, depth=2, num_classes=7)  # a head for another task's classes
    assert other.spec.num_classes == 7 and other.head.out_features == 7
    torch.testing.assert_close(other.blocks[1].mlp.fc1.weight, robust.blocks[1].mlp.fc1.weight)
    with pytest.raises(ValueError, match=r"depth must lie in \[1, 3\]"):
        shallow_vit(robust, depth=4)


def test_save_and_load_round_trip(tmp_path):
    model = build_model(VIT)
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors", "spec.json"]
    loaded = load_model(tmp_path / "m")
    assert loaded.spec == model.spec
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_loads_the_backbone_and_keeps_a_fresh_head(tmp_path, suffix):
    source = build_model(ModelSpec("resnet10t", 7))
    path = tmp_path / f"ckpt{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".pth":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_file(state, path)
    target = build_model(ModelSpec("resnet10t", 3))
    head_before = target.fc.weight.detach().clone()
    load_backbone(target, read_state_dict(path), str(path))
    torch.testing.assert_close(target.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(target.fc.weight, head_before), "the 7-class head must not be loaded"


def test_pickled_objects_in_a_pth_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(2), "payload": object()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        read_state_dict(path)


def test_checkpoint_for_another_model_is_an_error(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"nothing.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no tensor matches the model resnet10t"):
        load_backbone(build_model(ModelSpec("resnet10t", 3)), read_state_dict(path), str(path))


def test_missing_checkpoint_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="give a .safetensors file or a .pth"):
        read_state_dict(tmp_path / "absent.safetensors")


@bad_input(
    "`model.weights.source: timm` without the internet (nor timm's cache)",
    "WeightsUnavailableError in one sentence: needs the internet, or a local checkpoint",
)
def test_timm_weights_offline_say_so_in_one_sentence(monkeypatch):
    import huggingface_hub.constants

    from ieu_potion.training.setup import WeightsUnavailableError, prepare_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here
    monkeypatch.setenv("HF_HOME", "/nonexistent-cache")
    spec = ModelSpec("resnet10t", 10, {}, 32)
    weights = WeightsParams(source="timm")
    pretrain = PretrainParams(train=TrainConfig(epochs=1, batch_size=8, lr=1e-3))
    with pytest.raises(WeightsUnavailableError) as caught:
        prepare_backbone(spec, weights, None, None, pretrain)
    message = str(caught.value)
    assert "resnet10t" in message and "internet" in message and "'checkpoint'" in message
    assert "\n" not in message
