"""A synthetic noisy-speech corpus, generated offline (stands in for VoiceBank+DEMAND).

Clean speech is synthesised by Debian's ``espeak-ng`` from sentences drawn from a small
grammar with a varied vocabulary; each "speaker" is an espeak-ng voice + variant + pitch +
speed. Train, validation, test and babble speakers are four disjoint sets. Noises are generated
in code (:data:`NOISE_TYPES`): white, pink and brown noise, babble mixed from other synthesised
talkers, mains hum with harmonics, and band-limited modulated machine noise. Mixtures follow
VoiceBank+DEMAND: train (and validation) SNRs 0/5/10/15 dB, test SNRs 2.5/7.5/12.5/17.5 dB, and
the test set holds a noise type never seen in training (``machine`` by default).

Everything is drawn from ``numpy.random.default_rng`` seeded by the config (no global state), so
a config gives the same corpus bit for bit; the corpus is cached on disk under
``<data cache>/speech/<hash of the config>.npz`` (:func:`default_cache_dir`).

Examples
--------
>>> cfg = SpeechCorpusConfig(n_train=4, n_valid=2, n_test=2)
>>> sorted(set(cfg.train_speakers()) & set(cfg.test_speakers()))
[]
>>> cfg.unseen_test_noises()
('machine',)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qattn.book import paths
from qattn.book.data.common import MissingDataError

__all__ = [
    "GENERATOR_VERSION",
    "NOISE_TYPES",
    "SPEAKERS",
    "Speaker",
    "SpeechCorpusConfig",
    "SpeechSplit",
    "SpeechCorpus",
    "make_sentence",
    "synthesize",
    "make_noise",
    "mix_at_snr",
    "generate_speech_corpus",
    "load_speech_corpus",
    "default_cache_dir",
]

#: Bumped whenever the generator's output changes, so old caches are not reused.
GENERATOR_VERSION = 1
NOISE_TYPES = ("white", "pink", "brown", "babble", "hum", "machine")
ESPEAK_RATE = 22050


@dataclass(frozen=True)
class Speaker:
    """An espeak-ng "speaker": voice + variant, pitch (0-99) and speed (words per minute)."""

    name: str
    voice: str
    pitch: int
    speed: int


# Four disjoint groups; every (voice, variant, pitch, speed) appears once.
SPEAKERS: dict[str, tuple[Speaker, ...]] = {
    "train": (
        Speaker("tr01", "en-us+m1", 45, 165),
        Speaker("tr02", "en-us+f1", 55, 170),
        Speaker("tr03", "en-gb+m2", 40, 160),
        Speaker("tr04", "en-gb+f2", 60, 175),
        Speaker("tr05", "en-029+m3", 50, 155),
        Speaker("tr06", "en-gb-scotland+f3", 58, 165),
        Speaker("tr07", "en-gb-x-rp+m4", 35, 170),
        Speaker("tr08", "en-us-nyc+f4", 65, 160),
        Speaker("tr09", "en-gb-x-gbclan+m5", 48, 180),
        Speaker("tr10", "en-gb-x-gbcwmd+m6", 42, 165),
    ),
    "valid": (
        Speaker("va01", "en-us+m7", 52, 170),
        Speaker("va02", "en-gb-x-rp+f1", 62, 165),
    ),
    "test": (
        Speaker("te01", "en-us+m2", 38, 170),
        Speaker("te02", "en-gb+f4", 66, 160),
        Speaker("te03", "en-029+f2", 57, 175),
        Speaker("te04", "en-gb-scotland+m6", 46, 160),
    ),
    "babble": (
        Speaker("ba01", "en-us+f3", 60, 180),
        Speaker("ba02", "en-gb+m5", 44, 175),
        Speaker("ba03", "en-us-nyc+m3", 50, 165),
        Speaker("ba04", "en-gb-x-gbclan+f1", 63, 170),
        Speaker("ba05", "en-029+m7", 40, 160),
    ),
}


@dataclass(frozen=True)
class SpeechCorpusConfig:
    """What the corpus contains; its JSON (plus :data:`GENERATOR_VERSION`) keys the disk cache.

    Parameters
    ----------
    n_train, n_valid, n_test : number of noisy/clean pairs per split.
    seed : seed of every random choice (sentences, speakers, noises, SNRs).
    train_snrs, test_snrs : SNRs in dB; validation uses ``train_snrs``.
    train_noises, test_noises : noise types (see :data:`NOISE_TYPES`); validation uses ``train_noises``.
    min_words, max_words : sentence length range.
    max_seconds : utterances are cut to at most this length (after trimming silence).
    babble_talkers : talkers summed into one babble noise.
    """

    n_train: int = 160
    n_valid: int = 16
    n_test: int = 32
    seed: int = 0
    sample_rate: int = 16000
    train_snrs: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0)
    test_snrs: tuple[float, ...] = (2.5, 7.5, 12.5, 17.5)
    train_noises: tuple[str, ...] = ("white", "pink", "brown", "babble", "hum")
    test_noises: tuple[str, ...] = ("pink", "babble", "hum", "machine")
    min_words: int = 4
    max_words: int = 9
    max_seconds: float = 4.0
    babble_talkers: int = 4

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("train_noises", "test_noises"):
            bad = [n for n in getattr(self, name) if n not in NOISE_TYPES]
            if bad:
                raise ValueError(f"{name} has unknown noise types {bad}; expected some of {NOISE_TYPES}")
        if self.sample_rate != 16000:
            raise ValueError(f"sample_rate must be 16000 (the models' STFT assumes it), got {self.sample_rate}")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def cache_key(self) -> str:
        """First 16 hex digits of SHA-256 over the config JSON, the generator version and the speakers."""
        payload = json.dumps(
            {
                "config": self.to_dict(),
                "version": GENERATOR_VERSION,
                "speakers": {k: [dataclasses.astuple(s) for s in v] for k, v in SPEAKERS.items()},
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def train_speakers(self) -> tuple[str, ...]:
        return tuple(s.name for s in SPEAKERS["train"])

    def valid_speakers(self) -> tuple[str, ...]:
        return tuple(s.name for s in SPEAKERS["valid"])

    def test_speakers(self) -> tuple[str, ...]:
        return tuple(s.name for s in SPEAKERS["test"])

    def unseen_test_noises(self) -> tuple[str, ...]:
        """Test noise types that never occur in training."""
        return tuple(n for n in self.test_noises if n not in self.train_noises)


# -- sentences ------------------------------------------------------------------------------------

_WORDS: dict[str, tuple[str, ...]] = {
    "name": (
        "Anna",
        "Ben",
        "Clara",
        "David",
        "Elena",
        "Frank",
        "Grace",
        "Henry",
        "Irene",
        "James",
        "Karen",
        "Louis",
        "Maria",
        "Nathan",
        "Olivia",
        "Peter",
        "Rosa",
        "Samuel",
        "Tina",
        "Victor",
    ),
    "adj": (
        "small",
        "bright",
        "quiet",
        "heavy",
        "golden",
        "narrow",
        "ancient",
        "careful",
        "gentle",
        "hungry",
        "silver",
        "sudden",
        "warm",
        "yellow",
        "broken",
        "clever",
        "distant",
        "empty",
        "famous",
        "fresh",
        "honest",
        "lazy",
        "noisy",
        "polite",
        "rapid",
        "strange",
        "tiny",
        "wooden",
    ),
    "noun": (
        "garden",
        "teacher",
        "window",
        "river",
        "basket",
        "doctor",
        "mountain",
        "kitchen",
        "letter",
        "engine",
        "market",
        "pencil",
        "island",
        "bridge",
        "camera",
        "forest",
        "jacket",
        "ladder",
        "museum",
        "orange",
        "pillow",
        "rabbit",
        "station",
        "ticket",
        "village",
        "wagon",
        "castle",
        "drawer",
        "farmer",
        "harbor",
        "lantern",
        "meadow",
        "painter",
        "robot",
        "sailor",
        "violin",
    ),
    "verb_past": (
        "carried",
        "painted",
        "opened",
        "cleaned",
        "visited",
        "found",
        "repaired",
        "watched",
        "followed",
        "counted",
        "borrowed",
        "dropped",
        "measured",
        "ordered",
        "packed",
        "moved",
        "noticed",
        "covered",
        "built",
        "sold",
        "washed",
        "wrapped",
        "lifted",
        "checked",
    ),
    "verb_intr": (
        "waited",
        "laughed",
        "travelled",
        "listened",
        "arrived",
        "smiled",
        "whispered",
        "worked",
        "danced",
        "slept",
        "shouted",
        "returned",
        "wandered",
        "hurried",
    ),
    "verb_base": (
        "wait",
        "laugh",
        "travel",
        "listen",
        "arrive",
        "smile",
        "whisper",
        "work",
        "dance",
        "sleep",
        "shout",
        "return",
        "wander",
        "hurry",
    ),
    "adv": (
        "slowly",
        "quickly",
        "quietly",
        "carefully",
        "happily",
        "suddenly",
        "early",
        "later",
        "again",
        "together",
        "outside",
        "yesterday",
        "twice",
        "gladly",
    ),
    "prep": ("near", "behind", "under", "beside", "across", "inside", "above", "around", "past"),
    "time": (
        "on Monday",
        "in the morning",
        "after lunch",
        "before dinner",
        "last winter",
        "at noon",
        "every Friday",
        "during the storm",
        "in April",
        "at midnight",
        "on the weekend",
    ),
    "number": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty"),
}
_TEMPLATES = (
    "{name} {verb_past} the {adj} {noun} {time}",
    "the {noun} {verb_intr} {adv} {prep} the {noun2}",
    "{name} and {name2} {verb_intr} {prep} the {adj} {noun}",
    "we {verb_past} {number} {adj} {noun}s {prep} the {noun2}",
    "did the {adj} {noun} {verb_base} {time}",
    "please put the {noun} {prep} the {adj} {noun2}",
    "{number} {noun}s {verb_intr} {adv} {time}",
    "the {adj} {noun} of {name} is {prep} the {noun2}",
    "{name} {adv} {verb_past} a {adj} {noun} and a {noun2}",
    "my {noun} {verb_intr} {time} while the {noun2} {verb_intr2}",
)


def make_sentence(rng: np.random.Generator, min_words: int = 4, max_words: int = 9) -> str:
    """One random English sentence from a small grammar, with ``min_words``–``max_words`` words.

    >>> make_sentence(np.random.default_rng(0)) == make_sentence(np.random.default_rng(0))
    True
    """
    for _ in range(100):
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]

        def pick(kind: str) -> str:
            return str(_WORDS[kind][rng.integers(len(_WORDS[kind]))])

        fields = {k: pick(k) for k in _WORDS}
        fields.update(name2=pick("name"), noun2=pick("noun"), verb_intr2=pick("verb_intr"))
        sentence = template.format(**fields)
        if min_words <= len(sentence.split()) <= max_words:
            return sentence[0].upper() + sentence[1:] + ("?" if sentence.startswith("did") else ".")
    raise ValueError(f"no template gives {min_words}-{max_words} words")


# -- synthesis ------------------------------------------------------------------------------------


def _espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise MissingDataError(
            "espeak-ng is not installed: the speech corpus is synthesised with it. "
            "Install the Debian package: apt-get install espeak-ng (or run `make setup`)."
        )
    return path


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return x
    from math import gcd

    from scipy.signal import resample_poly  # scipy: the `speech` extra

    g = gcd(rate_in, rate_out)
    return resample_poly(x, rate_out // g, rate_in // g).astype(np.float32)


# espeak-ng writes its WAV header before it knows the length; on a pipe it never rewrites it, so
# the RIFF and data sizes stay these placeholders and the samples run to the end of the output.
_WAV_HEADER_BYTES = 44
_STREAMED_RIFF_SIZE = 0x7FFFF024
_STREAMED_DATA_SIZE = 0x7FFFF000


def _parse_espeak_wav(out: bytes, what: str) -> tuple[int, np.ndarray]:
    """``(sample rate, int16 samples)`` of espeak-ng's ``--stdout`` WAV; a clear error on anything unexpected.

    Checks every field of the 44-byte header (RIFF/WAVE, a 16-byte ``fmt`` chunk of mono 16-bit
    PCM, then ``data``), and the length of the samples: with the streamed placeholder sizes the
    payload must be a whole number of samples; with real sizes it must be exactly the data size.
    A short (truncated) read therefore raises instead of giving a shorter wave.
    """
    n = _WAV_HEADER_BYTES
    if len(out) < n or out[:4] != b"RIFF" or out[8:16] != b"WAVEfmt " or out[36:40] != b"data":
        raise RuntimeError(f"espeak-ng returned no WAV data for {what} ({len(out)} bytes, starting {out[:16]!r})")

    def u32(at: int) -> int:
        return int.from_bytes(out[at : at + 4], "little")

    def u16(at: int) -> int:
        return int.from_bytes(out[at : at + 2], "little")

    fmt = {"fmt size": u32(16), "format": u16(20), "channels": u16(22), "block align": u16(32), "bits": u16(34)}
    rate, byte_rate = u32(24), u32(28)
    if fmt != {"fmt size": 16, "format": 1, "channels": 1, "block align": 2, "bits": 16} or rate <= 0 or byte_rate != 2 * rate:
        raise RuntimeError(f"espeak-ng returned an unexpected WAV format for {what}: {fmt}, rate {rate}, byte rate {byte_rate}")
    riff_size, data_size, payload = u32(4), u32(40), len(out) - n
    streamed = data_size == _STREAMED_DATA_SIZE and riff_size == _STREAMED_RIFF_SIZE
    if not streamed and (payload != data_size or riff_size != len(out) - 8):
        raise RuntimeError(
            f"espeak-ng output for {what} has {payload} data bytes ({len(out)} in all) but its header says "
            f"{data_size} data bytes (RIFF size {riff_size}): a short read or a malformed WAV"
        )
    if payload % 2:
        raise RuntimeError(f"espeak-ng output for {what} is truncated: {payload} data bytes, not a whole number of samples")
    if payload == 0:
        raise RuntimeError(f"espeak-ng returned no samples for {what}")
    return rate, np.frombuffer(out, dtype="<i2", offset=n)


@functools.cache
def _installed_voices(espeak: str) -> tuple[frozenset[str], frozenset[str]]:
    """The languages (``espeak-ng --voices``) and variants (``--voices=variant``) that ``espeak`` has."""

    def listing(arg: str) -> list[str]:
        return subprocess.run([espeak, arg], capture_output=True, check=True, text=True, timeout=60).stdout.splitlines()[1:]

    languages = frozenset(line.split()[1].lower() for line in listing("--voices") if len(line.split()) > 1)
    variants = frozenset(m.group(1) for line in listing("--voices=variant") if (m := re.search(r"!v/(.+?)\s*(?:\(|$)", line)))
    return languages, variants


def _check_voice(espeak: str, voice: str) -> None:
    """Raise unless espeak-ng has ``voice``'s language and variant: for an unknown variant (or a
    language it can only approximate) espeak-ng silently speaks another voice and exits 0, which
    would change the corpus without any error."""
    language, _, variant = voice.partition("+")
    languages, variants = _installed_voices(espeak)
    missing = [f"language {language!r}"] if language.lower() not in languages else []
    missing += [f"variant {variant!r}"] if variant and variant not in variants else []
    if missing:
        raise MissingDataError(
            f"espeak-ng has no {' and no '.join(missing)} for voice {voice!r} (it would silently use another voice). "
            "Install the Debian package espeak-ng-data (apt-get install espeak-ng-data)."
        )


def synthesize(text: str, speaker: Speaker, sample_rate: int = 16000) -> np.ndarray:
    """Speak ``text`` with ``speaker`` through espeak-ng; a float32 wave in [-1, 1] at ``sample_rate``.

    Raises :class:`~qattn.book.data.common.MissingDataError` naming espeak-ng when it is missing, or
    when it lacks the speaker's voice or variant; :class:`RuntimeError` when espeak-ng fails or its
    WAV output is malformed or truncated (see :func:`_parse_espeak_wav`).
    """
    espeak = _espeak()
    _check_voice(espeak, speaker.voice)
    cmd = [espeak, "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.speed), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    what = f"voice {speaker.voice!r} and text {text!r}"
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed (exit status {proc.returncode}) for {what}: {proc.stderr.decode(errors='replace').strip()}")
    rate, samples = _parse_espeak_wav(proc.stdout, what)
    return _resample(samples.astype(np.float32) / 32768.0, rate, sample_rate)


def _synthesize_many(jobs: list[tuple[str, Speaker]], sample_rate: int, workers: int = 2) -> list[np.ndarray]:
    """:func:`synthesize` for each ``(text, speaker)``, ``workers`` espeak-ng processes at a time.

    The waves come back in the order of ``jobs`` whatever order the processes finish in, and each
    one depends only on its own job, so the result is the same as calling :func:`synthesize` in turn.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: synthesize(job[0], job[1], sample_rate), jobs))


