"""Command line: ``python -m t2v_core generate ...``, ``python -m t2v_core batch ...`` and
``python -m t2v_core convert SRC DST.safetensors``."""
import argparse
import logging
import os
import sys
from functools import partial

import torch

from . import SAMPLERS, CheckpointError, MissingComponent, NotEnoughMemory, generate, load_pipeline, save_single_file
from .batch import (MANIFEST, SEEDS, SETTINGS, Writer, local_results, make_jobs, optional, read_entries, run_batch,
                    video_metadata, whole)
from .pipeline import DTYPES
from .video import FORMATS, write_video


ADVICE_MEMORY = "Use fewer --frames, a smaller --width/--height, --dtype fp16 on a GPU, or --context-frames 16."
ADVICE_VAE = "pass a separate VAE with --vae PATH (an SD-2.x VAE file or a diffusers vae/ folder)"
BATCH_HELP = """Write a video for each prompt and seed of a prompt file into --out, named <prompt>-<seed>.<format>
(VBench's layout; <name>-<seed> where a JSONL line gives a "name", <video_id>-<seed> for MSR-VTT), and list each
in --out/manifest.jsonl. A rerun skips the videos already there; a killed run leaves no half-written file.

Prompt files:
  prompts.txt       one prompt per line (VBench's prompts/all_dimension.txt, prompts_per_dimension/*.txt)
  prompts.jsonl     one JSON object per line: "prompt" and optionally "seed", "negative_prompt", "name", "frames",
                    "height", "width", "steps", "cfg", "sampler", "eta", "fps", "context_frames",
                    "context_overlap" (these override the options below for that line)
  *.json            VBench's VBench_full_info.json, or MSR-VTT's annotations (test_videodatainfo.json,
                    MSRVTT_data.json): the first caption of each clip
"""


def _video_options(parser):
    """The options ``generate`` and ``batch`` share: the checkpoint and generate's settings."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or file (any supported layout)")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--vae", help="a separate VAE, for checkpoints without one (zeroscope v2)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg", type=float, default=9.0, help="classifier-free guidance scale")
    parser.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--context-frames", type=int, default=None,
                        help="opt-in sliding window for clips longer than memory allows (an approximation)")
    parser.add_argument("--context-overlap", type=int, default=4, help="frames shared by neighbouring windows")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))


def _parser():
    parser = argparse.ArgumentParser(prog="python -m t2v_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write a video for a prompt")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--out", required=True, help=f"output video ({', '.join(FORMATS)})")
    gen.add_argument("--seed", type=int, default=0)
    _video_options(gen)
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")

    batch = commands.add_parser("batch", help="write a video for each prompt and seed of a prompt file, resumably",
                                description=BATCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("--prompts", required=True, help="prompt file: one prompt per line, JSONL, VBench's or "
                                                        "MSR-VTT's JSON")
    batch.add_argument("--out", required=True, help=f"output folder, with the videos and {MANIFEST}")
    seeds = batch.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=1, help="videos per prompt, with seeds 0 to N-1 (default 1)")
    seeds.add_argument("--seed-list", type=int, nargs="+", help="the seeds of each prompt's videos")
    batch.add_argument("--format", default="mp4", choices=FORMATS)
    batch.add_argument("--limit", type=int, help="only the first N prompts of the file")
    _video_options(batch)
    batch.add_argument("--device", help="default: cuda where the worker has a GPU, else cpu")
    batch.add_argument("--ray", metavar="auto|ADDRESS",
                       help="make the videos on a Ray cluster (auto: the one `ray start` started on this machine)")
    batch.add_argument("--workers", type=int, help="Ray workers (default: one per GPU; without GPUs one per machine)")

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
    path = write_video(video, args.out, fps=args.fps, metadata=video_metadata(args.prompt, args.seed))
    print(path)


def _batch(args):
    """Make what it can; prompts refused and videos not made are named at the end (exit status 2)."""
    defaults = {key: getattr(args, key) for key in SETTINGS}
    checks = {**SETTINGS, "seeds": whole(1), "limit": optional(whole(1)), "workers": optional(whole(1)),
              "seed_list": whole(*SEEDS)}
    options = [*defaults.items(), ("seeds", args.seeds), ("limit", args.limit), ("workers", args.workers),
               *(("seed_list", seed) for seed in args.seed_list or ())]
    for key, value in options:
        try:
            checks[key](value)
        except ValueError as e:
            raise ValueError(f"--{key.replace('_', '-')} must be {e}") from None
    entries, problems = read_entries(args.prompts)
    jobs, refused = make_jobs(entries[:args.limit], defaults, args.seed_list or range(args.seeds), args.format)
    worker = dict(checkpoint=args.checkpoint, device=args.device, dtype=args.dtype, vae=args.vae)
    writer = Writer(args.out, jobs, {"checkpoint": os.path.abspath(args.checkpoint), "dtype": args.dtype})
    if args.ray:
        from .distributed import ray_results
        results = partial(ray_results, address=args.ray, workers=args.workers, **worker)
    else:
        results = partial(local_results, **worker)
    problems += refused + run_batch(jobs, writer, results)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"error: {len(problems)} prompts or videos above were not made; the rest are in {args.out}",
              file=sys.stderr)
    return 2 if problems else 0


def _convert(args):
    if not args.dst.endswith(".safetensors"):
        raise ValueError(f"dst must end in .safetensors, got {args.dst}")
    pipe = load_pipeline(args.src, vae=args.vae)
    print(save_single_file(pipe, args.dst, dtype=DTYPES[args.dtype] if args.dtype else None))


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return {"generate": _generate, "batch": _batch, "convert": _convert}[args.command](args) or 0
    except NotEnoughMemory as e:
        print(f"error: {e.with_advice(ADVICE_MEMORY)}", file=sys.stderr)
        return 2
    except MissingComponent as e:
        print(f"error: {e.with_advice(ADVICE_VAE) if e.part == 'vae' else e}", file=sys.stderr)
        return 2
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
