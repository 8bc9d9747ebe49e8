"""Tests of document-level scoring (evaluation/document_scoring.py) and of ``--split all`` / ``--scoring documents``
in the report: hand-computable losses, rolling windows against a direct computation with the same contexts and
against lm-evaluation-harness's window rule, and every document's bytes counted.

Run from the repository root: ``python -m pytest -q tests/test_document_scoring.py`` (about 70 s on the shared 2-CPU machine).
The optional comparison with lm-evaluation-harness itself is skipped unless ``lm_eval`` is importable (it is not a
dependency of memmix; see README "Evaluating a whole file").
"""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from evaluation.document_scoring import (
    causal_max_length,
    prefix_token_id,
    rolling_windows,
    score_documents,
    tokenize_documents,
)
from evaluation.report import main, run_report
from memmix_data import END_OF_TEXT, builtin_documents, pack_documents, token_byte_lengths, train_tokenizer
from modeling_memmix import (
    MemoryMixerConfig,
    MemoryMixerForCausalLM,
    MixerAutoencoder,
    MixerAutoencoderConfig,
    MixerConfig,
    MixerForCausalLM,
)

VOCAB = 300
N_CTX = 8
FAST = {"compressors": ["gzip"], "progress": False}
MULTIBYTE = "Tōkyō 東京 naïve café — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ümlaut ß"


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(builtin_documents()[:150], vocab_size=VOCAB)


@pytest.fixture(scope="module")
def mixer():
    torch.manual_seed(0)
    return MixerForCausalLM(
        MixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, n_ctx=N_CTX)
    ).eval()


@pytest.fixture(scope="module")
def memory_model():
    torch.manual_seed(1)
    config = MemoryMixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, n_ctx=4, max_memories=2)
    return MemoryMixerForCausalLM(config).eval()


