"""Command line: ``python -m t2v_core generate ...``, ``python -m t2v_core batch ...`` and
``python -m t2v_core convert SRC DST.safetensors``."""
import argparse
import logging
import os
import sys
import textwrap
from functools import partial

import torch

from . import CheckpointError, MissingComponent, NotEnoughMemory, generate, load_pipeline, save_single_file
from .batch import (MANIFEST, VIDEO_SETTINGS, Writer, line_keys, local_results, make_jobs, read_entries, run_batch,
                    video_metadata)
from .pipeline import DTYPES
from .settings import SETTINGS, Setting
from .video import CONTAINERS, FORMATS, write_video


ADVICE_MEMORY = "Use fewer --frames, a smaller --width/--height, --dtype fp16 on a GPU, or --context-frames 16."
ADVICE_VAE = "pass a separate VAE with --vae PATH (an SD-2.x VAE file or a diffusers vae/ folder)"
BATCH_HELP = """Write a video for each prompt and seed of a prompt file into --out, named <prompt>-<seed>.<format>
(VBench's layout; <name>-<seed> where a JSONL line gives a "name", <video_id>-<seed> for MSR-VTT), and list each
in --out/manifest.jsonl. A rerun skips the videos already there; a killed run leaves no half-written file.

Prompt files:
  prompts.txt       one prompt per line (VBench's prompts/all_dimension.txt, prompts_per_dimension/*.txt)
  prompts.jsonl     one JSON object per line with a "prompt" and optionally any of these keys (or their older
                    names), which override the options below for that line:
{keys}
  *.json            VBench's VBench_full_info.json, or MSR-VTT's annotations (test_videodatainfo.json,
                    MSRVTT_data.json): the first caption of each clip
""".format(keys=textwrap.fill(line_keys(optional=True), width=116, initial_indent=" " * 20,
                              subsequent_indent=" " * 20))
# The batch command's own options, checked as the settings are.
SEEDS = Setting("seeds", 1, int, "videos per prompt, with seeds 0 to N-1", 1)
LIMIT = Setting("limit", None, int, "only the first N prompts of the file", 1)
WORKERS = Setting("workers", None, int, "Ray workers (default: one per GPU; without GPUs one per machine)", 1)


def _flags(setting):
    """The options of a setting: --<alias> (its name before) and --<name> where it has an alias."""
    return [f"--{name.replace('_', '-')}" for name in (setting.alias, setting.name) if name]


def _setting_option(parser, setting):
    expected = "" if setting.type is str and not setting.choices else f"; {setting.expected}"
    default = "" if setting.default in (None, "") else f" (default {setting.default})"
    parser.add_argument(*_flags(setting), dest=setting.name, type=setting.type, default=setting.default,
                        help=f"{setting.help}{expected}{default}")


def _video_options(parser):
    """The options ``generate`` and ``batch`` share: the checkpoint and generate's settings."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or file (any supported layout)")
    _setting_option(parser, SETTINGS["negative_prompt"])
    parser.add_argument("--vae", help="a separate VAE, for checkpoints without one (zeroscope v2)")
    for name in VIDEO_SETTINGS:
        _setting_option(parser, SETTINGS[name])
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))


def _check_options(args, settings):
    """Refuse, before anything loads, an option's value outside its setting's range or choices, naming the option."""
    for setting in settings:
        _check("/".join(_flags(setting)), setting, getattr(args, setting.name))


def _check(option, setting, value):
    try:
        setting.check(value)
    except ValueError as e:
        raise ValueError(f"{option} must be {e}") from None


def _parser():
    parser = argparse.ArgumentParser(prog="python -m t2v_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write a video for a prompt")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--out", required=True, help=f"output video ({', '.join(FORMATS)})")
    _setting_option(gen, SETTINGS["seed"])
    _video_options(gen)
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")

    batch = commands.add_parser("batch", help="write a video for each prompt and seed of a prompt file, resumably",
                                description=BATCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("--prompts", required=True, help="prompt file: one prompt per line, JSONL, VBench's or "
                                                        "MSR-VTT's JSON")
    batch.add_argument("--out", required=True, help=f"output folder, with the videos and {MANIFEST}")
    seeds = batch.add_mutually_exclusive_group()
    _setting_option(seeds, SEEDS)
    seeds.add_argument("--seed-list", type=int, nargs="+", help="the seeds of each prompt's videos")
    batch.add_argument("--format", default=FORMATS[0], choices=FORMATS,
                       help="; ".join(f"{fmt}: {container.about}" for fmt, container in CONTAINERS.items()))
    _setting_option(batch, LIMIT)
    _video_options(batch)
    batch.add_argument("--device", help="default: cuda where the worker has a GPU, else cpu")
    batch.add_argument("--ray", metavar="auto|ADDRESS",
                       help="make the videos on a Ray cluster (auto: the one `ray start` started on this machine)")
    _setting_option(batch, WORKERS)

    conv = commands.add_parser("convert", help="write any supported checkpoint as one safetensors file")
    conv.add_argument("src", help="checkpoint folder or file")
    conv.add_argument("dst", help="output .safetensors file")
    conv.add_argument("--vae", help="a separate VAE, for checkpoints without one (zeroscope v2)")
    conv.add_argument("--dtype", choices=sorted(DTYPES), help="store the weights in this dtype (default: as loaded)")
    return parser


def _generate(args):
    _check_options(args, [SETTINGS[name] for name in ("seed", "negative_prompt", *VIDEO_SETTINGS)])
    pipe = load_pipeline(args.checkpoint, device=args.device, dtype=DTYPES[args.dtype], vae=args.vae)

    def progress(step):
        print(f"\rstep {step['i'] + 1}/{step['total']}", end="", file=sys.stderr, flush=True)

    video = generate(pipe, args.prompt, negative_prompt=args.negative_prompt, seed=args.seed, callback=progress,
                     **{name: getattr(args, name) for name in VIDEO_SETTINGS if name != "fps"})
    print(file=sys.stderr)
    path = write_video(video, args.out, fps=args.fps, metadata=video_metadata(args.prompt, args.seed))
    print(path)


def _batch(args):
    """Make what it can; prompts refused and videos not made are named at the end (exit status 2)."""
    _check_options(args, [SETTINGS[name] for name in ("negative_prompt", *VIDEO_SETTINGS)] + [SEEDS, LIMIT, WORKERS])
    for seed in args.seed_list or ():
        _check("--seed-list", SETTINGS["seed"], seed)
    defaults = {name: getattr(args, name) for name in VIDEO_SETTINGS}
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
