"""Batch generation throughput: `python -m t2v_core batch` in one process and on a local Ray cluster of 1 and 2
workers, against `generate` (in this process, and as one command per video).

    .venv/bin/python bench/batch.py [--videos 12] [--frames 8] [--size 64] [--steps 10]

The tiny random checkpoint of the tests (tests/tiny.py) keeps a video at about a second, so the figures show what
the batch machinery costs beside the model. Every run computes on one thread per worker (OMP_NUM_THREADS=1 for
the single-process runs, a cluster of as many CPUs as workers for Ray), so 2 workers use 2 cores against 1.
Steady throughput is taken between the first and the last video written (their files' times), start-up aside.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def cpu_kind():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def tiny_checkpoint(folder):
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    import tiny

    return tiny.write_original(Path(folder) / "tiny", tiny.unet(), tiny.vae(), tiny.openclip_model())


def settings(args):
    return ["--frames", str(args.frames), "--height", str(args.size), "--width", str(args.size), "--steps",
            str(args.steps)]


def in_process(checkpoint, prompts, args):
    """Seconds per video of ``generate`` and ``write_video`` in a loop, the pipeline loaded once: the work itself."""
    import torch

    import t2v_core

    torch.set_num_threads(1)
    pipe = t2v_core.load_pipeline(checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for i, prompt in enumerate(prompts):
            video = t2v_core.generate(pipe, prompt, num_frames=args.frames, height=args.size, width=args.size,
                                      steps=args.steps, seed=0)
            t2v_core.write_video(video, Path(folder) / f"{i}.mp4")
        return (time.perf_counter() - start) / len(prompts)


def generate_commands(checkpoint, prompts, args):
    """Seconds per video of one `python -m t2v_core generate` per video (start-up and loading every time)."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for i, prompt in enumerate(prompts):
            subprocess.run([sys.executable, "-m", "t2v_core", "generate", "--checkpoint", str(checkpoint), "--prompt",
                            prompt, "--out", f"{folder}/{i}.mp4", *settings(args)], check=True, cwd=REPO,
                           env=ONE_THREAD, capture_output=True)
        return (time.perf_counter() - start) / len(prompts)


def batch_command(checkpoint, prompt_file, args, *extra, env=None):
    """Wall seconds, seconds to the first video, and steady seconds per video of one batch command."""
    with tempfile.TemporaryDirectory() as out:
        start = time.time()
        subprocess.run([sys.executable, "-m", "t2v_core", "batch", "--checkpoint", str(checkpoint), "--prompts",
                        str(prompt_file), "--out", out, *settings(args), *extra], check=True, cwd=REPO, env=env,
                       capture_output=True)
        wall = time.time() - start
        written = sorted(p.stat().st_mtime for p in Path(out).glob("*.mp4"))
        assert len(written) == args.videos, f"{len(written)} videos of {args.videos}"
        return wall, written[0] - start, (written[-1] - written[0]) / (len(written) - 1)


def on_ray(checkpoint, prompt_file, args, workers):
    """A batch command on a fresh local cluster of ``workers`` CPUs, one worker each."""
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        return batch_command(checkpoint, prompt_file, args, "--ray", address, "--workers", str(workers))
    finally:
        ray.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    prompts = [f"a lighthouse in a storm, take {i}" for i in range(args.videos)]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = tiny_checkpoint(folder)
        prompt_file = Path(folder) / "prompts.jsonl"
        prompt_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        work = in_process(checkpoint, prompts, args)
        commands = generate_commands(checkpoint, prompts[:3], args)
        runs = {("batch, one process", 1): batch_command(checkpoint, prompt_file, args, env=ONE_THREAD),
                ("batch --ray, 1 worker", 1): on_ray(checkpoint, prompt_file, args, 1),
                ("batch --ray, 2 workers", 2): on_ray(checkpoint, prompt_file, args, 2)}
    print(f"t2v_core batch benchmark, {time.strftime('%Y-%m-%d')}, {cpu_kind()}, {os.cpu_count()} cores, "
          f"tiny checkpoint, {args.videos} videos of {args.frames} frames {args.size}x{args.size}, {args.steps} "
          "DDIM steps, 1 thread per worker\n")
    print(f"generate() + write_video in one process: {work:.2f} s per video ({60 / work:.1f} videos/min)")
    print(f"python -m t2v_core generate, one command per video: {commands:.2f} s per video "
          f"({60 / commands:.1f} videos/min)\n")
    print("| run | wall (s) | first video after (s) | videos/min, whole run | videos/min, steady | "
          "worker s/video beyond generate() |")
    print("|---|---|---|---|---|---|")
    for (name, workers), (wall, first, steady) in runs.items():
        print(f"| {name} | {wall:.1f} | {first:.1f} | {60 * args.videos / wall:.1f} | {60 / steady:.1f} | "
              f"{steady * workers - work:+.2f} |")


if __name__ == "__main__":
    main()
