"""Every format module, imported once so that each registers its inspector. Add new formats here."""

from . import raw  # noqa: F401
from . import qcow2  # noqa: F401
from . import vhd  # noqa: F401
from . import vhdx  # noqa: F401
from . import vdi  # noqa: F401
from . import luks  # noqa: F401
from . import gpt  # noqa: F401
from . import ploop  # noqa: F401
from . import vmdk  # noqa: F401
from . import iso  # noqa: F401
from . import containers  # noqa: F401
