"""Every format module, imported once so that each registers its inspector. Add new formats here."""

from . import raw  # noqa: F401
from . import qcow2  # noqa: F401
