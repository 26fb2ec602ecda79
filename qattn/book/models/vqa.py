"""VQA models: a small CNN over region grids, a GRU question encoder, and four attention heads.

Shared trunk (real-valued in every variant, so variants differ only in their attention):

- regions: a 3-layer strided CNN turns a 64×64 image into an 8×8 grid of ``φ = 64`` regions,
  each a ``d_y``-vector whose last two features are the region's (x, y) centre in [−1, 1]
  (relational questions need positions; detector boxes play this role in the BAN paper);
- question: word embedding → GRU → token states ``(B, ρ, d_x)`` and the last state ``(B, d_x)``.

Heads (``head=``):

- ``"unitary"``: the question vector attends to the regions (one softmax over regions).
- ``"coattention"``: separate attention over words (guided by the mean region) and over regions
  (guided by the attended question): two distributions, no pairwise interaction.
- ``"ban"``: :class:`~qattn.attention.bilinear.BilinearAttentionNetwork` with ``glimpses`` maps
  and ``score`` ``"real"``, ``"shared"`` or ``"hamilton"`` (quaternion projections).

Input images are uint8 ``(B, 3, 64, 64)``; a model's ``forward(images, questions)`` returns
answer logits ``(B, n_answers)``, with ``image_index`` mapping questions to images so the CNN
runs once per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.attention.bilinear import BilinearAttentionNetwork
from qattn.book.data.vqa import PAD

__all__ = ["VQAConfig", "RegionCNN", "QuestionEncoder", "VQAModel", "HEADS"]

HEADS = ("unitary", "coattention", "ban")


@dataclass
class VQAConfig:
    """Sizes of a VQA model. ``d_x``, ``d_y`` and ``hidden`` are multiples of 4 (quaternion units)."""

    vocab_size: int
    n_answers: int
    head: str = "ban"
    score: str = "real"
    glimpses: int = 2
    d_x: int = 64
    d_y: int = 64
    hidden: int = 64
    embed: int = 32
    channels: int = 32
    colour_means: bool = False


class RegionCNN(nn.Module):
    """``(B, 3, 64, 64)`` uint8 → ``(B, 64, d_y)`` region features (8×8 grid, last 2 = coordinates).

    With ``colour_means`` the three features before the coordinates are the region's mean red,
    green and blue (scaled to [−1, 1]) instead of CNN channels: colour enters linearly.
    """

    def __init__(self, d_y: int, channels: int, colour_means: bool = False) -> None:
        super().__init__()
        self.colour_means = colour_means
        layers: list[nn.Module] = []
        widths = [3, channels, channels, d_y - 2 - (3 if colour_means else 0)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        pixels = images.float() / 127.5 - 1.0
        x = self.net(pixels)  # (B, d_y - 2 [- 3], 8, 8)
        b, _, h, w = x.shape
        if self.colour_means:
            x = torch.cat((x, F.adaptive_avg_pool2d(pixels, (h, w))), 1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij")
        coords = torch.stack((xs, ys)).expand(b, 2, h, w)
        return torch.cat((x, coords), 1).flatten(2).transpose(1, 2)


class QuestionEncoder(nn.Module):
    """Token ids ``(B, L)`` → token states ``(B, L, d_x)``, last states ``(B, d_x)``, padding mask ``(B, L)``."""

    def __init__(self, vocab_size: int, embed: int, d_x: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=PAD)
        self.gru = nn.GRU(embed, d_x, batch_first=True)

    def forward(self, questions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Templated questions repeat a lot: encode each distinct question once, then gather (with
        # index_select: the backward of states[inverse] is not deterministic on a multi-threaded CPU).
        unique, inverse = torch.unique(questions, dim=0, return_inverse=True)
        states, last, mask = self._encode(unique)
        return states.index_select(0, inverse), last.index_select(0, inverse), mask.index_select(0, inverse)

    def _encode(self, questions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mask = questions == PAD
        lengths = (~mask).sum(1).clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(questions), lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, last = self.gru(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=questions.shape[1])
        return states, last[-1], mask


class VQAModel(nn.Module):
    """Region CNN + question GRU + an attention head + a 2-layer classifier.

    >>> model = VQAModel(VQAConfig(vocab_size=20, n_answers=5, head="ban", score="hamilton"))
    >>> logits, maps = model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), torch.tensor([[2, 3, 0], [4, 0, 0]]), torch.tensor([0, 1]))
    >>> logits.shape, maps.shape
    (torch.Size([2, 5]), torch.Size([2, 2, 4, 3, 64]))
    """

    def __init__(self, config: VQAConfig) -> None:
        super().__init__()
        c = config
        if c.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {c.head!r}")
        self.config = c
        self.cnn = RegionCNN(c.d_y, c.channels, c.colour_means)
        self.question = QuestionEncoder(c.vocab_size, c.embed, c.d_x)
        if c.head == "ban":
            self.ban = BilinearAttentionNetwork(c.d_x, c.d_y, c.hidden, c.glimpses, score=c.score)
            fused = c.d_x
        else:
            self.q_att, self.y_att = nn.Linear(c.d_x, c.hidden), nn.Linear(c.d_y, c.hidden)
            self.att_p = nn.Linear(c.hidden, 1)
            self.q_out, self.y_out = nn.Linear(c.d_x, c.hidden), nn.Linear(c.d_y, c.hidden)
            if c.head == "coattention":
                self.word_att = nn.Linear(c.d_x + c.d_y, 1)
            fused = c.hidden
        self.classifier = nn.Sequential(nn.Linear(fused, 2 * c.hidden), nn.ReLU(), nn.Linear(2 * c.hidden, c.n_answers))

    def _attend_regions(self, q: Tensor, per_image: Tensor, image_index: Tensor, given: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Unitary attention of a question vector ``(B, d_x)`` over its image's regions ``(φ, d_y)``
        (``given``: use these weights ``(B, φ)`` instead of the learned ones)."""
        # projected once per image; index_select because the backward of x[index] with repeated
        # indices is not deterministic on a multi-threaded CPU (index_select's is)
        if given is None:
            y_proj = F.relu(self.y_att(per_image)).index_select(0, image_index)
            logits = self.att_p(F.relu(self.q_att(q))[:, None] * y_proj).squeeze(-1)
            weights = torch.softmax(logits, -1)
        else:
            weights = given
        return torch.einsum("bj,bjd->bd", weights, per_image.index_select(0, image_index)), weights

    def forward(
        self, images: Tensor, questions: Tensor, image_index: Tensor, region_weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Answer logits ``(B_q, n_answers)`` and attention maps; ``image_index[i]`` is question i's image.

        ``region_weights`` ``(B_q, φ)`` (unitary head only): attention weights over the regions to
        use instead of the learned ones, e.g. an oracle's map on the asked-about object.
        """
        if region_weights is not None and self.config.head != "unitary":
            raise ValueError(f"region_weights replace the unitary head's attention; this model's head is {self.config.head!r}")
        per_image = self.cnn(images)
        states, last, mask = self.question(questions)
        if self.config.head == "ban":
            joint, maps = self.ban(states, per_image, x_mask=mask, y_index=image_index)
            return self.classifier(joint), maps
        if self.config.head == "unitary":
            v, maps = self._attend_regions(last, per_image, image_index, region_weights)
            return self.classifier(F.relu(self.q_out(last)) * F.relu(self.y_out(v))), maps
        # co-attention: words guided by the mean region, then regions guided by the attended question
        guide = per_image.mean(1).index_select(0, image_index)[:, None].expand(-1, states.shape[1], -1)
        word_logits = self.word_att(torch.tanh(torch.cat((states, guide), -1))).squeeze(-1).masked_fill(mask, float("-inf"))
        q = torch.einsum("bi,bid->bd", torch.softmax(word_logits, -1), states)
        v, maps = self._attend_regions(q, per_image, image_index)
        return self.classifier(F.relu(self.q_out(q)) * F.relu(self.y_out(v))), maps
