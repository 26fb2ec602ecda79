"""The CogView chapter's data and model: captions read from the pixels, token sequences, the causal model."""

import numpy as np
import pytest
import torch

from qattn.book.data.image_tokens import CAPTION_LENGTH, CAPTION_VOCAB, describe_caption, scene_captions, token_sequences
from qattn.book.data.vqa import SORT_OF_CLEVR_COLOURS, _render
from qattn.book.models.image_tokens import ImageTokenModel


def scene(centres, shapes, size=64):
    return _render(np.array(centres), np.array(shapes), size, max(2, size // 16))[None]


def test_captions_recover_the_known_quadrants_and_shapes():
    centres = [(10, 10), (10, 50), (50, 10), (50, 50), (20, 40), (45, 22)]
    shapes = [0, 1, 1, 0, 1, 0]
    caption = scene_captions(scene(centres, shapes))[0]
    quadrants = [0, 1, 2, 3, 1, 2]
    assert caption.tolist() == [8 * c + 2 * q + s for c, (q, s) in enumerate(zip(quadrants, shapes))]
    assert describe_caption(caption).startswith("red square top left, green circle top right")
    flipped = scene_captions(scene(centres, [1 - s for s in shapes]))[0]
    assert (flipped != caption).all()  # negative control: every shape flip is seen


def test_captions_refuse_what_is_not_a_scene():
    with pytest.raises(ValueError, match="uint8"):
        scene_captions(np.zeros((1, 3, 64, 64), dtype=np.float32))
    blank = np.full((1, 3, 64, 64), 255, dtype=np.uint8)
    with pytest.raises(ValueError, match=f"no {list(SORT_OF_CLEVR_COLOURS)[0]} object"):
        scene_captions(blank)


def test_token_sequences_put_the_caption_first_and_shift_the_codes():
    captions = np.array([[0, 9, 17, 25, 33, 41]])
    codes = torch.arange(16).view(1, 4, 4)
    tokens = token_sequences(captions, codes)
    assert tokens.shape == (1, CAPTION_LENGTH + 16)
    assert tokens[0, :CAPTION_LENGTH].tolist() == captions[0].tolist()
    assert tokens[0, CAPTION_LENGTH:].tolist() == [CAPTION_VOCAB + i for i in range(16)]
    with pytest.raises(ValueError, match="same N"):
        token_sequences(captions, codes.expand(2, -1, -1))


@pytest.mark.parametrize("score, options", [("shared", None), ("cogview_sparse", {"text": 2, "window": 4, "n_pivots": 4})])
def test_model_is_causal_and_swaps_to_full_attention(score, options):
    torch.manual_seed(0)
    model = ImageTokenModel(40, 24, 16, 2, 2, score=score, score_options=options, generator=torch.Generator().manual_seed(1)).double()
    model.eval()
    tokens = torch.randint(40, (2, 24), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 15] = (changed[:, 15] + 1) % 40
    a, b = model(tokens), model(changed)
    assert torch.allclose(a[:, :15], b[:, :15], atol=1e-12) and not torch.allclose(a[:, 15:], b[:, 15:])
    full = model.with_attention("shared")
    reference = ImageTokenModel(40, 24, 16, 2, 2, generator=torch.Generator().manual_seed(1)).double().eval()
    assert torch.allclose(full(tokens), reference(tokens), atol=1e-12)  # the same weights whatever the mechanism
    assert model.score == score and full.score == "shared"


def test_model_refuses_a_non_causal_mechanism():
    with pytest.raises(ValueError, match="causal mechanism"):
        ImageTokenModel(10, 8, 16, 1, 2, score="clustered")


def test_redrawn_pivots_change_a_sparse_model_and_are_reproducible():
    options = {"text": 2, "window": 4, "n_pivots": 6}
    model = ImageTokenModel(40, 32, 16, 1, 2, score="cogview_sparse", score_options=options, generator=torch.Generator().manual_seed(1))
    model = model.double().eval()
    tokens = torch.randint(40, (2, 32), generator=torch.Generator().manual_seed(2))
    model.redraw_pivots(torch.Generator().manual_seed(5))
    first = model(tokens)
    model.redraw_pivots(torch.Generator().manual_seed(6))
    assert not torch.allclose(first, model(tokens))
    model.redraw_pivots(torch.Generator().manual_seed(5))
    assert torch.equal(first, model(tokens))
