"""The experiment harness: the config convention and the one training loop."""

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qattn.book.data.speech import SpeechCorpusConfig
from qattn.book.experiments import nlp, performance, speech_enhancement, vision, vqa
from qattn.book.harness.config import ExperimentConfig, choice, nested
from qattn.book.harness.training import LoopConfig, StepLoss, evenly_spaced, every, fit, lr_factor


@dataclass(frozen=True)
class Demo(ExperimentConfig):
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {"full": {}, "ci": {"steps": 2, "sizes": (1, 2)}}

    profile: str = "full"
    seed: int = 0
    steps: int = 10
    sizes: tuple[int, ...] = (3, 4)
    variants: tuple[str, ...] = choice(("a", "b", "c"), ("a", "b"))
    mode: str = choice(("fast", "slow"), "fast")
    corpus: dict[str, Any] = nested(SpeechCorpusConfig)


ALL_CONFIGS = [
    (vision.VisionConfig, vision.config_for),
    (nlp.NLPConfig, nlp.config_for),
    (vqa.VQAExperimentConfig, vqa.config_for),
    (speech_enhancement.SpeechExperimentConfig, speech_enhancement.config_for),
    (performance.BenchConfig, performance.config_for),
]


# -- config ----------------------------------------------------------------------------------------


def test_profile_seed_and_overrides():
    cfg = Demo.for_profile("ci", seed=4, mode="slow")
    assert (cfg.profile, cfg.seed, cfg.steps, cfg.sizes, cfg.mode) == ("ci", 4, 2, (1, 2), "slow")
    assert Demo.for_profile("full") == Demo()


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"profile must be 'ci' or 'full', got 'huge'"):
        Demo.for_profile("huge")
    with pytest.raises(ValueError, match=r"profile must be 'ci' or 'full'"):
        Demo.from_dict({"profile": "huge"})


def test_unknown_key_names_it_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['bogus'\]; allowed: \['profile', 'seed', 'steps'"):
        Demo.for_profile("ci", bogus=1)
    with pytest.raises(ValueError, match=r"\['bogus'\]"):
        Demo.from_dict({"profile": "ci", "bogus": 1})


def test_value_outside_the_allowed_set_is_refused():
    with pytest.raises(ValueError, match=r"Demo.variants: value\(s\) \['d'\] not allowed; allowed: \['a', 'b', 'c'\]"):
        Demo.for_profile("ci", variants=("a", "d"))
    with pytest.raises(ValueError, match=r"Demo.mode: value\(s\) \['medium'\] not allowed; allowed: \['fast', 'slow'\]"):
        Demo(mode="medium")
    assert Demo(variants=("c",)).variants == ("c",)  # negative control: an allowed value passes


def test_nested_dict_keys_are_checked_against_the_dataclass():
    assert Demo(corpus={"n_train": 3}).corpus == {"n_train": 3}
    with pytest.raises(
        ValueError, match=r"Demo.corpus: unknown key\(s\) \['n_trian'\] \(fields of SpeechCorpusConfig\); allowed: \['n_train'"
    ):
        Demo(corpus={"n_trian": 3})


def test_round_trip_dict_config_dict():
    cfg = Demo.for_profile("ci", seed=2, corpus={"test_snrs": [1.0, 2.0]})
    d = cfg.to_dict()
    assert d["sizes"] == [1, 2] and d["corpus"] == {"test_snrs": [1.0, 2.0]}  # JSON form: lists
    back = Demo.from_dict(json.loads(json.dumps(d)))
    assert back == cfg and back.sizes == (1, 2) and back.corpus["test_snrs"] == (1.0, 2.0)  # lists back to tuples
    assert back.to_dict() == d
    assert Demo.coerce(cfg) is cfg and Demo.coerce(d) == cfg


def test_frozen():
    cfg = Demo.for_profile("ci")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3  # type: ignore[misc]
    assert cfg.replace(steps=3).steps == 3 and cfg.steps == 2
    with pytest.raises(ValueError, match="not allowed"):
        cfg.replace(mode="medium")


@pytest.mark.parametrize("cls, config_for", ALL_CONFIGS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_experiment_follows_the_convention(cls, config_for):
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen and set(cls.PROFILES) == {"ci", "full"}
    for profile in cls.PROFILES:
        cfg = config_for(profile, seed=1)
        assert isinstance(cfg, cls) and cfg.profile == profile
        d = json.loads(json.dumps(cfg.to_dict()))
        assert cls.from_dict(d) == cfg and cls.coerce(d).to_dict() == d
    with pytest.raises(ValueError, match="profile must be"):
        config_for("huge")
    with pytest.raises(ValueError, match="unknown config field"):
        config_for("ci", nonsense=1)


def test_experiment_values_are_checked():
    with pytest.raises(ValueError, match=r"clevr_variants: value\(s\) \['mlp'\] not allowed; allowed: \['unitary'"):
        vqa.config_for("ci", clevr_variants=["mlp"])
    with pytest.raises(ValueError, match=r"variants: value\(s\) \['transformer'\] not allowed"):
        vision.config_for("ci", variants=("transformer",))
    with pytest.raises(ValueError, match=r"model: unknown key\(s\) \['score'\]"):  # the variant sets it
        speech_enhancement.config_for("ci", model={"score": "shared"})
    with pytest.raises(ValueError, match=r"corpus: unknown key\(s\) \['n_trian'\]"):
        speech_enhancement.config_for("ci", corpus={"n_trian": 3})
    with pytest.raises(ValueError, match=r"memory_variants: value\(s\) \['flash'\]"):
        performance.config_for("ci", memory_variants=["flash"])


def test_seeds_go_where_each_experiment_needs_them():
    assert vqa.config_for("full", seed=5).seeds == (5, 6, 7, 8, 9) and vqa.config_for("ci", seed=5).seeds == (5,)
    s = speech_enhancement.config_for("full", seed=3)
    assert s.seed == 3 and s.corpus["seed"] == 3
    assert vision.config_for("ci", seed=2).seed == 2 and performance.config_for("ci", seed=2).seed == 2


# -- training loop -------------------------------------------------------------------------------


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return x, (x[:, 0] + 0.3 * torch.randn(n, generator=g) > 0).long()


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))


