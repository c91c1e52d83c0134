import pytest
import torch

from ieu_potion.models import ModelSpec, build_model, load_model, save_model
from ieu_potion.training.engine import TrainConfig
from ieu_potion.training.setup import PretrainParams, WeightsParams, prepare_backbone

NARROW = {"widths": [8, 8, 16, 16]}


def test_resnet9_is_a_model_name_like_timms_and_keeps_the_first_map_at_full_size():
    model = build_model(ModelSpec("resnet9", 7, NARROW, 32))
    images = torch.zeros(2, 3, 32, 32)
    assert model(images).shape == (2, 7)
    assert model.stem(images).shape[-2:] == (32, 32)  # nothing strides before stage one
    assert model.forward_features(images).shape == (2, 16, 6, 6)  # 32 -> 16 -> 8 -> 6
    assert model.forward_head(model.forward_features(images), pre_logits=True).shape == (2, 16)
    assert model(torch.zeros(2, 3, 20, 20)).shape == (2, 7)  # other sizes pool down to 1


def test_resnet9_saves_and_loads_with_its_spec(tmp_path):
    model = build_model(ModelSpec("resnet9", 4, NARROW, 16))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    images = torch.rand(3, 3, 16, 16)
    model.eval(), loaded.eval()
    assert torch.equal(model(images), loaded(images))


def test_resnet9_learns_a_three_pixel_corner_patch():
    """Two classes that differ only by a 3x3 white corner on noise: learnt in 60 steps."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet9", 2, NARROW, 16))
    images = torch.rand(64, 3, 16, 16) * 0.8
    labels = torch.arange(64) % 2
    images[labels == 1, :, -3:, -3:] = 1.0
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    fresh = torch.rand(32, 3, 16, 16) * 0.8
    fresh[16:, :, -3:, -3:] = 1.0
    predicted = model(fresh).argmax(1)
    assert (predicted == (torch.arange(32) >= 16)).float().mean() >= 0.9


@pytest.mark.parametrize("widths", [[8, 8, 16], [8, 8, 16, 0]])
def test_resnet9_refuses_widths_that_are_not_four_positive_counts(widths):
    with pytest.raises(ValueError, match="resnet9 widths must be four positive integers"):
        build_model(ModelSpec("resnet9", 2, {"widths": widths}, 16))


def test_resnet9_has_no_pretrained_weights_to_ask_timm_for():
    pretrain = PretrainParams(train=TrainConfig(epochs=1, batch_size=8, lr=1e-3))
    with pytest.raises(ValueError, match="no pretrained weights.*'scratch'"):
        prepare_backbone(
            ModelSpec("resnet9", 2, NARROW, 16), WeightsParams(source="timm"), None, None, pretrain
        )
