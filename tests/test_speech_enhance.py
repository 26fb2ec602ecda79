"""The enhance command: a WAV in, a WAV out, clear refusals for bad input."""

import wave

import numpy as np
import pytest
import torch

from qattn.book.models.speech import SpeechEnhancer, SpeechModelConfig
from qattn.book.speech.__main__ import main
from qattn.book.speech.audio import read_wav, write_wav

TINY = SpeechModelConfig(
    growth=4,
    dense_width=8,
    d_model=16,
    num_heads=2,
    ffn_dim=32,
    conv_kernel=3,
    n_time_blocks=1,
    n_freq_blocks=1,
    encoder_dilations=(1,),
    decoder_dilations=(1,),
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save({"config": TINY.to_dict(), "state_dict": SpeechEnhancer(TINY).state_dict()}, path)
    return str(path)


def write_raw(path, data: np.ndarray, rate: int, channels: int = 1):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((data * 20000).astype("<i2").tobytes())


def test_enhances_a_mono_16k_file(tmp_path, checkpoint, capsys):
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    write_wav(src, 0.3 * np.sin(np.arange(8000) / 7.0))
    assert main(["enhance", str(src), "-o", str(dst), "--model", checkpoint]) == 0
    out, rate = read_wav(dst)
    assert rate == 16000 and out.shape == (8000, 1) and np.isfinite(out).all()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "no such WAV file"),
        ("notwav", "cannot read"),
        ("stereo", "2 channels"),
        ("rate", "8000 Hz"),
        ("empty", "empty"),
        ("short", "too short"),
    ],
)
def test_refusals(tmp_path, checkpoint, capsys, case, message):
    src = tmp_path / f"{case}.wav"
    if case == "notwav":
        src.write_text("hello")
    elif case == "stereo":
        write_raw(src, np.zeros(3200 * 2), 16000, channels=2)
    elif case == "rate":
        write_raw(src, np.zeros(3200), 8000)
    elif case == "empty":
        write_raw(src, np.zeros(0), 16000)
    elif case == "short":
        write_raw(src, np.zeros(800), 16000)
    assert main(["enhance", str(src), "-o", str(tmp_path / "o.wav"), "--model", checkpoint]) == 2
    assert message in capsys.readouterr().err


def test_resample_and_mix_down_options(tmp_path, checkpoint):
    src = tmp_path / "s.wav"
    write_raw(src, 0.1 * np.random.default_rng(0).standard_normal(2 * 8000), 8000, channels=2)
    dst = tmp_path / "o.wav"
    assert main(["enhance", str(src), "-o", str(dst), "--model", checkpoint, "--resample", "--mix-down"]) == 0
    assert read_wav(dst)[0].shape == (16000, 1)


def test_missing_model_is_explained(tmp_path, capsys):
    src = tmp_path / "in.wav"
    write_wav(src, np.zeros(4000))
    assert main(["enhance", str(src), "-o", str(tmp_path / "o.wav"), "--model", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_committed_checkpoint_enhances_out_of_the_box(tmp_path, monkeypatch):
    """After a checkout, with no training: the committed full-profile QConformer (shared scores)
    is what the command uses by default, and it raises the PESQ of a noisy utterance it never saw
    (a test-set speaker, a sentence and a noise drawn here)."""
    from qattn.book import paths
    from qattn.book.data.speech import SPEAKERS, make_noise, mix_at_snr, synthesize
    from qattn.book.speech.enhance import default_checkpoint
    from qattn.book.speech.metrics import pesq_wb, si_sdr

    monkeypatch.setenv("QATTN_MODELS_DIR", str(tmp_path / "no-builds"))  # ignore any local build
    path = default_checkpoint("qconformer_shared")
    assert path == paths.reference_dir("full") / "speech_models" / "qconformer_shared.pt"
    clean = synthesize("Please put the silver lantern beside the quiet harbor", SPEAKERS["test"][1])
    clean = (clean / np.abs(clean).max() * 0.5).astype(np.float32)
    noise = make_noise("pink", len(clean), np.random.default_rng(3)) + make_noise("white", len(clean), np.random.default_rng(4))
    clean, noisy = mix_at_snr(clean, noise, 5.0)
    src, dst = tmp_path / "noisy.wav", tmp_path / "enhanced.wav"
    write_wav(src, noisy)
    assert main(["enhance", str(src), "-o", str(dst)]) == 0
    enhanced = read_wav(dst)[0][:, 0]
    noisy16 = read_wav(src)[0][:, 0]  # the input as the command read it (16-bit)
    assert pesq_wb(clean, enhanced) > pesq_wb(clean, noisy16) + 0.1
    assert si_sdr(clean, enhanced) > si_sdr(clean, noisy16)