def _run(model: nn.Module, scores=None, steps: int = 12, **loop: Any):
    x, y = _data()
    batches = [(x[i % 4 * 16 : (i % 4 + 1) * 16], y[i % 4 * 16 : (i % 4 + 1) * 16]) for i in range(steps)]
    calls = iter(scores) if scores is not None else None

    def validate(m: nn.Module) -> dict[str, Any]:
        assert not m.training and not torch.is_grad_enabled()
        acc = float((m(x).argmax(-1) == y).float().mean())
        return {"score": next(calls) if calls is not None else acc, "acc": acc}

    def loss_fn(m: nn.Module, batch) -> StepLoss:
        assert m.training
        loss = F.cross_entropy(m(batch[0]), batch[1])
        return StepLoss(loss, weight=len(batch[1]), terms={"double": 2 * loss})

    config = LoopConfig(
        **{
            "steps": steps,
            "lr": 0.05,
            "validate_at": (0, 4, 8, 12),
            "grad_clip": 1.0,
            "dropout_seed": 7,
            "warmup_steps": 2,
            "decay": "cosine",
            "steps_per_epoch": 4,
            **loop,
        }
    )
    return fit(model, batches, loss_fn, validate, config, select="score")


def test_selection_restores_the_best_validation_state_not_the_last():
    states = []

    class Spy(nn.Module):  # records the state at every validation
        def __init__(self) -> None:
            super().__init__()
            self.net = _model()

        def forward(self, x):
            if not self.training:
                states.append({k: v.clone() for k, v in self.state_dict().items()})
            return self.net(x)

    model = Spy()
    result = _run(model, scores=[0.1, 0.9, 0.5, 0.3])  # best at the second validation (step 4), not the last
    assert result.best_step == 4 and result.best_score == 0.9
    assert [h["step"] for h in result.history] == [0, 4, 8, 12] and result.history[0]["train_loss"] is None
    assert [h["epoch"] for h in result.history] == [0.0, 1.0, 2.0, 3.0]
    assert all(torch.equal(v, states[1][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, states[-1][k]) for k, v in model.state_dict().items())  # negative control
    assert not model.training


def test_ties_keep_the_earlier_state_and_no_validation_keeps_the_initial_one():
    result = _run(_model(), scores=[0.5, 0.5, 0.5, 0.5])
    assert result.best_step == 0
    model = _model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = _run(model, validate_at=())
    assert result.best_step == 0 and result.history == [] and len(result.step_losses) == 12
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())


