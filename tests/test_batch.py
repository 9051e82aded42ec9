"""``python -m t2v_core batch``: prompt files, names, manifest, reruns, a killed run, and the same set on a local Ray
cluster (two workers; one of them killed mid-run)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import decoded
from t2v_core import SETTINGS
from t2v_core.batch import file_stem, make_jobs, read_entries

SIZE = ["--frames", "2", "--height", "32", "--width", "32", "--steps", "2"]
DEFAULTS = dict(num_frames=2, height=32, width=32, steps=2, guidance_scale=9.0, sampler="ddim", eta=0.0, fps=8,
                context_frames=None, context_overlap=4)
# The manifest records the settings by the keys prompt lines had first, as folders made before hold them.
RECORDED = dict(frames=2, height=32, width=32, steps=2, cfg=9.0, sampler="ddim", eta=0.0, fps=8, context_frames=None,
                context_overlap=4)
GOOD = [{"prompt": "a panda playing guitar"}, {"prompt": "a red fox in snow", "seed": 7},
        {"prompt": "a boat / at sea", "negative_prompt": "blurry", "frames": 3}]
# Float sums in another order (another thread count) move a few values by ~1e-5, which can flip a uint8 that the
# encoder then spreads; the single-process runs here use one thread, as each Ray worker of 1 CPU does.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
BAD = ["", "{\"prompt\": \"unclosed", json.dumps({"prompt": "x", "frames": 0}), json.dumps({"prompt": "  "})]


def batch(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "t2v_core", "batch", *SIZE, *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def manifest(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def videos(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "manifest.jsonl")


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


# --- Prompt files (no model) ------------------------------------------------------------------------------------

def test_plain_text_lines_are_prompts_and_empty_lines_are_named(tmp_path):
    """VBench's prompts/*.txt layout: a video per prompt and seed, named ``$prompt-$seed`` as VBench reads them."""
    path = write_lines(tmp_path / "all_dimension.txt", ["A 3D model of a 1800s victorian house.", "", "a cat  "])
    entries, problems = read_entries(path)
    jobs, refused = make_jobs(entries, DEFAULTS, range(2))
    assert [str(p) for p in problems + refused] == ["all_dimension.txt:2: empty prompt"]
    assert [job.file for job in jobs] == ["A 3D model of a 1800s victorian house.-0.mp4",
                                          "A 3D model of a 1800s victorian house.-1.mp4", "a cat-0.mp4", "a cat-1.mp4"]


def test_jsonl_lines_override_settings_and_bad_lines_are_named(tmp_path):
    lines = [json.dumps(GOOD[0]), *BAD[:3], json.dumps({"prompt": "y", "steps": "many"}),
             json.dumps({"prompt": "z", "guidance": 3}), json.dumps(["a list"]), json.dumps(GOOD[2])]
    entries, problems = read_entries(write_lines(tmp_path / "set.jsonl", lines))
    jobs, refused = make_jobs(entries, DEFAULTS, [0])
    assert [str(p) for p in problems + refused] == [
        "set.jsonl:2: empty line; expected a JSON object with a \"prompt\"",
        "set.jsonl:3: not JSON (Unterminated string starting at: column 12); expected an object such as "
        "{\"prompt\": \"a panda\", \"seed\": 0}",
        "set.jsonl:7: expected a JSON object with a \"prompt\", got list",
        f"set.jsonl:4: frames must be {SETTINGS['num_frames'].expected}, got 0",
        f"set.jsonl:5: steps must be {SETTINGS['steps'].expected}, got 'many'",
        "set.jsonl:6: unknown key 'guidance'; expected prompt, negative_prompt, seed, name, num_frames (or frames), "
        "height, width, steps, guidance_scale (or cfg), sampler, eta, fps, context_frames, context_overlap"]
    assert [(job.where, job.file, job.negative_prompt, job.settings["num_frames"]) for job in jobs] == [
        ("set.jsonl:1", "a panda playing guitar-0.mp4", "", 2), ("set.jsonl:8", "a boat _ at sea-0.mp4", "blurry", 3)]


