"""Batch generation: prompt sets (plain text, JSONL, VBench's and MSR-VTT's published lists) to one video per
(prompt, seed) under a deterministic name, with a manifest, resumable and safe to kill at any moment.

One process (``local_results``) or a Ray cluster (``t2v_core.distributed``) makes the videos; either way the
driver alone writes the files and the manifest (``Writer``), each file under a temporary name first.
"""
import hashlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import write_files
from .generate import generate
from .settings import SETTINGS, Setting
from .video import write_video

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
NAME_BYTES = 180  # file names stay well under the usual 255-byte limit, with room for the temporary name's tag
# What a prompt line may set for its video beside its negative_prompt and seed: generate's settings and the fps.
VIDEO_SETTINGS = ("num_frames", "height", "width", "steps", "guidance_scale", "sampler", "eta", "fps", "context_frames",
                  "context_overlap")
# A prompt line's keys: generate's names, and the aliases (the keys lines had first: "frames", "cfg"), which the
# manifest keeps recording settings by, so a rerun matches the videos of a folder made before.
LINE_KEYS = {"prompt": Setting("prompt", "", str, "what the video shows"),
             "negative_prompt": SETTINGS["negative_prompt"], "seed": SETTINGS["seed"],
             "name": Setting("name", None, str, "the video's file name, instead of the prompt"),
             **{name: SETTINGS[name] for name in VIDEO_SETTINGS}}
ALIASES = {setting.alias: name for name, setting in LINE_KEYS.items() if setting.alias}


def line_keys(optional=False):
    """A prompt line's keys (``optional``: those beside "prompt"), with their aliases: "num_frames (or frames)"."""
    return ", ".join(f"{key} (or {setting.alias})" if setting.alias else key for key, setting in LINE_KEYS.items()
                     if not (optional and key == "prompt"))


def manifest_key(name):
    """The key the manifest records a setting by: its alias, the key lines had first, where it has one."""
    return SETTINGS[name].alias or name


class PromptError(ValueError):
    """A prompt line that cannot be made, named by ``where`` (``prompts.jsonl:7``)."""

    def __init__(self, where, message):
        super().__init__(f"{where}: {message}")
        self.where = where


