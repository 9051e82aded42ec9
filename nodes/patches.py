"""ComfyUI's UNet patches (``transformer_options["patches"]``, set by FreeU, FreeU_V2 and other MODEL patch
nodes) as t2v_core block patches. A patch the UNet cannot apply is named in one warning, never dropped silently."""
import logging

from .. import t2v_core

APPLIED = ("input_block_patch", "output_block_patch")
log = logging.getLogger(__name__)
_warned = set()


def block_patches(transformer_options):
    """t2v_core.BlockPatches running the core patches in ``transformer_options``, or None when there are none.

    Core calls ``input_block_patch(h, transformer_options)`` and ``output_block_patch(h, hsp, transformer_options)``
    with ``transformer_options["block"]`` naming the block; so do these.
    """
    patches = transformer_options.get("patches", {})
    warn_unapplied(patches, transformer_options.get("patches_replace", {}))
    if not any(patches.get(name) for name in APPLIED):
        return None

    def run_input(patch):
        def apply(h, index):
            transformer_options["block"] = ("input", index)
            return patch(h, transformer_options)
        return apply

    def run_output(patch):
        def apply(h, skip, index):
            transformer_options["block"] = ("output", index)
            return patch(h, skip, transformer_options)
        return apply

    return t2v_core.BlockPatches(input_block=tuple(run_input(p) for p in patches.get("input_block_patch", [])),
                                 output_block=tuple(run_output(p) for p in patches.get("output_block_patch", [])))


def warn_unapplied(patches, replacements):
    """One warning per kind of patch this UNet has no place for (attention patches and replacements, ...)."""
    names = [name for name, value in patches.items() if value and name not in APPLIED]
    names += [f"{name} replacement" for name, value in replacements.items() if value]
    new = [name for name in names if name not in _warned]
    if new:
        _warned.update(new)
        log.warning("ModelScope T2V: the MODEL carries UNet patches this model cannot apply: %s. They are ignored; "
                    "this UNet applies input_block_patch and output_block_patch (FreeU, FreeU_V2).", ", ".join(new))