def _trim_silence(x: np.ndarray, sample_rate: int, threshold: float = 1e-3, margin_s: float = 0.08) -> np.ndarray:
    active = np.flatnonzero(np.abs(x) > threshold)
    if active.size == 0:
        return x
    margin = int(margin_s * sample_rate)
    return x[max(active[0] - margin, 0) : active[-1] + margin]


# -- noises ---------------------------------------------------------------------------------------


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _coloured(n: int, rng: np.random.Generator, exponent: float, sample_rate: int) -> np.ndarray:
    """Noise with power spectral density ∝ 1/f^exponent (pink: 1, brown: 2), shaped in the FFT domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum /= np.maximum(f, 20.0) ** (exponent / 2)
    return np.fft.irfft(spectrum, n)


def _band_limit(x: np.ndarray, lo: float, hi: float, sample_rate: int) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    spectrum[(f < lo) | (f > hi)] = 0.0
    return np.fft.irfft(spectrum, len(x))


def make_noise(
    kind: str,
    n: int,
    rng: np.random.Generator,
    sample_rate: int = 16000,
    babble_pool: list[np.ndarray] | None = None,
    babble_talkers: int = 4,
) -> np.ndarray:
    """``n`` samples of noise of type ``kind`` (see :data:`NOISE_TYPES`), scaled to unit RMS.

    ``babble`` sums ``babble_talkers`` utterances from ``babble_pool`` (looped, random offsets
    and gains). ``hum``: a 50 or 60 Hz fundamental (±1 %) with 12 decaying harmonics and slow
    amplitude wobble. ``machine``: noise band-limited to a random band inside 200–4000 Hz,
    amplitude-modulated at a 6–25 Hz rotation rate, plus two gear-mesh tones.

    >>> rng = np.random.default_rng(0)
    >>> [round(float(np.sqrt(np.mean(make_noise(k, 8000, rng) ** 2))), 3) for k in ("white", "hum")]
    [1.0, 1.0]
    """
    t = np.arange(n) / sample_rate
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _coloured(n, rng, 1.0, sample_rate)
    elif kind == "brown":
        x = _coloured(n, rng, 2.0, sample_rate)
    elif kind == "babble":
        if not babble_pool:
            raise ValueError("babble noise needs a babble_pool of synthesised utterances")
        x = np.zeros(n)
        for idx in rng.choice(len(babble_pool), size=min(babble_talkers, len(babble_pool)), replace=False):
            talker = babble_pool[idx]
            looped = np.tile(talker, n // len(talker) + 2)
            start = rng.integers(len(talker))
            x += rng.uniform(0.6, 1.0) * looped[start : start + n]
    elif kind == "hum":
        f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.99, 1.01)
        x = np.zeros(n)
        for h in range(1, 13):
            x += h**-0.8 * rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
        x *= 1.0 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
        x += 0.02 * rng.standard_normal(n)
    elif kind == "machine":
        lo = rng.uniform(200, 1200)
        hi = lo + rng.uniform(600, 2500)
        x = _band_limit(rng.standard_normal(n), lo, min(hi, 4000.0), sample_rate)
        x = _unit_rms(x) * (1.0 + 0.7 * np.sin(2 * np.pi * rng.uniform(6, 25) * t))
        for _ in range(2):
            x += 0.5 * np.sin(2 * np.pi * rng.uniform(lo, min(hi, 4000.0)) * t + rng.uniform(0, 2 * np.pi))
    else:
        raise ValueError(f"unknown noise type {kind!r}; expected one of {NOISE_TYPES}")
    return _unit_rms(np.asarray(x, dtype=np.float64))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, peak: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``noise`` so that clean/noise power is ``snr_db``; rescale both if the mix would clip.

    Returns ``(clean, noisy)`` as float32 arrays of the clean signal's length.

    >>> c = np.sin(np.arange(1600) / 5).astype(np.float32) * 0.1
    >>> c2, noisy = mix_at_snr(c, np.random.default_rng(0).standard_normal(1600), 10.0)
    >>> round(float(10 * np.log10(np.sum(c2**2) / np.sum((noisy - c2) ** 2))), 6)
    10.0
    """
    noise = noise[: len(clean)]
    p_clean = np.mean(clean.astype(np.float64) ** 2)
    p_noise = np.mean(noise.astype(np.float64) ** 2) + 1e-20
    noise = noise * np.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))
    noisy = clean + noise
    scale = min(1.0, peak / (np.max(np.abs(noisy)) + 1e-12))
    return (clean * scale).astype(np.float32), (noisy * scale).astype(np.float32)


