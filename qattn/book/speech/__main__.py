"""Command line: ``python -m qattn.book.speech enhance noisy.wav -o enhanced.wav``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qattn.book.speech.enhance import EnhanceError, default_checkpoint, enhance_file, load_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qattn.book.speech", description="Speech enhancement with a trained quaternion enhancer."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enhance", help="enhance a 16 kHz mono WAV file")
    p.add_argument("input", help="noisy WAV file (PCM)")
    p.add_argument("-o", "--output", required=True, help="where to write the enhanced WAV (16 kHz, mono, 16-bit)")
    p.add_argument("--model", help="checkpoint .pt saved by the speech experiment (default: the trained QConformer, shared scores)")
    p.add_argument("--variant", default="qconformer_shared", help="variant to look up when --model is not given")
    p.add_argument("--resample", action="store_true", help="resample input that is not 16 kHz instead of refusing it")
    p.add_argument("--mix-down", action="store_true", help="average the channels of multi-channel input instead of refusing it")
    args = parser.parse_args(argv)
    try:
        if not Path(args.input).is_file():
            raise EnhanceError(f"no such WAV file: {args.input}")
        model = load_checkpoint(args.model or default_checkpoint(args.variant))
        info = enhance_file(args.input, args.output, model, resample_input=args.resample, mix_down=args.mix_down)
    except EnhanceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({info['seconds']:.2f} s at 16 kHz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
