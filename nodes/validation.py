"""Checks that run when a prompt is queued, so bad values come back as HTTP 400 with the input named."""


def check_choices(**inputs):
    """``name=(value, options)`` pairs -> True, or a message naming the first value that is not an option.

    ComfyUI 0.3.75 does not check V3 combo values itself.
    """
    for name, (value, options) in inputs.items():
        if value is not None and value not in options:
            shown = ", ".join(map(str, options[:20])) + (" ..." if len(options) > 20 else "")
            return f"{name}: {value!r} is not one of the options ({shown or 'none found'})"
    return True