# -- corpus ---------------------------------------------------------------------------------------


@dataclass
class SpeechSplit:
    """One split: parallel lists of clean and noisy waves (float32, 16 kHz) and per-item metadata
    (``speaker``, ``text``, ``noise``, ``snr_db``)."""

    clean: list[np.ndarray]
    noisy: list[np.ndarray]
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clean)

    def seconds(self) -> float:
        return float(sum(len(c) for c in self.clean)) / 16000.0


@dataclass
class SpeechCorpus:
    """The corpus: ``train``, ``valid`` and ``test`` splits plus the config that made it."""

    config: SpeechCorpusConfig
    train: SpeechSplit
    valid: SpeechSplit
    test: SpeechSplit
    path: Path | None = None

    def split(self, name: str) -> SpeechSplit:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {name!r}")
        return getattr(self, name)


def default_cache_dir() -> Path:
    """``speech/`` in :func:`qattn.book.paths.data_cache_dir` (``data-cache/speech`` in a checkout, git-ignored)."""
    return paths.data_cache_dir() / "speech"


def _generate_split(cfg: SpeechCorpusConfig, split: str, n: int, rng: np.random.Generator, babble_pool: list[np.ndarray]) -> SpeechSplit:
    speakers = SPEAKERS[split]
    snrs = cfg.test_snrs if split == "test" else cfg.train_snrs
    noises = cfg.test_noises if split == "test" else cfg.train_noises
    out = SpeechSplit([], [], [])
    max_len = int(cfg.max_seconds * cfg.sample_rate)
    jobs = [(make_sentence(rng, cfg.min_words, cfg.max_words), speakers[i % len(speakers)]) for i in range(n)]
    waves = _synthesize_many(jobs, cfg.sample_rate)
    for (text, speaker), wave in zip(jobs, waves):  # balanced speakers, random everything else
        clean = _trim_silence(wave, cfg.sample_rate)[:max_len]
        clean = clean / (np.max(np.abs(clean)) + 1e-12) * rng.uniform(0.3, 0.8)  # varied levels
        noise_kind = str(noises[rng.integers(len(noises))])
        snr = float(snrs[rng.integers(len(snrs))])
        noise = make_noise(noise_kind, len(clean), rng, cfg.sample_rate, babble_pool, cfg.babble_talkers)
        clean, noisy = mix_at_snr(clean, noise, snr)
        out.clean.append(clean)
        out.noisy.append(noisy)
        out.meta.append({"speaker": speaker.name, "text": text, "noise": noise_kind, "snr_db": snr})
    return out