class ConstantLogits(torch.nn.Module):
    """Every token gets the same logit: probability 1/V everywhere, so every token costs ln V nats."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab_size))


def direct_token_losses(model, prefixed: list[int], max_length: int, stride: int) -> list[float]:
    """Each token scored by its own forward pass over the context the rule gives it (written independently of
    `rolling_windows`): tokens 0 .. L-1 read the document from the prefix on; a later token i sits in window
    j = (i - L) // stride + 1, which ends at min(L + j * stride, n), and reads the L inputs before that end."""
    n = len(prefixed) - 1
    losses = []
    for i in range(n):
        if i < max_length:
            start = 0
        else:
            end = min(max_length + ((i - max_length) // stride + 1) * stride, n)
            start = end - max_length
        context = torch.tensor([prefixed[start : i + 1]])
        with torch.no_grad():
            logits = model(input_ids=context).logits[0, -1].float()
        losses.append(float(-torch.log_softmax(logits, dim=-1)[prefixed[i + 1]]))
    return losses


def harness_rolling_windows(token_list, prefix_token, max_seq_len, context_len=1):
    """lm-evaluation-harness 0.4.13 `lm_eval.utils.get_rolling_token_windows` + `make_disjoint_window`
    (MIT licence), copied verbatim apart from the names, so the window rule is checked without installing it."""
    pred_len = max_seq_len - context_len + 1
    predicted = 0
    first_seq_len = min(max_seq_len, len(token_list))
    windows = [([prefix_token] + token_list[: first_seq_len - 1], token_list[:first_seq_len])]
    predicted += first_seq_len
    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len
        windows.append(
            (
                token_list[window_end - max_seq_len - 1 : window_end - 1],
                token_list[window_end - window_pred_len : window_end],
            )
        )
        predicted += window_pred_len
    return [(a[: len(a) - (len(b) - 1)], b) for a, b in windows]


# ---------------------------------------------------------------- hand-computable cases


def test_constant_logits_cost_ln_v_per_token_and_bytes_are_the_documents_utf8_bytes(tokenizer):
    documents = [MULTIBYTE, "short", "x" * 70 + " " + MULTIBYTE * 3]
    scores = score_documents(ConstantLogits(VOCAB), tokenizer, documents, max_length=N_CTX, batch_size=2)
    ids = tokenizer(documents, add_special_tokens=False)["input_ids"]
    assert scores.num_tokens == [len(row) for row in ids]  # every token, the first one included
    assert scores.num_bytes == [len(text.encode("utf-8")) for text in documents]
    assert scores.total_bytes > sum(len(text) for text in documents)  # bytes, not characters
    for losses, count in zip(scores.token_losses, scores.num_tokens):
        assert losses.shape == (count,)
        assert torch.allclose(losses, torch.full((count,), math.log(VOCAB), dtype=torch.float64), rtol=1e-6)
    expected = math.log(VOCAB) * scores.total_tokens / (math.log(2) * scores.total_bytes)
    assert scores.bits_per_byte == pytest.approx(expected, rel=1e-6)
    assert scores.cross_entropy == pytest.approx(math.log(VOCAB), rel=1e-6)


def test_the_prefix_is_end_of_text_and_a_literal_special_token_stays_text(tokenizer):
    assert prefix_token_id(tokenizer) == tokenizer.convert_tokens_to_ids(END_OF_TEXT) == 0
    [ids] = tokenize_documents(tokenizer, [f"before {END_OF_TEXT} after"])
    assert 0 not in ids


@pytest.mark.parametrize("num_tokens", [1, 5, 8, 9, 16, 17, 30])
@pytest.mark.parametrize("max_length", [1, 4, 8])
def test_windows_with_stride_max_length_are_the_harness_windows(num_tokens, max_length):
    tokens = list(range(1, num_tokens + 1))
    prefixed = [0, *tokens]
    ours = []
    for window in rolling_windows(num_tokens, max_length):
        inputs = prefixed[window.start : window.end]
        scored = prefixed[window.end - window.num_scored + 1 : window.end + 1]
        # the harness keeps (context, continuation) disjoint: the inputs before the first scored prediction
        ours.append((inputs[: len(inputs) - (window.num_scored - 1)], scored))
    assert ours == harness_rolling_windows(tokens, 0, max_length)
    assert sum(len(scored) for _, scored in ours) == num_tokens


@pytest.mark.parametrize("stride", [N_CTX, 3, 1])
def test_rolling_windows_equal_a_direct_computation_token_by_token(tokenizer, mixer, stride):
    document = " ".join(builtin_documents()[0].split()[:25])
    scores = score_documents(mixer, tokenizer, [document], stride=stride, batch_size=3)
    [ids] = tokenize_documents(tokenizer, [document])
    assert len(ids) > 2 * N_CTX  # several windows
    expected = direct_token_losses(mixer, [0, *ids], N_CTX, stride)
    assert scores.token_losses[0].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert scores.max_length == N_CTX and scores.stride == stride


def test_documents_within_one_window_equal_a_plain_forward_per_document(tokenizer):
    torch.manual_seed(3)
    mixer = MixerForCausalLM(
        MixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, n_ctx=32)
    ).eval()
    documents = ["Return the value.", "A b", "naïve café", "One more document here", "A b"]
    scores = score_documents(mixer, tokenizer, documents, batch_size=4)
    ids = tokenize_documents(tokenizer, documents)
    for index, row in enumerate(ids):
        prefixed = torch.tensor([[0, *row]])
        assert prefixed.shape[1] <= 32
        with torch.no_grad():
            output = mixer(input_ids=prefixed, labels=prefixed)
        assert scores.nll[index] == pytest.approx(float(output.loss_sum), rel=1e-5)
        assert scores.num_tokens[index] == int(output.num_tokens)
    one_at_a_time = score_documents(mixer, tokenizer, documents, batch_size=1)
    assert one_at_a_time.nll == pytest.approx(scores.nll, rel=1e-6)


def test_memory_model_documents(tokenizer, memory_model):
    max_length = memory_model.config.max_sequence_length
    assert causal_max_length(memory_model) == max_length == 12
    short, long = "Return the", " ".join(builtin_documents()[3].split()[:30])
    scores = score_documents(memory_model, tokenizer, [short, long], batch_size=2)
    [short_ids, long_ids] = tokenize_documents(tokenizer, [short, long])
    prefixed = torch.tensor([[0, *short_ids]])
    assert prefixed.shape[1] <= max_length and prefixed.shape[1] > memory_model.config.n_ctx  # reads memories
    with torch.no_grad():
        output = memory_model(input_ids=prefixed, labels=prefixed)
    assert scores.nll[0] == pytest.approx(float(output.loss_sum), rel=1e-5)
    assert len(long_ids) > 2 * max_length
    expected = direct_token_losses(memory_model, [0, *long_ids], max_length, max_length)
    assert scores.token_losses[1].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------- clear errors


def test_models_that_are_not_causal_lms_are_refused(tokenizer):
    autoencoder = MixerAutoencoder(
        MixerAutoencoderConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, n_ctx=N_CTX, embedding_dim=8
        )
    )
    with pytest.raises(ValueError, match="MixerAutoencoder.*not|no next-token"):
        score_documents(autoencoder, tokenizer, ["text"])
    oracle = MemoryMixerForCausalLM(
        MemoryMixerConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=1,
            n_ctx=4,
            max_memories=1,
            memory_mode="oracle",
        )
    )
    with pytest.raises(ValueError, match="memory_mode='oracle'"):
        score_documents(oracle, tokenizer, ["text"])
    with pytest.raises(ValueError, match="pass max_length"):
        score_documents(ConstantLogits(VOCAB), tokenizer, ["text"])


def test_bad_stride_and_empty_input(tokenizer, mixer):
    with pytest.raises(ValueError, match=r"stride must be between 1 and max_length=8, got 9"):
        score_documents(mixer, tokenizer, ["some text"], stride=9)
    with pytest.raises(ValueError, match=r"got 0"):
        rolling_windows(5, 8, stride=0)
    with pytest.raises(ValueError, match="No documents"):
        score_documents(mixer, tokenizer, [])


# ---------------------------------------------------------------- the report: --split all, --scoring documents


