"""Tests of memmix_hub: the one "Hub cannot be reached" error and offline check, and the shared model-card writer.

Run from the repository root: ``python -m pytest -q tests/test_hub.py`` (about a second; no network).
"""

import pytest
from huggingface_hub import ModelCard

import memmix_data
from memmix_hub import (
    DATASETS_OFFLINE_ENV_VARS,
    HubUnreachableError,
    check_hub_reachable,
    dataset_identity,
    eval_results,
    hub_is_offline,
    is_connection_error,
    looks_like_hub_id,
    merge_into_card,
    new_model_card,
)


@pytest.fixture
def online(monkeypatch):
    for name in DATASETS_OFFLINE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_error_class_everywhere():
    assert memmix_data.HubUnreachableError is HubUnreachableError
    assert issubclass(HubUnreachableError, ConnectionError)


def test_offline_switches_are_read_at_call_time(online):
    assert not hub_is_offline()
    online.setenv("HF_DATASETS_OFFLINE", "1")
    assert not hub_is_offline() and hub_is_offline(DATASETS_OFFLINE_ENV_VARS)
    online.setenv("TRANSFORMERS_OFFLINE", " yes ")
    assert hub_is_offline()


def test_hub_ids_and_local_paths(tmp_path):
    assert looks_like_hub_id("some-org/some.model_v2")
    assert not looks_like_hub_id("./no/such/folder") and not looks_like_hub_id("a/b/c")
    folder = tmp_path / "org"
    (folder / "name").mkdir(parents=True)
    assert not looks_like_hub_id(str(folder / "name"))


def test_connection_errors_are_recognised_by_name_or_message():
    class OfflineModeIsEnabled(Exception):
        pass

    assert is_connection_error(OfflineModeIsEnabled("x")) and is_connection_error(OSError("We couldn't connect"))
    assert not is_connection_error(ValueError("bad value"))


def test_check_hub_reachable_before_a_push(online, tmp_path):
    check_hub_reachable("org/model", tmp_path)  # online: nothing to say
    online.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match=r"org/model.*offline mode is on \(HF_HUB_OFFLINE=1\)"):
        check_hub_reachable("org/model")
    with pytest.raises(HubUnreachableError, match=rf"folder {tmp_path} is kept; rerun later"):
        check_hub_reachable("org/model", tmp_path, advice="rerun later")


def test_new_card_writes_fixed_decimals_and_merge_replaces_same_measurements(tmp_path):
    name, kind = dataset_identity("builtin")
    results = eval_results("text-generation", name, kind, "validation",
                           [("bits_per_byte", 2.08, "Validation bits per byte"), ("loss", 4.123456, "Loss")],
                           decimals=4, pad_decimals=True)
    card = new_model_card("tiny", "\n# tiny\n\nBody.\n", eval_results=results, license="apache-2.0",
                          tags=["memmix"])
    card.save(tmp_path / "README.md")
    front_matter = (tmp_path / "README.md").read_text().split("---")[1]
    assert "model-index:" in front_matter and "value: 2.0800" in front_matter and "value: 4.1235" in front_matter
    newer = eval_results("text-generation", name, kind, "validation", [("bits_per_byte", 1.5, "bpb")])
    for _ in range(2):
        merge_into_card(tmp_path, newer)
    loaded = ModelCard.load(tmp_path / "README.md")
    values = {result.metric_type: result.metric_value for result in loaded.data.eval_results}
    assert values == {"loss": 4.1235, "bits_per_byte": 1.5} and "Body." in loaded.text
    assert loaded.data.license == "apache-2.0" and loaded.data.tags == ["memmix"]


def test_merge_into_a_folder_without_card(tmp_path):
    path = merge_into_card(tmp_path, eval_results("feature-extraction", "x.jsonl", "text", "validation",
                                                  [("accuracy", 0.5, "Hamming accuracy")]))
    card = ModelCard.load(path)
    assert card.data.eval_results[0].metric_value == 0.5 and f"# {tmp_path.name}" in card.text
    with pytest.raises(ValueError, match="not a folder"):
        merge_into_card(tmp_path / "missing", [])


def test_dataset_identity():
    assert dataset_identity("data/docs.jsonl") == ("docs.jsonl", "text")
    assert dataset_identity("HuggingFaceFW/fineweb-edu:sample-10BT") == ("HuggingFaceFW/fineweb-edu:sample-10BT",
                                                                         "HuggingFaceFW/fineweb-edu")
