"""Speech corpus: determinism, disjoint speakers, SNRs and noise types per split, caching, errors."""

import numpy as np
import pytest

from qattn.book.data import speech
from qattn.book.data.common import MissingDataError
from qattn.book.data.speech import (
    NOISE_TYPES,
    SPEAKERS,
    SpeechCorpusConfig,
    load_speech_corpus,
    make_noise,
    make_sentence,
    mix_at_snr,
)

CFG = SpeechCorpusConfig(n_train=6, n_valid=2, n_test=6, max_seconds=1.5, seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_speech_corpus(CFG, cache_dir=tmp_path_factory.mktemp("speech"))


def test_speakers_disjoint_and_enough_voices():
    groups = {k: {(s.voice, s.pitch, s.speed) for s in v} for k, v in SPEAKERS.items()}
    names = [s.name for v in SPEAKERS.values() for s in v]
    assert len(names) == len(set(names))
    for a in groups:
        for b in groups:
            if a < b:
                assert not groups[a] & groups[b], (a, b)
    voices = {s.voice for v in SPEAKERS.values() for s in v}
    assert len(voices) >= 12


def test_splits_sizes_speakers_noises_snrs(corpus):
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (6, 2, 6)
    for name, split in (("train", corpus.train), ("valid", corpus.valid), ("test", corpus.test)):
        allowed = {s.name for s in SPEAKERS[name]}
        assert {m["speaker"] for m in split.meta} <= allowed
        snrs = CFG.test_snrs if name == "test" else CFG.train_snrs
        noises = CFG.test_noises if name == "test" else CFG.train_noises
        assert {m["snr_db"] for m in split.meta} <= set(snrs)
        assert {m["noise"] for m in split.meta} <= set(noises)
        for clean, noisy, m in zip(split.clean, split.noisy, split.meta):
            assert clean.dtype == np.float32 and clean.shape == noisy.shape
            assert 0.3 * 16000 < len(clean) <= 1.5 * 16000
            assert np.max(np.abs(noisy)) <= 0.96
            snr = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((noisy - clean).astype(np.float64) ** 2))
            assert snr == pytest.approx(m["snr_db"], abs=0.05)
    assert CFG.unseen_test_noises() == ("machine",)
    assert not set(CFG.test_snrs) & set(CFG.train_snrs)


def test_deterministic_and_cached(corpus, tmp_path):
    again = speech.generate_speech_corpus(CFG)
    for a, b in zip(corpus.test.noisy + corpus.train.clean, again.test.noisy + again.train.clean):
        np.testing.assert_array_equal(a, b)
    assert corpus.test.meta == again.test.meta
    cached = load_speech_corpus(CFG, cache_dir=corpus.path.parent)
    assert cached.path == corpus.path and corpus.path.name == f"{CFG.cache_key()}.npz"
    np.testing.assert_array_equal(cached.valid.noisy[1], corpus.valid.noisy[1])
    other = SpeechCorpusConfig(n_train=6, n_valid=2, n_test=6, max_seconds=1.5, seed=4)
    assert other.cache_key() != CFG.cache_key()


def test_sentences_vary():
    rng = np.random.default_rng(0)
    sentences = [make_sentence(rng) for _ in range(200)]
    words = {w.strip(".?").lower() for s in sentences for w in s.split()}
    assert len(set(sentences)) > 190 and len(words) > 150
    assert all(4 <= len(s.split()) <= 9 for s in sentences)


@pytest.mark.parametrize("kind", [k for k in NOISE_TYPES if k != "babble"])
def test_noises_unit_rms_and_spectra(kind):
    x = make_noise(kind, 16000, np.random.default_rng(1))
    assert x.shape == (16000,) and np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-4)
    power = np.abs(np.fft.rfft(x)) ** 2
    low, high = power[50:500].sum(), power[4000:8000].sum()  # 50-500 Hz vs 4-8 kHz
    if kind in ("pink", "brown", "hum"):
        assert low > high
    if kind == "machine":  # band-limited below 4 kHz
        assert high < 1e-4 * power.sum()
    if kind == "white":
        assert high > low