@pytest.fixture(scope="module")
def model_folder(tokenizer, mixer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixer") / "model"
    mixer.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    documents = [" ".join(text.split()[:40]) for text in builtin_documents()[200:230]] + [MULTIBYTE]
    path = tmp_path_factory.mktemp("data") / "docs.jsonl"
    path.write_text(
        "".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in documents), encoding="utf-8"
    )
    return str(path), documents


def test_split_all_document_mode_scores_every_document_of_the_file(
    model_folder, corpus, mixer, tokenizer, tmp_path
):
    path, documents = corpus
    report = run_report(model_folder, path, tmp_path / "out", split="all", scoring="documents", **FAST)
    summary = report["results"]["summary"]
    assert summary["documents"] == len(documents) == report["data"]["documents_evaluated"]
    assert summary["bytes"] == sum(len(text.encode("utf-8")) for text in documents)
    assert summary["tokens"] == sum(len(ids) for ids in tokenize_documents(tokenizer, documents))
    direct = score_documents(mixer, tokenizer, documents)
    assert summary["bits_per_byte"] == pytest.approx(direct.bits_per_byte, rel=1e-9)
    assert report["bits_per_byte"]["memmix causal LM (documents)"] == summary["bits_per_byte"]
    compressors = report["compressors"]
    assert compressors["bytes"] == summary["bytes"] and compressors["primer_bytes"] == 0
    assert set(compressors["bits_per_byte"]["gzip"]) == {"per_document", "stream"}  # no primed setting
    assert "no training text is left to prime with" in compressors["primer_source"]
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "every document, no train/validation split" in markdown and "no training text is left" in markdown
    assert f"{summary['bits_per_byte']:.4f}" in markdown


def test_split_all_window_mode_packs_every_document_unprimed(model_folder, corpus, tokenizer, tmp_path):
    path, documents = corpus
    report = run_report(model_folder, path, tmp_path / "out", split="all", **FAST)
    packed = pack_documents(documents, tokenizer, N_CTX)
    assert report["data"]["documents_evaluated"] == len(documents) and report["data"]["train_documents"] == 0
    assert report["data"]["windows"] == len(packed)
    first_token_bytes = int(token_byte_lengths(tokenizer)[packed.input_ids[:, 0]].sum())  # never scored
    assert report["compressors"]["bytes"] == int(packed.num_bytes.sum()) - first_token_bytes
    assert "primed" not in report["compressors"]["bits_per_byte"]["gzip"]
    assert report["data"]["validation_fraction"] is None


def test_report_cli_document_mode_refuses_the_autoencoder_in_one_line(tokenizer, corpus, tmp_path, capsys):
    folder = tmp_path / "ae"
    MixerAutoencoder(
        MixerAutoencoderConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, n_ctx=N_CTX, embedding_dim=8
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    code = main(
        [
            "--model",
            str(folder),
            "--data",
            corpus[0],
            "--scoring",
            "documents",
            "--out",
            str(tmp_path / "out"),
            "--no_progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]), err
    assert "MixerAutoencoder" in err
    code = main(
        ["--model", str(folder), "--data", corpus[0], "--stride", "4", "--out", str(tmp_path / "out")]
    )
    assert code == 2 and "applies to scoring='documents' only" in capsys.readouterr().err


# ---------------------------------------------------------------- optional: lm-evaluation-harness itself


def test_lm_evaluation_harness_gives_the_same_bits_per_byte(model_folder, corpus, mixer, tokenizer):
    pytest.importorskip(
        "lm_eval",
        reason="lm_eval (lm-evaluation-harness) is not installed; it is optional, "
        "see README 'Evaluating a whole file'",
    )
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    _, documents = corpus
    harness = HFLM(
        pretrained=model_folder, trust_remote_code=True, dtype="float32", batch_size=4, device="cpu"
    )
    assert harness.max_length == N_CTX and harness.prefix_token_id == 0
    requests = [
        Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=index)
        for index, text in enumerate(documents)
    ]
    loglikelihoods = harness.loglikelihood_rolling(requests, disable_tqdm=True)
    ours = score_documents(mixer, tokenizer, documents)
    assert [-value for value in loglikelihoods] == pytest.approx(ours.nll, rel=1e-4)
    harness_bpb = -sum(loglikelihoods) / (math.log(2) * sum(len(text.encode("utf-8")) for text in documents))
    assert harness_bpb == pytest.approx(ours.bits_per_byte, rel=1e-5)


def test_lm_eval_task_files_hold_exactly_the_documents_the_report_scores(corpus, tmp_path):
    from evaluation.lm_eval_task import evaluated_documents
    from evaluation.lm_eval_task import main as task_main
    from memmix_data import load_documents

    path, documents = corpus
    assert evaluated_documents(path, "all") == documents
    assert task_main(["--data", path, "--split", "all", "--out", str(tmp_path / "task")]) == 0
    assert load_documents(str(tmp_path / "task" / "documents.jsonl")) == documents
    yaml_text = (tmp_path / "task" / "memmix_documents.yaml").read_text(encoding="utf-8")
    assert "output_type: loglikelihood_rolling" in yaml_text
    assert str((tmp_path / "task" / "documents.jsonl").resolve()) in yaml_text