def test_two_runs_are_bitwise_equal_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = _model(), _model()
    ra, rb = _run(a), _run(b)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert ra.history == rb.history and ra.step_losses == rb.step_losses and ra.step_terms == rb.step_terms
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    # negative control: another dropout seed draws other masks, hence other losses
    assert _run(_model(), dropout_seed=8).step_losses != ra.step_losses


def test_train_loss_is_the_weighted_mean_since_the_previous_validation():
    result = _run(_model())
    losses = result.step_losses
    assert result.history[1]["train_loss"] == pytest.approx(sum(losses[:4]) / 4)
    assert result.history[2]["train_loss"] == pytest.approx(sum(losses[4:8]) / 4)
    assert [t["double"] for t in result.step_terms] == pytest.approx([2 * v for v in losses], rel=1e-6)


def test_wrong_number_of_batches_is_refused():
    batches = [(torch.zeros(1, 5), torch.zeros(1, dtype=torch.long))] * 12
    with pytest.raises(ValueError, match="got 12 batches for 13 steps"):
        fit(
            _model(),
            batches,
            lambda m, b: StepLoss(F.cross_entropy(m(b[0]), b[1])),
            lambda m: {"s": 0.0},
            LoopConfig(steps=13, lr=0.1),
            select="s",
        )


def test_optimiser_choice():
    assert isinstance(LoopConfig(steps=1, lr=0.1).optimiser(_model().parameters()), torch.optim.AdamW)
    assert type(LoopConfig(steps=1, lr=0.1, optimizer="adam").optimiser(_model().parameters())) is torch.optim.Adam
    with pytest.raises(ValueError, match="optimizer"):
        LoopConfig(steps=1, lr=0.1, optimizer="sgd")  # type: ignore[arg-type]


def test_schedule_warm_up_then_cosine_or_constant():
    f = [lr_factor(s, 100, 10, "cosine") for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[10] == 1.0
    assert f[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[100] == 0.0
    assert lr_factor(150, 100, 10, "cosine") == 0.0  # clamped past the end
    assert [lr_factor(s, 100, 0, "constant") for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert [lr_factor(s, 100, 4, "constant") for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="decay"):
        lr_factor(0, 10, 0, "linear")  # type: ignore[arg-type]


def test_the_optimiser_follows_the_schedule():
    model = _model()
    seen = []
    x, y = _data()

    def loss_fn(m, batch):
        seen.append(opt_lr[0]())
        return StepLoss(F.cross_entropy(m(x), y))

    config = LoopConfig(steps=6, lr=0.1, warmup_steps=2, decay="cosine")
    opt_lr = [lambda: None]
    original = LoopConfig.optimiser

    def spy(self, params):
        opt = original(self, params)
        opt_lr[0] = lambda: opt.param_groups[0]["lr"]
        return opt

    LoopConfig.optimiser = spy  # type: ignore[method-assign]
    try:
        fit(model, range(6), loss_fn, lambda m: {"s": 0.0}, config, select="s")
    finally:
        LoopConfig.optimiser = original  # type: ignore[method-assign]
    assert seen == pytest.approx([0.1 * lr_factor(s, 6, 2, "cosine") for s in range(6)])


def test_validation_step_helpers():
    assert evenly_spaced(8, 3) == (3, 5, 8) and evenly_spaced(2, 6) == (1, 2)
    assert every(2, 2) == (2,) and every(5, 2) == (2, 4, 5)
