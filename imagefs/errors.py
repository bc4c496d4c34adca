"""Exceptions that carry their meaning: an errno for the mount, an exit code for the CLI.

One place (fuse_ops) turns ImageFSError into FUSEError; one place (cli) turns
it into a message and an exit code. Nothing else maps errors.
"""

from __future__ import annotations

import errno


class ImageFSError(Exception):
    """Base class; `errno` is what the mount answers, `exit_code` what the CLI returns."""

    errno = errno.EIO
    exit_code = 1

    def __init__(self, message: str, *, err: int | None = None):
        super().__init__(message)
        if err is not None:
            self.errno = err


class ConfigError(ImageFSError):
    exit_code = 2


class NotFound(ImageFSError):
    errno = errno.ENOENT


class NoAttribute(ImageFSError):
    errno = errno.ENODATA


class Invalid(ImageFSError):
    """A value Glance's schema would refuse: EINVAL, nothing changed."""

    errno = errno.EINVAL


class ReadOnlyField(ImageFSError):
    errno = errno.EPERM


class Forbidden(ImageFSError):
    errno = errno.EPERM


class AccessDenied(ImageFSError):
    errno = errno.EACCES


class Conflict(ImageFSError):
    """Name already taken by a live image."""

    errno = errno.EEXIST


class InvalidTransition(ImageFSError):
    errno = errno.EPERM


class UploadRejected(ImageFSError):
    """A finalize step refused the data; the image goes to killed with this reason."""


class StoreUnavailable(ImageFSError):
    """A store is not really there (unmounted, marker missing, I/O error, hung): EIO for its data."""


class ReadOnlyMode(ImageFSError):
    """The library is read-only because its store failed (root xattr user.imagefs.mode says why)."""

    errno = errno.EROFS


class MountError(ImageFSError):
    exit_code = 3
