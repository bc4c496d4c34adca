"""raw: every stream is raw data; its virtual size is its length."""

from . import register
from .base import Inspector


@register
class RawInspector(Inspector):
    name = "raw"

    def matches(self) -> bool:
        return True
