"""The Concentrate Attention chapter: its few-shot splits, statistics, hard-prompt matcher and a ci run of the whole experiment."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from qattn.book.experiments import concentrate_attention as exp
from qattn.book.experiments.__main__ import CHAPTERS

# -- data and splits -------------------------------------------------------------------------------


def test_few_shot_counts_disjointness_and_determinism():
    labels = np.array([0] * 40 + [1] * 70)
    a, b, c = exp.few_shot(labels, 8, seed=1), exp.few_shot(labels, 8, seed=1), exp.few_shot(labels, 8, seed=2)
    for part in ("train", "val"):
        assert np.bincount(labels[a[part]]).tolist() == [8, 8]
    together = np.concatenate([a["train"], a["val"], a["rest"]])
    assert sorted(together.tolist()) == list(range(len(labels)))  # disjoint and complete
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])
    assert len(exp.few_shot(labels, 8, seed=1, rest_size=10)["rest"]) == 10


def test_few_shot_refuses_a_class_too_small():
    with pytest.raises(ValueError, match="class 0 has 5 examples, fewer than 2 × shots = 16"):
        exp.few_shot(np.array([0] * 5 + [1] * 40), 8, seed=0)


@pytest.fixture(scope="module")
def ci_config():
    return exp.config_for("ci")


@pytest.fixture(scope="module")
def domains(ci_config):
    return exp.load_domains(ci_config)


def test_domains_are_the_four_real_sets(domains, ci_config):
    assert tuple(domains) == exp.DOMAINS == ("contraception", "mental_health", "other", "tweets")
    full = exp.load_domains(exp.config_for("full"))
    assert [len(full[n].labels) for n in exp.DOMAINS] == [174, 194, 520, 600]
    assert set(np.unique(full["tweets"].labels)) == {0, 1}
    # the ci cut keeps enough of each class for the shots
    for d in domains.values():
        assert min(np.bincount(d.labels)) >= 2 * ci_config.shots


def test_split_sources_and_target(domains, ci_config):
    split = exp.make_split(domains, "tweets", seed=0, cfg=ci_config)
    target = domains["tweets"]
    assert split.test[0] == list(target.texts) and torch.equal(split.test[1], torch.as_tensor(target.labels))
    sources = set().union(*(set(domains[n].texts) for n in exp.DOMAINS if n != "tweets"))
    for part in (split.train, split.val, split.in_domain):
        assert set(part[0]) <= sources and not set(part[0]) & set(target.texts)
    assert len(split.train[0]) == len(split.val[0]) == 3 * 2 * ci_config.shots
    assert np.bincount(split.train[1].numpy()).tolist() == [3 * ci_config.shots] * 2
    assert not set(split.train[0]) & set(split.val[0]) and not set(split.val[0]) & set(split.in_domain[0])
    with pytest.raises(ValueError, match="target must be one of"):
        exp.make_split(domains, "movies", seed=0, cfg=ci_config)


def test_config_refuses_unknown_names():
    with pytest.raises(ValueError):
        exp.config_for("ci", variants=("prompt_tuning", "louder"))
    with pytest.raises(ValueError):
        exp.config_for("ci", targets=("contraception", "movies"))


# -- statistics and the hard-prompt machinery ------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=3, max_size=20))
def test_spearman_matches_scipy_with_ties(pairs):
    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    ours = exp.spearman(x, y)
    if len(set(x)) < 2 or len(set(y)) < 2:
        assert np.isnan(ours)
    else:
        assert ours == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_logistic_regression_reaches_its_optimum():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 5, generator=g)
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * torch.randn(80, generator=g) > 0).long()
    score = exp.fit_logistic(x, y, l2=0.1)
    assert ((score(x) > 0).long() == y).double().mean() > 0.8
    # at the optimum the gradient of the regularised objective vanishes (checked independently)
    z = (x.double() - x.double().mean(0)) / x.double().std(0)
    w = torch.linalg.lstsq(z, score(x) - score(x).mean()).solution.requires_grad_(True)
    b = score(x).mean().clone().requires_grad_(True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y.double()) + 0.1 * (w * w).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-5 and b.grad.abs() < 1e-5


def test_linucb_learns_which_arm_suits_which_context_and_a_shuffled_reward_control_does_not():
    g = torch.Generator().manual_seed(1)
    n = 300
    sign = torch.randint(0, 2, (n,), generator=g)
    contexts = torch.stack([sign * 2.0 - 1, torch.ones(n)], 1)
    rewards = torch.stack([(sign == 1).double(), (sign == 0).double()], 1)  # arm 0 right for +, arm 1 for −
    theta = exp.linucb(contexts, rewards, alpha=0.5, passes=3, seed=0)
    picked = torch.argmax(contexts.double() @ theta.T, 1)
    assert (picked == 1 - sign).double().mean() > 0.95
    shuffled = rewards[torch.randperm(n, generator=g)]  # negative control: rewards unrelated to the contexts
    theta = exp.linucb(contexts, shuffled, alpha=0.5, passes=3, seed=0)
    picked = torch.argmax(contexts.double() @ theta.T, 1)
    assert (picked == 1 - sign).double().mean() < 0.8


def test_hard_prompt_pool():
    assert len(exp.HARD_PROMPTS) == 16 and len(set(exp.HARD_PROMPTS)) == 16
    assert sum(p.startswith("example :") for p in exp.HARD_PROMPTS) == 8


# -- the whole experiment at the ci profile ----------------------------------------------------------


@pytest.fixture(scope="module")
def ci_metrics(ci_config):
    return exp.run(ci_config, log=lambda _: None)


def test_chapter_is_registered():
    assert "concentrate_attention" in CHAPTERS


def test_soft_runs_are_complete_and_their_attention_adds_up(ci_metrics, ci_config, domains):
    runs = ci_metrics["soft"]
    assert {(r["target"], r["variant"]) for r in runs} == {(t, v) for t in ci_config.targets for v in ci_config.variants}
    for r in runs:
        assert r["test_size"] == len(domains[r["target"]].labels)
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["in_domain_accuracy"] <= 1
        for part in ("test", "in_domain"):
            c = r[part]
            total = np.array(c["cls_mass"]) + np.array(c["strength"]) + np.array(c["input_mass"])
            assert np.allclose(total, 1, atol=1e-5)  # [CLS], prompt and text (with [SEP]) are every key
            assert all(f >= 0 for f in c["fluctuation"])
        lam = exp.SOFT_VARIANTS[r["variant"]]
        assert (r["lambda_cs"], r["lambda_cf"]) == (lam[0] * ci_config.lambda_cs, lam[1] * ci_config.lambda_cf)


def test_paired_variants_share_initialisation_and_batches(ci_metrics):
    """The first step's loss terms come from the same prompt, head and batch in every variant of a (split, seed)."""
    by = {}
    for r in ci_metrics["soft"]:
        by.setdefault((r["target"], r["seed"]), []).append(r["terms_first"])
    for terms in by.values():
        assert all(t == terms[0] for t in terms)


