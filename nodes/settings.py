"""Number inputs read their default and range from t2v_core's settings table, as the command line does."""
from .. import t2v_core


def limits(name):
    """The ``default``, ``min`` and ``max`` of a number input for the setting ``name``."""
    setting = t2v_core.SETTINGS[name]
    return {"default": setting.default, "min": setting.low, "max": setting.high}
