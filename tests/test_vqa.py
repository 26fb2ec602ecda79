"""VQA data loaders, models and a tiny run of the experiment."""

import builtins

import numpy as np
import pytest
import torch

from qattn.book.data import vqa as vqa_data
from qattn.book.data.common import MissingDataError
from qattn.book.data.vqa import SORT_OF_CLEVR_COLOURS, Vocabulary, load_easy_vqa, make_sort_of_clevr
from qattn.book.experiments import vqa as vqa_exp
from qattn.book.models.vqa import VQAConfig, VQAModel


@pytest.fixture(scope="module")
def easy():
    return load_easy_vqa(seed=0, limit_images=200)


def test_easy_vqa_splits_by_image_and_vocabulary_from_train(easy):
    train, val, test, vocab = easy
    assert len(train.images) == 180 and len(val.images) == 20 and len(test.images) == 200
    assert train.images.shape[1:] == (3, 64, 64) and train.images.dtype == np.uint8
    assert len(train.answer_names) == 13 and set(train.type_names) == {"yes/no", "shape", "color"}
    # no image shared by train and validation: compare pixel content
    train_keys = {im.tobytes() for im in train.images}
    assert not any(im.tobytes() in train_keys for im in val.images)
    assert vocab.words[:2] == ["<pad>", "<unk>"] and set(Vocabulary.tokenize(train.texts[0])) <= set(vocab.words)
    # question types follow the answers
    names = np.array(train.answer_names)[train.answers]
    assert set(names[train.types == 0]) <= {"yes", "no"} and set(names[train.types == 1]) <= {"circle", "rectangle", "triangle"}
    assert load_easy_vqa(seed=0, limit_images=200)[0].questions.tolist() == train.questions.tolist()


def test_easy_vqa_missing_package_names_it(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "easy_vqa":
            raise ImportError("no easy_vqa")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDataError, match="easy-vqa==1.0"):
        vqa_data.load_easy_vqa()


def test_sort_of_clevr_is_deterministic_and_balanced():
    a = make_sort_of_clevr(20, 4, 4, seed=3)
    b = make_sort_of_clevr(20, 4, 4, seed=3)
    c = make_sort_of_clevr(20, 4, 4, seed=4)
    assert np.array_equal(a[0].images, b[0].images) and a[0].texts == b[0].texts
    assert not np.array_equal(a[0].images, c[0].images)
    train = a[0]
    assert len(train) == 20 * 12 and train.images.shape == (20, 3, 64, 64)
    relational = np.isin(np.array(train.type_names)[train.types], vqa_data.RELATIONAL_TYPES)
    assert relational.sum() == (~relational).sum()
    # every colour is drawn in every scene
    for img in train.images[:5]:
        pixels = {tuple(p) for p in img.reshape(3, -1).T}
        assert all(rgb in pixels for rgb in SORT_OF_CLEVR_COLOURS.values())


def test_sort_of_clevr_answers_match_the_scene():
    """Recompute 'closest' answers from the rendered pixels (object centres of mass)."""
    train = make_sort_of_clevr(6, 1, 1, seed=0, questions_per_scene=36)[0]
    for q in range(len(train)):
        if train.type_names[train.types[q]] != "closest":
            continue
        img = train.images[train.image_index[q]]
        centres, shapes = {}, {}
        for name, rgb in SORT_OF_CLEVR_COLOURS.items():
            ys, xs = np.nonzero((img.transpose(1, 2, 0) == rgb).all(-1))
            centres[name] = np.array([ys.mean(), xs.mean()])
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            shapes[name] = "square" if len(ys) == box else "circle"
        colour = next(c for c in SORT_OF_CLEVR_COLOURS if f"the {c} object" in train.texts[q])
        others = [c for c in SORT_OF_CLEVR_COLOURS if c != colour]
        closest = min(others, key=lambda c: np.linalg.norm(centres[c] - centres[colour]))
        assert train.answer_names[train.answers[q]] == shapes[closest]


@pytest.mark.parametrize("variant", list(vqa_exp.VARIANTS))
def test_models_give_logits_and_normalised_maps(variant):
    head, score, glimpses = vqa_exp.VARIANTS[variant]
    torch.manual_seed(0)
    model = VQAModel(
        VQAConfig(vocab_size=12, n_answers=7, head=head, score=score, glimpses=glimpses, d_x=32, d_y=32, hidden=32, channels=8)
    )
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    questions = torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0], [2, 3, 4, 0]])
    logits, maps = model(images, questions, torch.tensor([0, 1, 1]))
    assert logits.shape == (3, 7)
    sums = maps.flatten(-2).sum(-1) if head == "ban" else maps.sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    if head == "ban":  # padded tokens get no attention
        assert (maps[1, ..., 2:, :] == 0).all()
    logits.sum().backward()