def test_hard_prompt_strategies_are_consistent(ci_metrics, ci_config):
    for sp in ci_metrics["hard"]["splits"]:
        accs = [p["test_accuracy"] for p in sp["prompts"]]
        assert len(sp["kept"]) == ci_config.keep
        assert sp["random_kept_accuracy"] == pytest.approx(np.mean([accs[i] for i in sp["kept"]]))
        assert sp["oracle_single_accuracy"] == max(accs) >= sp["best_single_accuracy"]
        assert sum(sp["selector_choices"]) == sp["test_size"]
        # the filter keeps the highest global concentration scores
        scores = [p["global_score"] for p in sp["prompts"]]
        assert min(scores[i] for i in sp["kept"]) >= max(s for i, s in enumerate(scores) if i not in sp["kept"]) - 1e-12


def test_quaternion_link_shared_has_one_map_hamilton_four(ci_metrics):
    for q in ci_metrics["quaternion_link"]:
        each = np.array(q["strength_each"])
        assert each.shape == (q["layers"], 4)
        assert np.allclose(each.mean(1), q["strength"], atol=1e-6)
        if q["variant"] == "shared":
            assert (each == each[:, :1]).all()  # the same map for all four components
            assert len(q["map_shape"]) == 4
        else:
            assert not np.allclose(each, each[:, :1])  # four different maps
            assert q["map_shape"][2] == 4


def test_summary_and_headline(ci_metrics, ci_config):
    s = ci_metrics["summary"]
    assert set(s["soft_table"]) == set(ci_config.variants)
    assert set(s["soft_comparisons"]) == set(ci_config.variants) - {"prompt_tuning"}
    pilot = s["pilot"]["hard"]["pooled"]["strength"]
    assert len(pilot) == ci_metrics["layers"] == 6
    names = [h["name"] for h in ci_metrics["headline"]]
    assert "soft prompts, both − prompt tuning: target accuracy difference" in names