def test_mix_at_snr_and_babble_errors():
    clean = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    c, n = mix_at_snr(clean, make_noise("pink", 4000, np.random.default_rng(2)), 5.0)
    assert 10 * np.log10(np.sum(c**2) / np.sum((n - c) ** 2)) == pytest.approx(5.0, abs=1e-3)
    with pytest.raises(ValueError, match="babble_pool"):
        make_noise("babble", 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown noise"):
        make_noise("rain", 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="test_noises"):
        SpeechCorpusConfig(test_noises=("rain",))


def test_missing_espeak_names_the_package(monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(MissingDataError, match="espeak-ng"):
        speech.synthesize("hello", SPEAKERS["train"][0])


BABBLE_CFG = SpeechCorpusConfig(
    n_train=12, n_valid=2, n_test=8, max_seconds=1.5, seed=1, train_noises=("babble", "pink"), test_noises=("babble", "hum")
)


def test_babble_corpus_bytewise_repeatable():
    """Two generations of one config (babble in train and test) agree byte for byte, metadata included."""
    a, b = speech.generate_speech_corpus(BABBLE_CFG), speech.generate_speech_corpus(BABBLE_CFG)
    for name in ("train", "valid", "test"):
        sa, sb = a.split(name), b.split(name)
        assert sa.meta == sb.meta and len(sa) == len(sb)
        for arrays_a, arrays_b in ((sa.clean, sb.clean), (sa.noisy, sb.noisy)):
            for x, y in zip(arrays_a, arrays_b):
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    for split in (a.train, a.test):
        assert sum(m["noise"] == "babble" for m in split.meta) >= 2


def test_synthesize_many_matches_sequential_in_order():
    speakers = SPEAKERS["babble"] + SPEAKERS["train"][:3]  # breath (f2/f3) and flutter (f1/m1) variants among them
    rng = np.random.default_rng(11)
    jobs = [(make_sentence(rng), spk) for spk in speakers]
    sequential = [speech.synthesize(text, spk) for text, spk in jobs]
    threaded = speech._synthesize_many(jobs, 16000, workers=2)
    assert len({len(w) for w in sequential}) > 1  # the order is observable
    assert len(threaded) == len(sequential)
    for x, y in zip(sequential, threaded):
        assert x.dtype == y.dtype == np.float32 and x.tobytes() == y.tobytes()


def _wav(payload: bytes, riff_size: int = 0x7FFFF024, data_size: int = 0x7FFFF000, rate: int = 22050, bits: int = 16) -> bytes:
    fmt = (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    fmt += rate.to_bytes(4, "little") + (rate * bits // 8).to_bytes(4, "little") + (bits // 8).to_bytes(2, "little")
    fmt += bits.to_bytes(2, "little")
    return b"RIFF" + riff_size.to_bytes(4, "little") + b"WAVEfmt " + fmt + b"data" + data_size.to_bytes(4, "little") + payload


def test_wav_header_checked_and_short_reads_raise():
    samples = np.array([0, 1, -2, 32767, -32768], dtype="<i2").tobytes()
    rate, x = speech._parse_espeak_wav(_wav(samples), "t")  # espeak-ng's streamed placeholder sizes
    assert rate == 22050 and x.tolist() == [0, 1, -2, 32767, -32768]
    rate, x = speech._parse_espeak_wav(_wav(samples, riff_size=36 + 10, data_size=10), "t")  # exact sizes
    assert len(x) == 5
    with pytest.raises(RuntimeError, match="short read"):
        speech._parse_espeak_wav(_wav(samples[:6], riff_size=36 + 10, data_size=10), "t")
    with pytest.raises(RuntimeError, match="truncated"):
        speech._parse_espeak_wav(_wav(samples[:7]), "t")
    with pytest.raises(RuntimeError, match="no samples"):
        speech._parse_espeak_wav(_wav(b""), "t")
    with pytest.raises(RuntimeError, match="unexpected WAV format"):
        speech._parse_espeak_wav(_wav(samples, bits=8), "t")
    with pytest.raises(RuntimeError, match="no WAV data"):
        speech._parse_espeak_wav(_wav(samples)[:40], "t")


def test_unknown_voice_or_variant_raises_instead_of_falling_back():
    """espeak-ng silently speaks the plain voice for an unknown variant (exit status 0): refuse it."""
    with pytest.raises(MissingDataError, match="variant 'zz9'"):
        speech.synthesize("hello", speech.Speaker("x", "en-us+zz9", 50, 170))
    with pytest.raises(MissingDataError, match="language 'en-xx'"):
        speech.synthesize("hello", speech.Speaker("x", "en-xx+f3", 50, 170))
