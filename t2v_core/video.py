"""Writing frames to video files with the ffmpeg that ships inside ``imageio-ffmpeg``."""
import os
import tempfile
from pathlib import Path

import numpy as np

FORMATS = {
    # H.264 in yuv420p with the index up front: plays in browsers, QuickTime and VLC.
    "mp4": dict(codec="libx264", pixelformat="yuv420p", output_params=["-crf", "17", "-movflags", "+faststart"]),
    "webm": dict(codec="libvpx-vp9", pixelformat="yuv420p", output_params=["-crf", "30", "-b:v", "0"]),
}


def to_uint8(frames):
    """[F, H, W, 3] floats in 0..1 -> uint8, truncating as the original pipeline does."""
    frames = frames.detach().float().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    return (np.clip(frames, 0, 1) * 255).astype(np.uint8)


def write_video(frames, path, fps=8, fmt=None, metadata=None):
    """Encode [F, H, W, 3] frames (0..1 floats or uint8) to ``path``; the file appears whole or not at all."""
    import imageio_ffmpeg

    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"unknown video format {fmt!r}; expected one of {', '.join(FORMATS)}")
    frames = frames if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 else to_uint8(frames)
    count, height, width, _ = frames.shape
    if height % 2 or width % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    params = list(FORMATS[fmt]["output_params"])
    for key, value in (metadata or {}).items():
        params += ["-metadata", f"{key}={value}"]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=f".{fmt}")
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(
            tmp, (frames.shape[2], frames.shape[1]), fps=fps, codec=FORMATS[fmt]["codec"], quality=None,
            pix_fmt_out=FORMATS[fmt]["pixelformat"], output_params=params, macro_block_size=1, ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
