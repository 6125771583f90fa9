import json

import pytest
import torch

from dermcore.checkpoint import (
    CheckpointError,
    ModelCard,
    list_cards,
    load_checkpoint,
    read_card,
    save_checkpoint,
    sha256_file,
    state_dict_equal,
)
from dermcore.models import build_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", pretrained=False)
    directory = tmp_path_factory.mktemp("weights")
    card = ModelCard(name="tiny", arch="efficientnet_lite0", metrics={"test": {"accuracy": 0.5}})
    card_path = save_checkpoint(model, card, directory)
    return model, card_path


def _copy(saved, tmp_path):
    _, card_path = saved
    for suffix in (".json", ".safetensors"):
        src = card_path.with_suffix(suffix)
        (tmp_path / src.name).write_bytes(src.read_bytes())
    return tmp_path / card_path.name


def test_round_trip_restores_weights_and_card(saved):
    model, card_path = saved
    loaded, card = load_checkpoint(card_path)
    assert state_dict_equal(model, loaded)
    assert not loaded.training
    assert card.arch == "efficientnet_lite0" and card.metrics["test"]["accuracy"] == 0.5
    assert card.weights_sha256 == sha256_file(card_path.with_suffix(".safetensors"))
    assert card.get_preprocessing().input_size == 224
    assert card.version == 1 and card.created
    assert list_cards(card_path.parent) == [card_path]


def test_one_changed_byte_is_refused(saved, tmp_path):
    card_path = _copy(saved, tmp_path)
    weights = card_path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum") as err:
        load_checkpoint(card_path)
    assert "tiny.safetensors" in str(err.value)


def test_truncated_file_is_refused(saved, tmp_path):
    card_path = _copy(saved, tmp_path)
    weights = card_path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(card_path)


def test_missing_weights_file_is_refused_but_card_still_listed(saved, tmp_path):
    card_path = _copy(saved, tmp_path)
    card_path.with_suffix(".safetensors").unlink()
    assert list_cards(tmp_path) == [card_path]
    with pytest.raises(CheckpointError, match="is missing"):
        load_checkpoint(card_path)


def test_tampered_card_is_refused(saved, tmp_path):
    card_path = _copy(saved, tmp_path)
    card_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_card(card_path)
    card_path.write_text(json.dumps({"name": "x", "arch": "efficientnet_lite0"}))
    with pytest.raises(CheckpointError, match="does not name its weights"):
        read_card(card_path)


def test_weights_of_another_arch_are_refused(saved, tmp_path):
    card_path = _copy(saved, tmp_path)
    data = json.loads(card_path.read_text())
    data["arch"] = "resnet34"
    card_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="could not be loaded into a resnet34"):
        load_checkpoint(card_path)


def test_card_ignores_unknown_keys():
    card = ModelCard.from_dict({"name": "a", "arch": "resnet50", "future_field": 1})
    assert card.name == "a" and card.temperature == 1.0
