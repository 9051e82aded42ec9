"""Save video node: mp4 / webm / gif / PNG frames in the output folder, previewed on the canvas."""
import json
import os

import folder_paths
from comfy_api.latest import io, ui
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .. import t2v_core
from .loader import CATEGORY
from .validation import require_choices

FORMATS = ["mp4", "webm", "gif", "png"]
AUTO_CRF = -1


def check_prefix(filename_prefix):
    """Refuse prefixes that would write outside the output folder."""
    if "\0" in filename_prefix:
        raise ValueError(f"filename_prefix: {filename_prefix!r} holds a NUL character (\\x00), which no file name may "
                         f"hold; remove it")
    parts = filename_prefix.replace("\\", "/").split("/")
    if os.path.isabs(filename_prefix) or ".." in parts or not filename_prefix.strip():
        raise ValueError(f"filename_prefix: {filename_prefix!r} must be a name inside the output folder "
                         f"(subfolders allowed, no '..' and no absolute path)")


def save_png_frames(frames, folder, stem, metadata):
    """One PNG per frame with prompt/workflow in text chunks. All are written under temporary names first and
    renamed only when every frame is written, so a failure leaves no frames behind."""
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    names = [f"{stem}{i + 1:05}.png" for i in range(len(frames))]
    temporary = []
    try:
        for name, frame in zip(names, frames):
            tmp = t2v_core.temporary_file(folder, name, ".png")
            temporary.append(tmp)
            Image.fromarray(frame).save(tmp, pnginfo=info, compress_level=4)
        for name, tmp in zip(names, temporary):
            os.replace(tmp, os.path.join(folder, name))
    finally:
        for tmp in temporary:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return names


class SaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VSaveVideo",
            display_name="ModelScope Text-to-Video Save Video",
            category=CATEGORY,
            description="Writes the frames as a video in the output folder and previews it on the node.",
            inputs=[
                io.Image.Input("images", tooltip="The frames, in order (from ModelScope T2V VAE Decode)."),
                io.Int.Input("fps", default=8, min=1, max=120, tooltip="Frames per second; the model was made for 8."),
                io.String.Input("filename_prefix", default="ModelScopeT2V/video",
                                tooltip="File name start inside the output folder; may contain subfolders and "
                                        "%date% style variables. A counter is appended."),
                io.Combo.Input("format", options=FORMATS, default="mp4",
                               tooltip="mp4: H.264 yuv420p, plays everywhere. webm: VP9. gif: no metadata. "
                                       "png: one image per frame."),
                io.Int.Input("crf", default=AUTO_CRF, min=AUTO_CRF, max=51, optional=True,
                             tooltip="Quality of mp4 (H.264) and webm (VP9), as core Save Video's crf: 0 is the best "
                                     "and biggest, 51 the smallest. -1: the format's default (mp4 17, webm 30). gif "
                                     "and png ignore it."),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix):
        try:
            check_prefix(filename_prefix)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, images, fps, filename_prefix, format, crf=AUTO_CRF) -> io.NodeOutput:
        check_prefix(filename_prefix)
        require_choices(format=(format, FORMATS))
        frames = t2v_core.to_uint8(images[..., :3])
        height, width = frames.shape[1:3]
        output_dir = folder_paths.get_output_directory()
        try:
            folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir, width, height)
            return cls.save(frames, folder, f"{stem}_{counter:05}_", subfolder, fps, format, crf)
        except OSError as e:
            where = os.path.join(output_dir, os.path.dirname(filename_prefix))
            raise OSError(f"filename_prefix: could not write the {format} into {where} ({e.strerror or e}); "
                          f"nothing was saved. Check that the output folder is writable and has free space.") from e

    @classmethod
    def save(cls, frames, folder, name, subfolder, fps, format, crf):
        os.makedirs(folder, exist_ok=True)
        metadata = {}
        if cls.hidden.prompt is not None:
            metadata["prompt"] = json.dumps(cls.hidden.prompt)
        for key, value in (cls.hidden.extra_pnginfo or {}).items():
            metadata[key] = json.dumps(value)
        if format == "png":
            files = save_png_frames(frames, folder, name, metadata)
            results = [ui.SavedResult(f, subfolder, io.FolderType.output) for f in files]
            return io.NodeOutput(ui=ui.SavedImages(results))
        t2v_core.write_video(frames, os.path.join(folder, f"{name}.{format}"), fps=fps, fmt=format, metadata=metadata,
                             crf=None if crf == AUTO_CRF else crf)
        return io.NodeOutput(ui=ui.PreviewVideo([ui.SavedResult(f"{name}.{format}", subfolder, io.FolderType.output)]))
