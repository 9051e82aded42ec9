"""Writing frames to video files with the ffmpeg that ships inside ``imageio-ffmpeg``."""
import os
import secrets
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CODECS = {
    # H.264 in yuv420p with the index up front: plays in browsers, QuickTime and VLC.
    "mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "17", "-movflags", "+faststart+use_metadata_tags"],
    "webm": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "30", "-b:v", "0", "-row-mt", "1"],
    "gif": ["-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0"],
}
FORMATS = tuple(CODECS)


def with_crf(options, crf):
    """ffmpeg ``options`` with their ``-crf`` value replaced by ``crf`` (None: kept)."""
    if crf is None or "-crf" not in options:
        return options
    at = options.index("-crf") + 1
    return [*options[:at], str(crf), *options[at + 1:]]


def to_uint8(frames):
    """[F, H, W, 3] floats in 0..1 -> uint8, truncating as the original pipeline does."""
    frames = frames.detach().float().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    return (np.clip(frames, 0, 1) * 255).astype(np.uint8)


def temporary_file(folder, name, suffix):
    """A new hidden, empty file in ``folder`` to write ``name`` into before renaming it there.

    Created as ``open`` creates files, with the mode the umask gives (``tempfile.mkstemp`` makes them 0600, and a
    rename keeps the mode), so saved videos and frames are as readable as any other file the user writes.
    """
    while True:
        path = os.path.join(folder, f".{name}-{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue


def _ffmetadata(metadata):
    def escape(text):
        return "".join("\\" + c if c in "=;#\\\n" else c for c in str(text))

    return ";FFMETADATA1\n" + "".join(f"{escape(k)}={escape(v)}\n" for k, v in metadata.items())


def write_video(frames, path, fps=8, fmt=None, metadata=None, crf=None):
    """Encode [F, H, W, 3] frames (0..1 floats or uint8) to ``path``; the file appears whole or not at all.

    ``metadata``: container tags (mp4 and webm keep them; gif has none). ``crf``: the quality of mp4 (H.264, 0-51)
    and webm (VP9, 0-63), lower is better and bigger (default: 17 and 30; gif has none).
    """
    import imageio_ffmpeg

    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    if fmt not in CODECS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    frames = frames if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 else to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got shape {tuple(frames.shape)}")
    if fmt != "gif" and (frames.shape[1] % 2 or frames.shape[2] % 2):  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    _, height, width, _ = frames.shape
    tmp = temporary_file(path.parent, path.stem, f".{fmt}")
    meta_file = None
    try:
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if metadata:
            fd, meta_file = tempfile.mkstemp(suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_ffmetadata(metadata))
            cmd += ["-f", "ffmetadata", "-i", meta_file, "-map_metadata", "1"]
        cmd += ["-map", "0:v", *with_crf(CODECS[fmt], crf), "-f", fmt, tmp]
        result = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
        if result.returncode != 0:
            raise OSError(f"ffmpeg could not write {path.name}: {result.stderr.decode(errors='replace').strip()}")
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, meta_file):
            if leftover and os.path.exists(leftover):
                os.unlink(leftover)
    return path
