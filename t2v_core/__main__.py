"""Command line: ``python -m t2v_core generate ...`` and ``python -m t2v_core convert SRC DST.safetensors``."""
import argparse
import logging
import sys

import torch

from . import SAMPLERS, CheckpointError, MissingComponent, NotEnoughMemory, generate, load_pipeline, save_single_file
from .pipeline import DTYPES
from .video import FORMATS, write_video


ADVICE_MEMORY = "Use fewer --frames, a smaller --width/--height, --dtype fp16 on a GPU, or --context-frames 16."
ADVICE_VAE = "pass a separate VAE with --vae PATH (an SD-2.x VAE file or a diffusers vae/ folder)"


def _parser():
    parser = argparse.ArgumentParser(prog="python -m t2v_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write a video for a prompt")
    gen.add_argument("--checkpoint", required=True, help="checkpoint folder or file (any supported layout)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--out", required=True, help=f"output video ({', '.join(FORMATS)})")
    gen.add_argument("--vae", help="a separate VAE, for checkpoints without one (zeroscope v2)")
    gen.add_argument("--frames", type=int, default=16)
    gen.add_argument("--height", type=int, default=256)
    gen.add_argument("--width", type=int, default=256)
    gen.add_argument("--steps", type=int, default=50)
    gen.add_argument("--cfg", type=float, default=9.0, help="classifier-free guidance scale")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
    gen.add_argument("--eta", type=float, default=0.0)
    gen.add_argument("--fps", type=int, default=8)
    gen.add_argument("--context-frames", type=int, default=None,
                     help="opt-in sliding window for clips longer than memory allows (an approximation)")
    gen.add_argument("--context-overlap", type=int, default=4, help="frames shared by neighbouring windows")
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    gen.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))

    conv = commands.add_parser("convert", help="write any supported checkpoint as one safetensors file")
    conv.add_argument("src", help="checkpoint folder or file")
    conv.add_argument("dst", help="output .safetensors file")
    conv.add_argument("--vae", help="a separate VAE, for checkpoints without one (zeroscope v2)")
    conv.add_argument("--dtype", choices=sorted(DTYPES), help="store the weights in this dtype (default: as loaded)")
    return parser


def _generate(args):
    pipe = load_pipeline(args.checkpoint, device=args.device, dtype=DTYPES[args.dtype], vae=args.vae)

    def progress(step):
        print(f"\rstep {step['i'] + 1}/{step['total']}", end="", file=sys.stderr, flush=True)

    video = generate(pipe, args.prompt, negative_prompt=args.negative_prompt, num_frames=args.frames,
                     height=args.height, width=args.width, steps=args.steps, guidance_scale=args.cfg, seed=args.seed,
                     sampler=args.sampler, eta=args.eta, callback=progress, context_frames=args.context_frames,
                     context_overlap=args.context_overlap)
    print(file=sys.stderr)
    path = write_video(video, args.out, fps=args.fps, metadata={"comment": f"prompt: {args.prompt}; seed: {args.seed}"})
    print(path)


def _convert(args):
    if not args.dst.endswith(".safetensors"):
        raise ValueError(f"dst must end in .safetensors, got {args.dst}")
    pipe = load_pipeline(args.src, vae=args.vae)
    print(save_single_file(pipe, args.dst, dtype=DTYPES[args.dtype] if args.dtype else None))


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        (_generate if args.command == "generate" else _convert)(args)
    except NotEnoughMemory as e:
        print(f"error: {e.with_advice(ADVICE_MEMORY)}", file=sys.stderr)
        return 2
    except MissingComponent as e:
        print(f"error: {e.with_advice(ADVICE_VAE) if e.part == 'vae' else e}", file=sys.stderr)
        return 2
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