def test_lines_take_generate_s_names_and_the_older_keys_alike():
    """``num_frames`` and ``guidance_scale`` make the job ``frames`` and ``cfg`` make, recorded under the older keys
    (a folder made before resumes); a line giving a setting twice with two values is refused, naming both keys."""
    entries = [("f:1", {"prompt": "a cat", "num_frames": 3, "guidance_scale": 7.5}),
               ("f:2", {"prompt": "a dog", "frames": 3, "cfg": 7.5}),
               ("f:3", {"prompt": "a cow", "frames": 3, "num_frames": 3}),
               ("f:4", {"prompt": "a pig", "cfg": 7.5, "guidance_scale": 2})]
    jobs, refused = make_jobs(entries, DEFAULTS, [0])
    assert [str(p) for p in refused] == ["f:4: cfg 7.5 and guidance_scale 2.0 are one setting; give one of them"]
    cat, dog, cow = jobs
    assert cat.settings == dog.settings == {**DEFAULTS, "num_frames": 3, "guidance_scale": 7.5}
    assert cat.record()["settings"] == {**RECORDED, "frames": 3, "cfg": 7.5} and cow.settings["num_frames"] == 3


def test_vbench_full_info_and_msrvtt_annotations_load_as_published(tmp_path):
    """VBench_full_info.json: a list of {"prompt_en", "dimension"}; MSR-VTT's test_videodatainfo.json: "videos" and
    "sentences" (20 captions per clip), of which the first caption of each clip is made, named by its video id."""
    vbench = tmp_path / "VBench_full_info.json"
    vbench.write_text(json.dumps([{"prompt_en": "In a still frame, a stop sign", "dimension": ["temporal_flickering"]},
                                  {"prompt_en": "a toilet, frozen in time", "dimension": ["temporal_flickering"],
                                   "auxiliary_info": {}}], indent=4))
    entries, problems = read_entries(vbench)
    jobs, _ = make_jobs(entries, DEFAULTS, range(5))
    assert not problems and len(jobs) == 10 and jobs[4].file == "In a still frame, a stop sign-4.mp4"
    msrvtt = tmp_path / "test_videodatainfo.json"
    msrvtt.write_text(json.dumps({
        "info": {"year": "2016"}, "videos": [{"video_id": f"video{i}", "id": i, "split": "test"} for i in (7010, 7011)],
        "sentences": [{"caption": "a man is singing", "video_id": "video7010", "sen_id": 180000},
                      {"caption": "a woman cooks", "video_id": "video7011", "sen_id": 180001},
                      {"caption": "a man sings a song", "video_id": "video7010", "sen_id": 180002}]}))
    entries, problems = read_entries(msrvtt)
    jobs, _ = make_jobs(entries, DEFAULTS, [0])
    assert not problems
    assert [(job.file, job.prompt) for job in jobs] == [("video7010-0.mp4", "a man is singing"),
                                                        ("video7011-0.mp4", "a woman cooks")]


def test_names_are_deterministic_and_never_clash():
    """The same video asked twice is made once; two videos that would share a name are refused with both named."""
    entries = [("f:1", {"prompt": "a cat"}), ("f:2", {"prompt": "a cat"}), ("f:3", {"prompt": "a cat", "steps": 9}),
               ("f:4", {"prompt": "a cat", "steps": 9, "name": "cat-9-steps"})]
    jobs, refused = make_jobs(entries, DEFAULTS, [0])
    assert [job.file for job in jobs] == ["a cat-0.mp4", "cat-9-steps-0.mp4"]
    assert [str(p) for p in refused] == ["f:3: its video would be named a cat-0.mp4, as the other video of f:1; "
                                         "give one of them a \"name\""]
    long = file_stem("x" * 300)
    assert len(long.encode()) <= 180 and long != file_stem("x" * 301) and file_stem(".hidden\n") == "hidden_"