def test_quaternion_ban_variants_have_identical_parameters():
    def build(score):
        torch.manual_seed(1)
        return VQAModel(VQAConfig(vocab_size=12, n_answers=7, head="ban", score=score, d_x=32, d_y=32, hidden=32, channels=8))

    a, b = build("shared"), build("hamilton")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_tiny_experiment_run():
    cfg = vqa_exp.config_for(
        "ci",
        easy_limit_images=40,
        clevr_sizes=(24, 8, 8),
        d=16,
        channels=8,
        easy_variants=["qban_shared"],
        clevr_variants=["unitary", "qban_shared", "qban_hamilton"],
    )
    logs = []
    m = vqa_exp.run(cfg, log=logs.append)
    clevr = m["sort_of_clevr"]["variants"]
    assert 0 <= clevr["unitary"]["accuracy"]["mean"] <= 1 and "relational" in clevr["unitary"]
    assert clevr["qban_hamilton"]["logit_multiplications"] == 4 * clevr["qban_shared"]["logit_multiplications"]
    assert len(clevr["qban_hamilton"]["component_js_bits"]) == 2 and "component_js_bits" not in clevr["qban_shared"]
    assert any(h["name"].endswith("logit multiplications") and h["value"] == 4 for h in m["headline"])
    with pytest.raises(ValueError, match=r"clevr_variants: value\(s\) \['mlp'\] not allowed"):
        vqa_exp.run({**vqa_exp.config_for("ci").to_dict(), "clevr_variants": ["mlp"]})


@pytest.mark.parametrize("head", ["ban", "unitary", "coattention"])
def test_gradients_are_bitwise_repeatable_with_many_questions_per_image(head):
    # Many questions share an image and many repeat: gathering regions and question states per
    # question must have a deterministic backward on a multi-threaded CPU (advanced indexing's
    # scatter-add has not: with x[index] instead of index_select, this test fails on 2 threads).
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = VQAModel(VQAConfig(vocab_size=12, n_answers=7, head=head, score="real"))
        images = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        # 8 distinct questions (with padding, as the templates have) repeated: the encoder runs
        # each once and gathers its states for every copy
        distinct = torch.randint(1, 12, (8, 6), generator=torch.Generator().manual_seed(2))
        distinct[::2, 4:] = 0
        questions = distinct[torch.arange(256) % 8]
        image_index = torch.arange(256) % 4
        grads = []
        for _ in range(4):
            model.zero_grad(set_to_none=True)
            logits, _ = model(images, questions, image_index)
            (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def _one_image_set(image: np.ndarray, text: str, type_names: list[str]) -> vqa_data.VQASet:
    return vqa_data.VQASet(
        images=image[None],
        questions=np.zeros((1, 3), dtype=np.int64),
        texts=[text],
        image_index=np.zeros(1, dtype=np.int64),
        answers=np.zeros(1, dtype=np.int64),
        types=np.zeros(1, dtype=np.int64),
        answer_names=["yes"],
        type_names=type_names,
    )


def test_object_regions_finds_the_asked_about_object_and_only_it():
    from qattn.book.data.vqa import RELATIONAL_TYPES, SORT_OF_CLEVR_COLOURS
    from qattn.book.experiments.vqa import object_regions

    image = np.full((3, 64, 64), 240, dtype=np.uint8)
    image[:, 8:16, 24:32] = np.array(SORT_OF_CLEVR_COLOURS["red"], dtype=np.uint8)[:, None, None]  # grid cell (1, 3)
    image[:, 40:44, 4:12] = np.array(SORT_OF_CLEVR_COLOURS["blue"], dtype=np.uint8)[:, None, None]  # cells (5, 0) and (5, 1)
    clevr_types = ["shape", *RELATIONAL_TYPES]
    red = object_regions(_one_image_set(image, "is the red object on the left?", clevr_types))
    assert red[0].nonzero()[0].tolist() == [1 * 8 + 3]
    blue = object_regions(_one_image_set(image, "what shape is the blue object?", clevr_types))
    assert blue[0].nonzero()[0].tolist() == [40, 41]
    # easy-VQA rule (no named colour): everything that is not background, both shapes here
    both = object_regions(_one_image_set(image, "what shape is in the image?", ["yes/no", "shape", "color"]))
    assert both[0].nonzero()[0].tolist() == [11, 40, 41]
    with pytest.raises(ValueError, match="no pixel of the asked-about object"):
        object_regions(_one_image_set(image, "is the green object on the left?", clevr_types))
    with pytest.raises(ValueError, match="names none of the colours"):
        object_regions(_one_image_set(image, "is the object on the left?", clevr_types))


def test_worker_processes_and_the_region_feature_ablation():
    """Runs in two single-threaded workers give exactly the runs made here on one thread, and the
    ablation trains its variants again with the other region features, on the same seeds."""
    tiny = dict(
        easy_variants=[],
        clevr_sizes=(24, 8, 8),
        d=16,
        channels=8,
        seeds=(0, 1),
        clevr_variants=["ban1", "unitary"],
        clevr_ablation=["ban1"],
        clevr_ablation_seeds=1,
        threads=1,
    )
    here = vqa_exp.run(vqa_exp.config_for("ci", **tiny, workers=1), log=lambda line: None)
    spawned = vqa_exp.run(vqa_exp.config_for("ci", **tiny, workers=2), log=lambda line: None)
    a, b = here["sort_of_clevr"], spawned["sort_of_clevr"]
    for v in ("ban1", "unitary"):
        assert [r["curve"] for r in a["variants"][v]["runs"]] == [r["curve"] for r in b["variants"][v]["runs"]]
        assert [r["seed"] for r in a["variants"][v]["runs"]] == [0, 1]
    ablation = a["ablation"]
    assert ablation["colour_means"] is True and list(ablation["variants"]) == ["ban1"]
    (run,) = ablation["variants"]["ban1"]["runs"]
    assert run["seed"] == 0 and run["curve"] == b["ablation"]["variants"]["ban1"]["runs"][0]["curve"]
    assert run["curve"] != a["variants"]["ban1"]["runs"][0]["curve"]  # other features, other training
    assert "examples" not in run  # the figures show the main runs only