@dataclass
class Job:
    """One video: ``file`` (a name in the output folder) made from a prompt, a seed and ``settings``, the
    ``VIDEO_SETTINGS`` by generate's names."""
    where: str
    file: str
    prompt: str
    negative_prompt: str
    seed: int
    settings: dict

    def record(self):
        """What the video is made from: a file in the manifest with another record is another video."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "seed": self.seed,
                "settings": {manifest_key(name): value for name, value in self.settings.items()}}


def video_metadata(prompt, seed):
    """The container tags ``generate`` and ``batch`` write into every video."""
    return {"comment": f"prompt: {prompt}; seed: {seed}"}


# --- Prompt files -----------------------------------------------------------------------------------------------

def read_entries(path):
    """``(where, fields)`` for each prompt of ``path``, and the ``PromptError`` of each entry that is not one.

    ``.jsonl``: one object per line with ``prompt`` and optional ``LINE_KEYS`` (or their ``ALIASES``). ``.json``:
    VBench's ``VBench_full_info.json`` (a list of ``{"prompt_en": ...}``), MSR-VTT's annotation files
    (``{"sentences": [{"video_id", "caption"}, ...]}``: the first caption of each clip, named by its video id), or a
    list of JSONL's objects. Anything else: one prompt per line (VBench's ``prompts/*.txt``).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return _json_entries(path.name, text)
    entries, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path.name}:{number}"
        try:
            entries.append((where, _jsonl_fields(line) if path.suffix == ".jsonl" else {"prompt": line.strip()}))
        except ValueError as e:
            problems.append(PromptError(where, str(e)))
    return entries, problems


def _jsonl_fields(line):
    if not line.strip():
        raise ValueError("empty line; expected a JSON object with a \"prompt\"")
    try:
        fields = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg}: column {e.colno}); expected an object such as "
                         "{\"prompt\": \"a panda\", \"seed\": 0}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"expected a JSON object with a \"prompt\", got {type(fields).__name__}")
    return fields


def _json_entries(name, text):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name} is not JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("sentences"), list):
        return _msrvtt_entries(name, data["sentences"])
    if not isinstance(data, list):
        raise ValueError(f"{name}: expected VBench's list of prompts, MSR-VTT's annotations or a list of objects "
                         "with a \"prompt\"")
    entries, problems = [], []
    for number, item in enumerate(data, 1):
        where = f"{name} item {number}"
        if isinstance(item, dict) and "prompt_en" in item:  # VBench: other keys are its evaluation's labels
            entries.append((where, {"prompt": item["prompt_en"]}))
        elif isinstance(item, dict):
            entries.append((where, item))
        else:
            problems.append(PromptError(where, f"expected an object with a \"prompt\", got {item!r}"))
    return entries, problems


def _msrvtt_entries(name, sentences):
    """The first caption of each clip, in the file's order, named by the clip's ``video_id``."""
    first, problems = {}, []
    for number, sentence in enumerate(sentences, 1):
        if isinstance(sentence, dict) and isinstance(sentence.get("video_id"), str) and "caption" in sentence:
            first.setdefault(sentence["video_id"], (f"{name} sentence {number}", sentence["caption"]))
        else:
            problems.append(PromptError(f"{name} sentence {number}", "expected MSR-VTT's {\"video_id\", "
                                                                   "\"caption\", ...}"))
    return [(where, {"prompt": caption, "name": video_id}) for video_id, (where, caption) in first.items()], problems


# --- Jobs -------------------------------------------------------------------------------------------------------

def file_stem(text):
    """A file name for ``text``, the prompt as it is where a file name can hold it (VBench names videos
    ``$prompt-$index.mp4``): ``/`` and control characters become ``_``, no leading dot (hidden names are the
    temporary files), and a long prompt is cut and tagged with a hash of the whole so different prompts stay apart."""
    stem = "".join("_" if c == "/" or not c.isprintable() else c for c in text).strip().lstrip(".") or "_"
    if len(stem.encode()) > NAME_BYTES:
        tag = hashlib.sha1(text.encode()).hexdigest()[:10]
        stem = stem.encode()[:NAME_BYTES - 11].decode(errors="ignore") + "~" + tag
    return stem


def make_jobs(entries, defaults, seeds, fmt="mp4"):
    """The jobs of prompt entries: one per seed (the entry's own ``seed``, or each of ``seeds``), named
    ``<name or prompt>-<seed>.<fmt>``; ``defaults`` are the command's ``VIDEO_SETTINGS``, which an entry may
    override.

    Returns ``(jobs, problems)``. An entry with a bad field is a ``PromptError``; an entry asking for a video
    already listed is made once; one whose name another entry's different video has already taken is refused.
    """
    jobs, problems = {}, []
    for where, fields in entries:
        try:
            job_fields = _check_fields(fields)
        except ValueError as e:
            problems.append(PromptError(where, str(e)))
            continue
        settings = {**defaults, **{k: v for k, v in job_fields.items() if k in VIDEO_SETTINGS}}
        stem = file_stem(job_fields.get("name", job_fields["prompt"]))
        for seed in [job_fields["seed"]] if "seed" in job_fields else seeds:
            job = Job(where, f"{stem}-{seed}.{fmt}", job_fields["prompt"], job_fields.get("negative_prompt", ""),
                      seed, settings)
            taken = jobs.setdefault(job.file, job)
            if taken.record() != job.record():
                problems.append(PromptError(where, f"its video would be named {job.file}, as the other video of "
                                                   f"{taken.where}; give one of them a \"name\""))
    return list(jobs.values()), problems


def _check_fields(fields):
    """A prompt line's fields by generate's names, checked. A line may give a setting by its name or its alias, and
    by both only with one value."""
    unknown = sorted(set(fields) - set(LINE_KEYS) - set(ALIASES))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; expected {line_keys()}")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("no \"prompt\"" if prompt is None else f"prompt must be a string, got {prompt!r}")
    if not prompt.strip():
        raise ValueError("empty prompt")
    checked, given_as = {}, {}
    for key, value in fields.items():
        name = ALIASES.get(key, key)
        try:
            value = LINE_KEYS[name].check(value)
        except ValueError as e:
            raise ValueError(f"{key} must be {e}") from None
        if name in checked and checked[name] != value:
            raise ValueError(f"{given_as[name]} {checked[name]!r} and {key} {value!r} are one setting; give one of "
                             "them")
        checked[name], given_as[name] = value, key
    return checked


# --- Making videos ----------------------------------------------------------------------------------------------

class Worker:
    """Holds a loaded pipeline and makes jobs' videos, returned as encoded bytes so that whoever asked (this
    process or a Ray driver on another machine) writes the file."""

    def __init__(self, checkpoint, device=None, dtype="fp32", vae=None, threads=None):

        from .loading import load_pipeline
        from .pipeline import DTYPES

        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.pipe = load_pipeline(checkpoint, device=device, dtype=DTYPES[dtype], vae=vae)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self):
        """This worker's ``host:pid``, once its pipeline is loaded."""
        return self.name

    def run(self, job):
        """``(file, result)``: result holds the video's bytes, or ``error`` for a video these settings cannot make
        (too big for memory, a size the VAE cannot take); a crash is left to the caller (Ray reruns the job)."""
        start = time.perf_counter()
        options = {name: value for name, value in job.settings.items() if name != "fps"}
        try:
            video = generate(self.pipe, job.prompt, negative_prompt=job.negative_prompt, seed=job.seed, **options)
            data = encode_video(video, Path(job.file).suffix.lstrip("."), job.settings["fps"],
                                video_metadata(job.prompt, job.seed))
        except (ValueError, torch.cuda.OutOfMemoryError) as e:
            return job.file, {"error": str(e)}
        return job.file, {"data": data, "seconds": round(time.perf_counter() - start, 3), "worker": self.name}


def encode_video(frames, fmt, fps, metadata):
    with tempfile.TemporaryDirectory() as folder:
        return write_video(frames, Path(folder) / f"video.{fmt}", fps=fps, metadata=metadata).read_bytes()


def local_results(jobs, **worker_options):
    """``(file, result)`` for each job, made one after the other in this process."""
    worker = Worker(**worker_options)
    for job in jobs:
        yield worker.run(job)


# --- The output folder ------------------------------------------------------------------------------------------

class Writer:
    """The output folder's one writer: videos appear whole under their names (written to a hidden temporary name,
    then renamed), and each is then listed in ``manifest.jsonl``, one JSON object per line, flushed to disk."""

    def __init__(self, out, jobs, info):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.info = info
        self.manifest = self.out / MANIFEST
        self.done = {file: entry for file, entry in self._read_manifest().items() if (self.out / file).exists()}
        self._remove_leftovers({job.file for job in jobs})

    def _read_manifest(self):
        """Entries by file; a last line cut short by a killed run is dropped (and removed from the file)."""
        if not self.manifest.exists():
            return {}
        data = self.manifest.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[:data.rfind(b"\n") + 1]
            with open(self.manifest, "r+b") as f:
                f.truncate(len(data))
        entries = {}
        for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
            try:
                entry = json.loads(line)
                entries[entry["file"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{self.manifest}:{number} is not a manifest entry; this folder was written by "
                                 "something else: choose another --out") from None
        return entries

    def _remove_leftovers(self, files):
        """Temporary files of a run killed while writing (``.<name>-<8 hex>.<ext>``, see ``temporary_file``)."""
        for path in self.out.iterdir():
            match = re.fullmatch(r"\.(.+)-[0-9a-f]{8}(\.[^.]+)", path.name)
            if match and match[1] + match[2] in files:
                path.unlink()

    def pending(self, jobs):
        """Jobs whose video is not there yet, and a ``PromptError`` for each one whose name holds another video."""
        todo, problems = [], []
        for job in jobs:
            entry = self.done.get(job.file)
            if entry is None:
                todo.append(job)
            elif _changes(entry, job.record()):
                problems.append(PromptError(job.where, f"{self.out / job.file} was made with "
                                                       f"{_changes(entry, job.record())}: write this set to another "
                                                       "--out, or delete that file"))
        return todo, problems

    def save(self, job, data, seconds, worker):
        """Write one video's ``data`` and its manifest entry."""
        write_files([self.out / job.file], lambda _, tmp: write_synced(tmp, data))
        entry = {"file": job.file, **job.record(), **self.info, "seconds": seconds, "worker": worker}
        with open(self.manifest, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[job.file] = entry


def write_synced(path, data):
    """``data`` in ``path``, on the disk before this returns (a killed run never leaves a short video)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _changes(entry, record):
    """What a manifest entry holds that differs from a job's record: ``"steps=50 (now 25)"``, or ""."""
    was = {**entry, **entry.get("settings", {})}
    now = {**record, **record["settings"]}
    return ", ".join(f"{key}={was.get(key)!r} (now {value!r})" for key, value in now.items()
                     if key != "settings" and was.get(key) != value)


def run_batch(jobs, writer, results):
    """Write each ``(file, result)`` of ``results(todo)`` as it comes, with a progress bar and ETA over the whole
    set. Returns a ``PromptError`` for each job not made (its error, or no result: a worker that kept crashing)."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    todo, problems = writer.pending(jobs)
    by_file = {job.file: job for job in todo}
    made = 0
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="video", file=sys.stderr, dynamic_ncols=True,
              disable=not todo) as bar, logging_redirect_tqdm():
        for file, result in results(todo) if todo else ():
            job = by_file.pop(file)
            if "error" in result:
                problems.append(PromptError(job.where, result["error"]))
            else:
                writer.save(job, result["data"], result["seconds"], result["worker"])
                made += 1
            bar.update()
    problems += [PromptError(job.where, f"{job.file} was not made: its worker failed (see the log above)")
                 for job in by_file.values()]
    log.info("%d videos in %s: %d made now, %d were there; manifest %s", len(writer.done), writer.out, made,
             len(jobs) - len(todo), writer.manifest)
    return problems