@pytest.mark.parametrize("option, message", [
    (["--seeds", "0"], "--seeds must be a whole number of at least 1, got 0"),
    (["--seed-list", "1", "-2"], f"--seed-list must be {SETTINGS['seed'].expected}, got -2"),
    (["--frames", "5000"], f"--frames/--num-frames must be {SETTINGS['num_frames'].expected}, got 5000"),
    (["--guidance-scale", "nan"], f"--cfg/--guidance-scale must be {SETTINGS['guidance_scale'].expected}, got nan"),
    (["--fps", "121"], f"--fps must be {SETTINGS['fps'].expected}, got 121"),
])
def test_bad_options_are_refused_before_anything_runs(option, message, tmp_path, capsys):
    from t2v_core.__main__ import main

    prompts = write_lines(tmp_path / "p.txt", ["a cat"])
    assert main(["batch", "--checkpoint", "missing", "--prompts", str(prompts), "--out", str(tmp_path / "out"),
                 *option]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}" and not (tmp_path / "out").exists()


# --- One process ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    return write_lines(tmp_path_factory.mktemp("prompts") / "set.jsonl", [json.dumps(GOOD[0]), BAD[0], json.dumps(GOOD[1]),
                                                                           BAD[1], BAD[2], json.dumps(GOOD[2]), BAD[3]])