def generate_speech_corpus(cfg: SpeechCorpusConfig) -> SpeechCorpus:
    """Generate the corpus of ``cfg`` (no cache): deterministic for a config."""
    rng = np.random.default_rng([cfg.seed, 5])
    jobs = [(make_sentence(rng, 6, 12), spk) for spk in SPEAKERS["babble"] for _ in range(3)]
    babble_pool = [_trim_silence(w, cfg.sample_rate) for w in _synthesize_many(jobs, cfg.sample_rate)]
    splits = {}
    for k, (split, n) in enumerate((("train", cfg.n_train), ("valid", cfg.n_valid), ("test", cfg.n_test))):
        splits[split] = _generate_split(cfg, split, n, np.random.default_rng([cfg.seed, k]), babble_pool)
    return SpeechCorpus(cfg, **splits)


def _save(corpus: SpeechCorpus, path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"config": corpus.config.to_dict(), "version": GENERATOR_VERSION}
    for name in ("train", "valid", "test"):
        split = corpus.split(name)
        arrays[f"{name}_clean"] = np.concatenate(split.clean)
        arrays[f"{name}_noisy"] = np.concatenate(split.noisy)
        arrays[f"{name}_offsets"] = np.cumsum([0] + [len(c) for c in split.clean])
        meta[name] = split.meta
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name of its own per process and thread, so that two generations of the same config
    # at once never write into one file; the rename is atomic.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path, cfg: SpeechCorpusConfig) -> SpeechCorpus:
    with np.load(path) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        splits = {}
        for name in ("train", "valid", "test"):
            off = data[f"{name}_offsets"]
            clean, noisy = data[f"{name}_clean"], data[f"{name}_noisy"]
            splits[name] = SpeechSplit(
                [clean[a:b].copy() for a, b in zip(off[:-1], off[1:])],
                [noisy[a:b].copy() for a, b in zip(off[:-1], off[1:])],
                meta[name],
            )
    return SpeechCorpus(cfg, path=path, **splits)


def load_speech_corpus(cfg: SpeechCorpusConfig, cache_dir: str | Path | None = None, refresh: bool = False) -> SpeechCorpus:
    """The corpus of ``cfg``, from ``cache_dir/<cfg.cache_key()>.npz`` if present, else generated and cached.

    Parameters
    ----------
    cfg : the corpus configuration.
    cache_dir : folder of the cache; :func:`default_cache_dir` by default.
    refresh : regenerate even if a cached file exists.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{cfg.cache_key()}.npz"
    if path.exists() and not refresh:
        return _load(path, cfg)
    corpus = generate_speech_corpus(cfg)
    _save(corpus, path)
    corpus.path = path
    return corpus
