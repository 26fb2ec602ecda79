"""The key tasks of the clustered attention chapter, their model and scores, and the paired bootstrap."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qattn.book.data.key_tasks import SEP, KeyTaskSpec, key_presence, key_span
from qattn.book.experiments.clustered_attention import task_scores
from qattn.book.models.key_tasks import KeyTaskModel
from qattn.book.stats import paired_bootstrap

SPEC = KeyTaskSpec(length=64, fillers=8, keys=6, records=3, max_span=4)


def test_presence_label_says_whether_the_asked_opener_is_in_the_body():
    tokens, labels = key_presence(SPEC, 200, torch.Generator().manual_seed(0))
    assert tokens.shape == (200, 64) and labels.shape == (200,)
    assert 60 < int(labels.sum()) < 140  # both labels occur
    assert (tokens[:, 2] == SEP).all() and (tokens[:, 1] == tokens[:, 0] + 1).all() and int(tokens.max()) < SPEC.vocab
    for row, label in zip(tokens, labels):
        asked = int(row[0])
        assert int((row[3:] == asked).sum()) == int(label)
        openers = [t for t in row[3:].tolist() if t >= SPEC.opener(0)]
        assert len(openers) == SPEC.records - 1 + int(label)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.integers(40, 120), records=st.integers(1, 4), max_span=st.integers(1, 5))
def test_span_is_strictly_between_the_asked_opener_and_its_closer(seed, length, records, max_span):
    spec = KeyTaskSpec(length=length, fillers=5, keys=5, records=records, max_span=max_span)
    tokens, spans = key_span(spec, 8, torch.Generator().manual_seed(seed))
    for row, (start, end) in zip(tokens.tolist(), spans.tolist()):
        asked_open, asked_close = row[0], row[1]
        assert asked_close == asked_open + 1 and row[2] == SEP
        assert 3 < start <= end < length - 1 and end - start + 1 <= max_span
        assert row[start - 1] == asked_open and row[end + 1] == asked_close
        assert row[3:].count(asked_open) == 1 and row[3:].count(asked_close) == 1
        assert all(t < spec.opener(0) for t in row[start : end + 1])  # the values are fillers
        assert sum(t >= spec.opener(0) and (t - spec.opener(0)) % 2 == 0 for t in row[3:]) == records


def test_splits_are_reproducible_and_differ_by_seed():
    a = key_span(SPEC, 5, torch.Generator().manual_seed(1))
    b = key_span(SPEC, 5, torch.Generator().manual_seed(1))
    c = key_span(SPEC, 5, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_spec_refuses_what_cannot_be_laid_out():
    with pytest.raises(ValueError, match="records must be in 1..keys"):
        KeyTaskSpec(keys=2, records=3)
    with pytest.raises(ValueError, match="length must be at least"):
        KeyTaskSpec(length=10, records=3, max_span=4)


def test_span_scores_exact_match_and_token_f1():
    class Fixed(torch.nn.Module):
        def __init__(self, start, end, n):
            super().__init__()
            self.start, self.end, self.n = start, end, n

        def forward(self, tokens):
            logits = torch.zeros(len(tokens), self.n, 2)
            logits[torch.arange(len(tokens)), self.start, 0] = 1
            logits[torch.arange(len(tokens)), self.end, 1] = 1
            return logits

    gold = torch.tensor([[3, 6], [3, 6], [3, 6], [3, 6]])
    model = Fixed(torch.tensor([3, 5, 8, 6]), torch.tensor([6, 6, 9, 4]), 12)
    scores = task_scores(model, "span", torch.zeros(4, 12, dtype=torch.long), gold)
    assert scores["exact"].tolist() == [1, 0, 0, 0]
    # exact; [5, 6] inside [3, 6]: P 1, R 0.5; disjoint; end before start (empty prediction)
    assert torch.allclose(scores["f1"], torch.tensor([1.0, 2 * 0.5 / 1.5, 0.0, 0.0], dtype=torch.float64))


def test_model_heads_and_errors():
    model = KeyTaskModel("presence", SPEC.vocab, 64, width=16, depth=1, num_heads=2)
    tokens, labels = key_presence(SPEC, 4, torch.Generator().manual_seed(0))
    assert model(tokens).shape == (4, 2)
    assert task_scores(model, "presence", tokens, labels)["correct"].shape == (4,)
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="task must be one of"):
        KeyTaskModel("tagging", 10, 8)


def test_paired_bootstrap_interval():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(400, generator=g) < 0.8).double()
    same = paired_bootstrap(a, a, 500)
    assert same["mean"] == same["low"] == same["high"] == 0.0
    worse = a * (torch.rand(400, generator=g) < 0.7)  # loses about 30 % of a's successes
    ci = paired_bootstrap(a, worse, 1000)
    assert 0 < ci["low"] < ci["mean"] < ci["high"] and ci["n"] == 400
    noise = (torch.rand(400, generator=g) < 0.8).double()  # an independent model as good as a
    null = paired_bootstrap(a, noise, 1000)
    assert null["low"] < 0 < null["high"]  # negative control: no difference, the interval covers 0
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(a, a[:3])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, a, level=1.5)