@pytest.fixture(scope="module")
def local_run(checkpoints, prompt_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = batch("--checkpoint", str(checkpoints["original"]), "--prompts", str(prompt_file), "--out", str(out),
                   "--seeds", "2", env=ONE_THREAD)
    return out, result


def test_batch_names_bad_lines_and_makes_the_rest(local_run):
    out, result = local_run
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: set.jsonl:")]
    assert [e.split(":")[2] for e in errors] == ["2", "4", "5", "7"], result.stderr
    assert f"frames must be {SETTINGS['num_frames'].expected}, got 0" in errors[2] and "empty prompt" in errors[3]
    expected = ["a boat _ at sea-0.mp4", "a boat _ at sea-1.mp4", "a panda playing guitar-0.mp4",
                "a panda playing guitar-1.mp4", "a red fox in snow-7.mp4"]
    assert videos(out) == expected and sorted(e["file"] for e in manifest(out)) == expected
    entry = next(e for e in manifest(out) if e["seed"] == 7)
    assert entry["prompt"] == "a red fox in snow" and entry["settings"] == RECORDED and entry["seconds"] > 0


def test_batch_videos_are_generates_videos(local_run, checkpoints, tmp_path):
    """A batch video has the frames (indeed the bytes) of ``generate`` with the same prompt, seed and settings."""
    out, _ = local_run
    single = tmp_path / "boat.mp4"
    result = subprocess.run([sys.executable, "-m", "t2v_core", "generate", "--checkpoint", str(checkpoints["original"]),
                             "--prompt", GOOD[2]["prompt"], "--negative-prompt", "blurry", "--seed", "1", "--out",
                             str(single), *SIZE, "--frames", "3"], capture_output=True, text=True, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    batch_frames = decoded(out / "a boat _ at sea-1.mp4")
    assert batch_frames.shape == (3, 32, 32, 3) and batch_frames.std() > 1
    assert np.array_equal(batch_frames, decoded(single))
    assert (out / "a boat _ at sea-1.mp4").read_bytes() == single.read_bytes()


def test_a_rerun_does_nothing(local_run, checkpoints, prompt_file):
    out, _ = local_run
    before = {name: os.stat(out / name).st_mtime_ns for name in videos(out) + ["manifest.jsonl"]}
    result = batch("--checkpoint", str(checkpoints["original"]), "--prompts", str(prompt_file), "--out", str(out),
                   "--seeds", "2")
    assert "5 videos in" in result.stderr and "0 made now, 5 were there" in result.stderr
    assert {name: os.stat(out / name).st_mtime_ns for name in videos(out) + ["manifest.jsonl"]} == before
    other = batch("--checkpoint", str(checkpoints["original"]), "--prompts", str(prompt_file), "--out", str(out),
                  "--seeds", "2", "--steps", "3")
    assert other.returncode == 2 and "a red fox in snow-7.mp4 was made with steps=2 (now 3)" in other.stderr
    assert {name: os.stat(out / name).st_mtime_ns for name in videos(out) + ["manifest.jsonl"]} == before


def wait_for_entries(out, count, process, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "manifest.jsonl").exists() and len(manifest(out)) >= count:
            return manifest(out)
        time.sleep(0.05)
    raise AssertionError(f"no {count} manifest entries in {timeout} s: {process.communicate()}")


def test_a_killed_run_leaves_whole_videos_and_a_rerun_finishes_it(checkpoints, tmp_path):
    prompts = write_lines(tmp_path / "p.txt", [f"prompt number {i}" for i in range(3)])
    args = ["--checkpoint", str(checkpoints["original"]), "--prompts", str(prompts), "--out", str(tmp_path / "out")]
    process = subprocess.Popen([sys.executable, "-m", "t2v_core", "batch", *SIZE, *args], stderr=subprocess.PIPE,
                               text=True)
    wait_for_entries(tmp_path / "out", 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for name in videos(tmp_path / "out"):  # every name holds a whole video; a hidden temporary file may be left
        assert name.startswith(".") or decoded(tmp_path / "out" / name).shape == (2, 32, 32, 3)
    result = batch(*args)
    assert result.returncode == 0, result.stderr
    expected = [f"prompt number {i}-0.mp4" for i in range(3)]
    assert videos(tmp_path / "out") == expected  # the killed run's temporary file is gone
    assert sorted(e["file"] for e in manifest(tmp_path / "out")) == expected


# --- A Ray cluster ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_address():
    """A local Ray cluster of 2 CPUs (this process is its head); the batch commands join it by address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_two_ray_workers_make_the_single_process_videos(local_run, checkpoints, prompt_file, ray_address, tmp_path):
    """Same prompts, seeds and settings: the frames are equal to the last bit (the noise is drawn on the CPU from
    the seed, and the encoder is deterministic), whichever worker made them."""
    local, _ = local_run
    out = tmp_path / "ray"
    args = ["--checkpoint", str(checkpoints["original"]), "--prompts", str(prompt_file), "--out", str(out), "--seeds",
            "2", "--ray", ray_address, "--workers", "2"]
    result = batch(*args)
    assert result.returncode == 2 and "2 Ray workers ({'num_cpus': 1} each)" in result.stderr
    assert [e.split(":")[2] for e in result.stderr.splitlines() if e.startswith("error: set.jsonl:")] == ["2", "4",
                                                                                                         "5", "7"]
    assert videos(out) == videos(local) and len(manifest(out)) == 5
    for name in videos(local):
        assert np.array_equal(decoded(out / name), decoded(local / name)), name
    assert len({e["worker"] for e in manifest(out)}) == 2  # both workers made videos
    rerun = batch(*args)
    assert "0 made now, 5 were there" in rerun.stderr and "Ray workers" not in rerun.stderr  # no cluster work at all


def test_a_killed_ray_worker_s_videos_are_made_once_elsewhere(checkpoints, ray_address, tmp_path):
    count = 4
    prompts = write_lines(tmp_path / "p.txt", [f"prompt number {i}" for i in range(count)])
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "t2v_core", "batch", *SIZE, "--steps", "8", "--checkpoint",
                                str(checkpoints["original"]), "--prompts", str(prompts), "--out", str(out), "--ray",
                                ray_address, "--workers", "2"], stderr=subprocess.PIPE, text=True)
    first = wait_for_entries(out, 1, process)[0]
    killed = int(first["worker"].rsplit(":", 1)[1])
    os.kill(killed, signal.SIGKILL)  # the worker that made the first video, now making another
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    entries = manifest(out)
    expected = [f"prompt number {i}-0.mp4" for i in range(count)]
    assert sorted(e["file"] for e in entries) == expected == videos(out)  # each once, in the folder and the manifest
    assert len({e["worker"] for e in entries}) == 3  # Ray restarted the killed worker as a new process


def test_workers_that_cannot_load_the_checkpoint_are_named_once(ray_address, tmp_path):
    prompts = write_lines(tmp_path / "p.txt", ["a cat", "a dog"])
    result = batch("--checkpoint", str(tmp_path / "missing"), "--prompts", str(prompts), "--out", str(tmp_path / "out"),
                   "--ray", ray_address, "--workers", "2")
    assert result.returncode == 2
    assert (f"error: the Ray workers could not load the pipeline: t2v_core.checkpoint.CheckpointError: "
            f"{tmp_path / 'missing'}: no such file or folder") in result.stderr.splitlines()
    assert videos(tmp_path / "out") == []
