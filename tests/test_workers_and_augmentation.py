"""Worker processes (qattn.book.harness.workers), training-batch augmentation and the vision
chapter's flips, and the VQA regions' optional colour means."""

import math
import operator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qattn.book.experiments import vision
from qattn.book.experiments.vision import shift_and_flip
from qattn.book.harness.training import Split, TrainConfig, train_classifier
from qattn.book.harness.workers import Job, run_jobs
from qattn.book.models.vqa import RegionCNN

# --- run_jobs ---------------------------------------------------------------------------------


def test_jobs_in_this_process_keep_their_order_and_report_progress():
    lines = []
    jobs = [Job(operator.mul, (a, 3), label=f"times {a}") for a in range(4)]
    assert run_jobs(jobs, workers=1, log=lines.append) == [0, 3, 6, 9]
    assert len(lines) == 4 and lines[0].startswith("(1/4) times 0;")


def test_worker_processes_give_the_results_in_the_jobs_order_whatever_the_cost():
    # costs reverse the start order: the results must still come back in the jobs' order
    jobs = [Job(math.comb, (n, 2), cost=float(n)) for n in range(2, 9)]
    assert run_jobs(jobs, workers=2) == [math.comb(n, 2) for n in range(2, 9)]


def test_a_failing_job_raises_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="math domain"):
        run_jobs([Job(math.sqrt, (4.0,)), Job(math.sqrt, (-1.0,))], workers=2)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        run_jobs([], workers=0)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        run_jobs([], workers=1, threads=0)


# --- shift_and_flip ---------------------------------------------------------------------------


def _reference_shift(image: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """Move ``image`` by (dy, dx) pixels, one pixel at a time (independent of the batched gather)."""
    h, w = image.shape
    out = torch.full_like(image, fill)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[y, x] = image[y - dy, x - dx]
    return out


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 5), h=st.integers(2, 7), w=st.integers(2, 7), m=st.integers(0, 3), seed=st.integers(0, 10**6))
def test_every_output_is_a_flipped_and_moved_input(b, h, w, m, seed):
    images = torch.rand(b, h, w) + 1.0  # > fill, so the moved-in border is recognisable
    out = shift_and_flip(images, torch.Generator().manual_seed(seed), m, -1.0)
    assert out.shape == images.shape
    again = shift_and_flip(images, torch.Generator().manual_seed(seed), m, -1.0)
    assert torch.equal(out, again)  # the generator is the only source of randomness
    for image, result in zip(images, out):
        candidates = [
            _reference_shift(src, dy, dx, -1.0) for src in (image, image.flip(-1)) for dy in range(-m, m + 1) for dx in range(-m, m + 1)
        ]
        assert any(torch.equal(result, c) for c in candidates)


def test_flips_happen_about_half_the_time_and_moves_cover_the_range():
    images = torch.zeros(4000, 6, 6)
    images[:, 0, 0] = 1.0  # one bright pixel in the top-left corner
    flipped = shift_and_flip(images, torch.Generator().manual_seed(0), 0, 0.0)
    share = float(flipped[:, 0, -1].mean())
    assert 0.45 < share < 0.55 and torch.equal(flipped[:, 0, 0] + flipped[:, 0, -1], torch.ones(4000))
    moved = shift_and_flip(images, torch.Generator().manual_seed(1), 2, 0.0)
    rows = {int(i) // 6 for i in moved.flatten(1).argmax(1)[moved.flatten(1).amax(1) > 0]}
    assert rows == {0, 1, 2}  # moved down by 0, 1, 2 (upward moves push the pixel out)


def test_shift_and_flip_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        shift_and_flip(torch.zeros(2, 1, 4, 4), torch.Generator(), 1, 0.0)
    with pytest.raises(ValueError, match="max_shift must be >= 0"):
        shift_and_flip(torch.zeros(2, 4, 4), torch.Generator(), -1, 0.0)


# --- augmentation inside train_classifier -----------------------------------------------------


class _Recorder(nn.Module):
    """A linear classifier that records the inputs it saw in training and in evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.seen: dict[bool, list[torch.Tensor]] = {True: [], False: []}

    def forward(self, x, need_weights=False):
        self.seen[self.training].append(x.detach().clone())
        return self.linear(x), []


def _train(augment):
    gen = torch.Generator().manual_seed(0)
    train = Split((torch.randn(32, 4, generator=gen),), torch.randint(0, 2, (32,), generator=gen))
    val = Split((torch.randn(8, 4, generator=gen),), torch.randint(0, 2, (8,), generator=gen))
    model = _Recorder()
    config = TrainConfig(epochs=2, batch_size=8, checkpoints=2)
    train_classifier(model, train, val, config, torch.Generator().manual_seed(3), augment=augment)
    return model, train, val


def test_augmentation_reaches_training_batches_only_and_is_reproducible():
    def negate_some(inputs, generator):
        sign = torch.where(torch.rand(len(inputs[0]), generator=generator) < 0.5, -1.0, 1.0)
        return (inputs[0] * sign[:, None],)

    plain, train, val = _train(None)
    augmented, _, _ = _train(negate_some)
    again, _, _ = _train(negate_some)
    assert all(torch.equal(a, b) for a, b in zip(augmented.seen[True], again.seen[True]))
    assert any(not torch.equal(a, b) for a, b in zip(plain.seen[True], augmented.seen[True]))
    # every epoch still sees every training example once, up to sign
    epoch = torch.cat(augmented.seen[True][:4]).abs()
    assert torch.equal(epoch.sort(0).values, train.inputs[0].abs().sort(0).values)
    # validation inputs are never augmented
    assert all(torch.equal(x, val.inputs[0]) for x in augmented.seen[False])


def test_vision_full_profile_flips_and_the_ci_profile_runs_in_this_process():
    full, ci = vision.config_for("full"), vision.config_for("ci")
    assert full.augment == "flip" and full.workers == 2 and ci.workers == 1
    with pytest.raises(ValueError, match="augment"):
        vision.config_for("ci", augment="rotate")


# --- VQA regions with colour means ------------------------------------------------------------


def test_colour_means_are_the_cells_mean_pixels():
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    cnn = RegionCNN(d_y=16, channels=8, colour_means=True).eval()
    regions = cnn(images)
    assert regions.shape == (2, 64, 16)
    cells = (images.float() / 127.5 - 1.0).reshape(2, 3, 8, 8, 8, 8).mean((3, 5))  # (B, 3, 8, 8)
    torch.testing.assert_close(regions[..., -5:-2], cells.flatten(2).transpose(1, 2))
    assert torch.equal(regions[0, :, -2:], RegionCNN(d_y=16, channels=8)(images)[0, :, -2:])  # coordinates unchanged
