"""The CogView chapter's experiment parts that are not training: the figure, the cost variants, the loss."""

import math

import torch
import torch.nn.functional as F

from qattn.attention.cogview_sparse import pivot_window_mask, sample_pivots
from qattn.book.data.image_tokens import CAPTION_LENGTH
from qattn.book.experiments import cogview_sparse_attention as exp
from qattn.book.harness.timing import crossover


def test_figure_counts_match_the_mask_row_and_the_layout():
    cfg = exp.config_for("ci")
    fig = exp.figure(cfg)
    layout = exp.figure_layout(cfg)
    pivots = sample_pivots(layout, 1, torch.Generator().manual_seed(cfg.seed))
    row = pivot_window_mask(layout, pivots)[0, fig["query"]]
    kinds = torch.tensor(fig["kinds"])
    assert torch.equal(kinds > 0, row)  # every attended key has a kind, nothing else
    counts = fig["counts"]
    assert counts["text"] == cfg.figure_text  # O lies far enough in: every text token is before its window
    query = fig["query"]
    assert counts["window"] == query - fig["window_start"] + 1
    assert (kinds[: fig["window_start"]] != 3).all() and (kinds[query + 1 :] == 0).all()  # causal, window last
    assert len(fig["local_window_2d"]) == (cfg.local_kernel // 2) * cfg.local_kernel + cfg.local_kernel // 2 + 1


def test_cost_variants_compute_the_same_causal_attention():
    cfg = exp.config_for("ci")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 128, 16, generator=g, dtype=torch.float64) for _ in range(3))
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(exp.materialised_causal_attention(q, k, v), fused, atol=1e-12)
    assert not torch.allclose(exp.materialised_causal_attention(q, k, v.flip(2)), fused)  # negative control
    assert cfg.timing_pivots + cfg.timing_window * cfg.timing_window_blocks < min(cfg.timing_lengths)


def test_image_token_loss_scores_only_the_image_tokens_from_their_prefix():
    tokens = torch.randint(10, (2, CAPTION_LENGTH + 5), generator=torch.Generator().manual_seed(1))
    logits = torch.full((2, CAPTION_LENGTH + 5, 10), -30.0)
    logits[:, :-1].scatter_(2, tokens[:, 1:, None], 30.0)  # position i predicts token i + 1 perfectly
    assert exp.image_token_loss(logits, tokens).max() < 1e-12
    uniform = torch.zeros(2, CAPTION_LENGTH + 5, 10)
    assert torch.allclose(exp.image_token_loss(uniform, tokens), torch.full((2,), math.log(10.0)))
    shifted = torch.roll(logits, 1, dims=1)  # off by one: a wrong alignment is caught
    assert exp.image_token_loss(shifted, tokens).min() > 1.0


def test_crossover_needs_every_longer_length_faster():
    assert crossover([1, 2, 3], [True, False, True]) == 3
    assert crossover([1, 2, 3], [True, True, True]) == 1
    assert crossover([1, 2, 3], [True, True, False]) is None
