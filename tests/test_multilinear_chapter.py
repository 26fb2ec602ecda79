"""The multi-linear attention chapter: its generated trimodal task, fusion models and analysis helpers."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from qattn.attention.multilinear import draw_features
from qattn.book.data.trimodal import PAIRS, TrimodalSpec, directions, make_trimodal, seven_class
from qattn.book.experiments import multilinear_attention as exp
from qattn.book.experiments.__main__ import CHAPTERS
from qattn.book.models.multimodal import FUSION_MODELS, build_fusion_model, count_parameters
from qattn.quaternion import hamilton

F64 = torch.float64


# -- the task -----------------------------------------------------------------------------------


def test_generation_is_repeatable_bit_for_bit_and_seed_dependent():
    a, b, c = make_trimodal(50, seed=3), make_trimodal(50, seed=3), make_trimodal(50, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs)) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.event_times, b.event_times)
    assert not torch.equal(a.labels, c.labels)


@pytest.mark.parametrize("shift", [0, 3])
def test_events_mark_the_modalities_they_name_at_their_times(shift):
    data = make_trimodal(200, seed=1, shift=shift)
    times = data.event_times
    joint = times[:, 0]
    assert (joint[:, 2] == joint[:, 0] + shift).all() and (joint[:, 1] == joint[:, 0]).all()
    for e, (m, n) in enumerate(PAIRS, start=1):
        other = ({0, 1, 2} - {m, n}).pop()
        assert (times[:, e, other] == -1).all() and (times[:, e, m] >= 0).all() and (times[:, e, n] >= 0).all()
    # the four base times are distinct, so the joint event is the only step where all three are marked
    base = torch.where(times[..., 0] >= 0, times[..., 0], times[..., 1])
    assert all(len(set(row.tolist())) == 4 for row in base)
    assert int(times.max()) < data.inputs[0].shape[1]


def test_label_is_three_times_the_product_of_the_joint_amplitudes():
    spec = TrimodalSpec(noise=0.0, label_noise=0.0)
    data = make_trimodal(100, seed=2, spec=spec)
    amplitude_dirs = [torch.from_numpy(v).float() for _, v, _ in directions(spec)]
    rows = torch.arange(100)
    amplitudes = torch.stack([data.inputs[m][rows, data.event_times[:, 0, m]] @ amplitude_dirs[m] for m in range(3)], -1)
    assert torch.allclose(data.labels, 3 * amplitudes.prod(-1), atol=1e-5)
    assert ((amplitudes.abs() >= spec.min_amplitude - 1e-5) & (amplitudes.abs() <= 1 + 1e-5)).all()
    # negative control: the product of only two modalities' amplitudes is not the label
    assert not torch.allclose(data.labels, 3 * amplitudes[:, :2].prod(-1), atol=0.1)


def test_no_pair_of_joint_signs_predicts_the_label_sign():
    """The sign is the parity of three signs: given two of them, the third (independent) decides it."""
    spec = TrimodalSpec(noise=0.0, label_noise=0.0, positive=0.5)
    data = make_trimodal(4000, seed=5, spec=spec)
    amplitude_dirs = [torch.from_numpy(v).float() for _, v, _ in directions(spec)]
    rows = torch.arange(4000)
    signs = torch.stack([torch.sign(data.inputs[m][rows, data.event_times[:, 0, m]] @ amplitude_dirs[m]) for m in range(3)], -1)
    label = torch.sign(data.labels)
    for i, j in itertools.combinations(range(3), 2):
        agreement = float((signs[:, i] * signs[:, j] == label).float().mean())
        assert abs(agreement - 0.5) < 0.04, (i, j, agreement)
    assert bool((signs.prod(-1) == label).all())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0, "seed": 0}, "n must be at least 1"),
        ({"n": 5, "seed": 0, "shift": 13}, "shift must lie in 0..12"),
        ({"n": 5, "seed": 0, "shift": -1}, "shift must lie in"),
    ],
)
def test_bad_task_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_trimodal(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"widths": (4, 4)}, "three feature counts"), ({"length": 3}, "at least 4"), ({"positive": 1.5}, "positive"), ({"noise": -1}, "≥ 0")],
)
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrimodalSpec(**kwargs)


def test_seven_classes_round_and_clip():
    assert seven_class(torch.tensor([-3.4, -2.6, -0.4, 0.49, 0.51, 2.5, 3.9])).tolist() == [0, 0, 3, 3, 4, 5, 6]


# -- the models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FUSION_MODELS)
def test_every_model_scores_each_example_repeatably_from_its_seed(name):
    data = make_trimodal(6, seed=0)
    xs = list(data.inputs)
    a, b, c = (build_fusion_model(name, (12, 8, 6), 16, seed) for seed in (0, 0, 1))
    out = a(xs)
    assert out.shape == (6,) and torch.isfinite(out).all()
    assert torch.equal(out, b(xs)) and not torch.equal(out, c(xs))
    assert count_parameters(a) > 0
    out.sum().backward()
    assert all(p.grad is not None for p in a.parameters() if p.requires_grad)


def test_building_models_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    build_fusion_model("man_arf_local", (12, 8, 6), 16, 3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_model_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="unknown fusion model 'man2'"):
        build_fusion_model("man2", (12, 8, 6), 16, 0)
    model = build_fusion_model("man", (12, 8, 6), 16, 0)
    with pytest.raises(ValueError, match="longer than the time code"):
        model([torch.zeros(1, 17, d) for d in (12, 8, 6)])


def test_local_and_arf_variants_differ_only_where_declared():
    exact, local = build_fusion_model("man", (12, 8, 6), 16, 0), build_fusion_model("man_local", (12, 8, 6), 16, 0)
    arf = build_fusion_model("man_arf", (12, 8, 6), 16, 0, features=64)
    assert exact.attention[0].features is None and arf.attention[0].features.shape == (64, 16)
    assert local.attention[0].local_weight is not None and exact.attention[0].local_weight is None
    assert count_parameters(local) == count_parameters(exact) + 1 and count_parameters(arf) == count_parameters(exact)


# -- the analysis helpers -----------------------------------------------------------------------


def test_sentiment_metrics_against_independent_computations():
    gen = torch.Generator().manual_seed(0)
    y = (6 * torch.rand(300, generator=gen) - 3).double()
    p = (y + 0.8 * torch.randn(300, generator=gen, dtype=F64)).clamp(-3, 3)
    got = exp.sentiment_metrics(p, y)
    assert got["mae"] == pytest.approx(float((p - y).abs().mean()))
    assert got["pearson"] == pytest.approx(stats.pearsonr(p.numpy(), y.numpy())[0], abs=1e-12)
    truth, guess = y.numpy() > 0, p.numpy() > 0
    assert got["accuracy2"] == pytest.approx(float(np.mean(truth == guess)))
    f1 = 0.0
    for cls in (True, False):
        tp = np.sum((truth == cls) & (guess == cls))
        precision, recall = tp / np.sum(guess == cls), tp / np.sum(truth == cls)
        f1 += 2 * precision * recall / (precision + recall) * np.mean(truth == cls)
    assert got["f1"] == pytest.approx(f1)
    assert got["accuracy7"] == pytest.approx(float(np.mean(np.clip(np.round(p.numpy()), -3, 3) == np.clip(np.round(y.numpy()), -3, 3))))
    perfect = exp.sentiment_metrics(y, y)
    assert perfect["mae"] == 0 and perfect["accuracy2"] == perfect["accuracy7"] == perfect["f1"] == 1.0


def test_arf_marginals_approach_the_exact_marginals():
    gen = torch.Generator().manual_seed(1)
    scores = [0.5 * torch.randn(2, n, 8, generator=gen, dtype=F64) for n in (5, 4, 3)]
    exact = exp.exact_marginals(scores)
    assert all(torch.allclose(e.sum(-1), torch.ones(2, dtype=F64)) for e in exact)
    errors = []
    for count in (16, 16384):
        est = exp.arf_marginals(scores, draw_features(8, count, torch.Generator().manual_seed(2), dtype=F64))
        assert all(torch.allclose(e.sum(-1), torch.ones(2, dtype=F64)) for e in est)
        errors.append(max(float((e - t).abs().sum(-1).max()) for e, t in zip(est, exact)))
    assert errors[1] < 0.05 and errors[1] < errors[0] / 8, errors


def test_exact_marginals_equal_a_loop_over_tuples():
    gen = torch.Generator().manual_seed(3)
    scores = [torch.randn(1, n, 4, generator=gen, dtype=F64) for n in (3, 2, 2)]
    logits = {
        t: sum(float(scores[a][0, t[a]] @ scores[b][0, t[b]]) / 2.0 for a, b in PAIRS)
        for t in itertools.product(range(3), range(2), range(2))
    }
    total = sum(math.exp(v) for v in logits.values())
    first = [sum(math.exp(v) for t, v in logits.items() if t[0] == i) / total for i in range(3)]
    assert torch.allclose(exp.exact_marginals(scores)[0][0], torch.tensor(first, dtype=F64))


def test_trilinear_logits_equal_hamilton_products_tuple_by_tuple():
    gen = torch.Generator().manual_seed(4)
    quats = [torch.randn(1, n, 8, generator=gen, dtype=F64) for n in (2, 3, 2)]  # 2 units each
    logits = exp.trilinear_logits(quats)
    for i, j, k in itertools.product(range(2), range(3), range(2)):
        product = hamilton(hamilton(quats[0][0, i], quats[1][0, j]), quats[2][0, k])
        assert float(logits[0, i, j, k]) == pytest.approx(float(product[:2].sum()) / math.sqrt(8), abs=1e-12)  # real block: units 0..1


def test_shared_scores_separate_into_pairs_and_the_trilinear_score_does_not():
    sep = exp.pairwise_separability()
    assert sep["shared_nonzero_third_derivatives"] == 0 and sep["trilinear_nonzero_third_derivatives"] > 0
    assert sep["derivatives"] == 64


def test_profiles_and_the_chapter_registration():
    ci, full = exp.config_for("ci"), exp.config_for("full")
    assert ci.seeds >= 2 and full.seeds >= 5 and full.steps > ci.steps
    assert set(full.models) == set(FUSION_MODELS) and CHAPTERS["multilinear_attention"] is False
    assert all(a in full.models and b in full.models for _, a, b in exp.COMPARISONS)
    with pytest.raises(ValueError, match="not allowed"):
        exp.config_for("ci", models=("transformer",))
