"""The tree users see: directories, image files, by-id links, their attributes and xattrs.

A plain class that knows nothing of FUSE (fuse_ops translates): it answers in
inode numbers, `Attr` records and ImageFSError subclasses carrying an errno.
Inodes are derived, not stored: fixed numbers for the directories, and
FIRST_IMAGE_INO + 2*seq (file) / +1 (by-id link) for an image, so an image
keeps its inode through every status and name it has.

Uploads in flight (queued, saving) appear in incoming/, where their writer
works, and in queued/ or saving/; every other image has exactly one path.
Live images (queued, saving, importing, active, deactivated) have unique
names; killed/ and pending_delete/ may hold several images of one name: the
oldest keeps the plain name and later ones show as "<name>~<first 8 of id>".
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from . import metadata
from .catalog import Catalog, Image
from .config import Config
from .crashpoints import crash_point
from .errors import (
    AccessDenied, Conflict, Forbidden, ImageFSError, Invalid, NoAttribute, NotFound, ReadOnlyMode, StoreUnavailable,
)
from .health import StoreHealth
from .lifecycle import DIRECTORIES, HAS_DATA, LIVE, UPLOADING, Status
from .staging import StagedUpload
from .store import BlobReader, BlobStore
from .uploads import Uploads

log = logging.getLogger(__name__)

ROOT_INO = 1
INCOMING_INO = 2
STATUS_INO = {status: 3 + i for i, status in enumerate(DIRECTORIES)}
BY_ID_INO = 3 + len(DIRECTORIES)
DIRS = {"incoming": INCOMING_INO, **{str(s): ino for s, ino in STATUS_INO.items()}, "by-id": BY_ID_INO}
DIR_STATUS = {ino: status for status, ino in STATUS_INO.items()}
FIRST_IMAGE_INO = 64
LINK_TIMEOUT = 1.0
BLKSIZE = 1 << 20  # large st_blksize: cp and friends size their buffers from it

# Reading data: mode bits shown per status (what the caller may do is checked in open()).
DATA_MODE = {
    Status.QUEUED: 0o644, Status.SAVING: 0o644, Status.IMPORTING: 0o444, Status.ACTIVE: 0o444,
    Status.DEACTIVATED: 0o400, Status.KILLED: 0o000, Status.PENDING_DELETE: 0o400,
}


def image_ino(seq: int) -> int:
    return FIRST_IMAGE_INO + 2 * seq


def link_ino(seq: int) -> int:
    return FIRST_IMAGE_INO + 2 * seq + 1


@dataclass(frozen=True)
class Caller:
    uid: int
    gid: int
    pid: int
    is_admin: bool

    @property
    def actor(self) -> str:
        return f"uid:{self.uid}"

    @property
    def project(self) -> str:
        """Until the access policy lands, each Unix user is its own project."""
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)


@dataclass(frozen=True)
class Attr:
    ino: int
    mode: int
    size: int
    nlink: int
    mtime_ns: int
    ctime_ns: int
    blocks: int  # 512-byte units
    timeout: float
    blksize: int = BLKSIZE


@dataclass
class Handle:
    seq: int
    upload: StagedUpload | None = None
    reader: BlobReader | None = None
    health: StoreHealth | None = None  # the store the reader reads
    writable: bool = False


class KernelCache:
    """What the tree tells the kernel to forget; fuse_ops supplies the real one."""

    def forget_attr(self, ino: int) -> None:
        pass

    def forget_entry(self, parent_ino: int, name: str) -> None:
        pass

    async def settle(self) -> None:
        """Wait until the invalidations asked for so far have reached the kernel."""


class ImageTree:
    def __init__(
        self, config: Config, catalog: Catalog, stores: BlobStore | dict[str, BlobStore], *, spawn: Callable,
        kernel: KernelCache | None = None,
    ):
        """`stores`: every configured store by name (or just the default one); new images go to
        the default, existing ones are read from the store their blob is in."""
        self.config = config
        self.catalog = catalog
        stores = {stores.name: stores} if isinstance(stores, BlobStore) else stores
        self.healths = {
            name: StoreHealth(store, catalog, config.stores[name], on_change=partial(self._store_changed, name))
            for name, store in stores.items()
        }
        self.health = self.healths[config.default_store]  # the default store's: it decides the mode
        self.store = self.health.store
        self.kernel = kernel or KernelCache()
        # spawn(async_fn, *args): a daemon task
        self.uploads = Uploads(config, catalog, self.healths, spawn)
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._allocated: dict[str, int] = {}
        self.started_ns = time.time_ns()  # the directories' times: when this mount began

    # --- start-up and the store's health --------------------------------------
    def recover_interrupted(self) -> list[Image]:
        return self.uploads.recover_interrupted()

    @property
    def mode(self) -> str:
        failure = self.health.failure
        return "read-write" if failure is None else f"read-only: {failure}"

    def _store_changed(self, name: str, failure: str | None) -> None:
        # Another store failing makes only its own data unreadable (EIO); new data goes to the default.
        if failure is not None and name == self.config.default_store:
            self.uploads.kill_in_flight(f"store unavailable: {failure}")

    def _data_of(self, image: Image) -> StoreHealth:
        """The store holding an image's data (with its health)."""
        health = self.healths.get(image.store)
        if health is None:
            raise StoreUnavailable(f"image {image.id}: its data is in store {image.store}, which is not configured")
        return health

    def _writable(self) -> None:
        """Every change is refused while the store is failing (SPEC §8): nothing half-done."""
        if self.health.failure is not None:
            raise ReadOnlyMode(f"read-only: {self.health.failure}")

    # --- names and attributes ------------------------------------------------
    def _image(self, seq: int) -> Image:
        image = self.catalog.image(seq)
        if image.status is Status.DELETED:
            raise NotFound(f"image {image.id} is deleted")
        return image

    def _listing(self, dir_ino: int) -> dict[str, Image]:
        """Display name -> image for one directory, oldest first."""
        if dir_ino == INCOMING_INO:
            return {i.name: i for i in self.catalog.images(UPLOADING)}
        status = DIR_STATUS[dir_ino]
        out: dict[str, Image] = {}
        for image in self.catalog.images([status]):
            name = image.name if image.name not in out else f"{image.name}~{image.id[:8]}"
            out[name] = image
        return out

    def _in_dir(self, dir_ino: int, name: str) -> Image:
        if dir_ino == INCOMING_INO or DIR_STATUS.get(dir_ino) in LIVE:
            image = self.catalog.live_image_named(name)
            if image is not None and (
                (dir_ino == INCOMING_INO and image.status in UPLOADING) or STATUS_INO.get(image.status) == dir_ino
            ):
                return image
            raise NotFound(name)
        if dir_ino in DIR_STATUS:
            try:
                return self._listing(dir_ino)[name]
            except KeyError:
                raise NotFound(name) from None
        raise NotFound(name)

    def display_name(self, image: Image) -> str:
        if image.status in LIVE:
            return image.name
        for name, other in self._listing(STATUS_INO[image.status]).items():
            if other.seq == image.seq:
                return name
        raise NotFound(image.id)

    def _dir_attr(self, ino: int) -> Attr:
        mode = 0o755 if ino in (ROOT_INO, INCOMING_INO) else 0o555
        return Attr(ino, stat.S_IFDIR | mode, 0, 2, self.started_ns, self.started_ns, 0, self.config.attr_timeout)

    def _image_attr(self, image: Image) -> Attr:
        upload = self.uploads.staged.get(image.seq)
        if image.status in UPLOADING:
            size = upload.size if upload else 0
            blocks = os.fstat(upload.fd).st_blocks if upload and upload.fd >= 0 else 0
            timeout = 0  # uploads change under the writer and leave incoming/ at finalize: never cached
        else:
            size = (image.size or 0) if image.status in HAS_DATA else 0
            blocks = self._blocks(image) if image.status in HAS_DATA else 0
            timeout = self.config.attr_timeout
        mode = stat.S_IFREG | DATA_MODE[image.status]
        return Attr(image_ino(image.seq), mode, size, 1, image.updated_ns, image.created_ns, blocks, timeout)

    def _blocks(self, image: Image) -> int:
        """Allocated 512-byte blocks of the blob: a sparse image shows its real use to du."""
        key = image.blob_key
        if key not in self._allocated:
            estimate = (image.size + 511) // 512
            try:
                health = self._data_of(image)
                if not health.store.local_reads:  # never wait for a share in a stat: asked in the background
                    self.uploads.spawn(self._fetch_allocated, health, key)
                    return estimate
                self._allocated[key] = health.store.allocated(key)
            except (ImageFSError, OSError):
                return estimate
        return self._allocated[key] // 512

    async def _fetch_allocated(self, health: StoreHealth, key: str) -> None:
        try:
            self._allocated[key] = await health.call(health.store.allocated, key)
        except (ImageFSError, OSError):
            pass

    def _link_attr(self, image: Image, display_name: str | None = None) -> Attr:
        target = self._link_target(image, display_name)
        return Attr(
            link_ino(image.seq), stat.S_IFLNK | 0o777, len(target), 1, image.updated_ns, image.created_ns, 0,
            LINK_TIMEOUT,
        )

    def _link_target(self, image: Image, display_name: str | None = None) -> str:
        return f"../{image.status}/{display_name or self.display_name(image)}"

    def _resolve(self, ino: int) -> tuple[Image, bool]:
        """Image inode -> (image, is_link)."""
        if ino < FIRST_IMAGE_INO:
            raise NotFound(f"inode {ino}")
        seq, is_link = divmod(ino - FIRST_IMAGE_INO, 2)
        return self._image(seq), bool(is_link)

    def getattr(self, ino: int) -> Attr:
        if ino == ROOT_INO or ino in DIRS.values():
            return self._dir_attr(ino)
        image, is_link = self._resolve(ino)
        return self._link_attr(image) if is_link else self._image_attr(image)

    async def lookup(self, parent: int, name: str, caller: Caller) -> Attr:
        await self.uploads.settle(name)
        if parent == ROOT_INO:
            if name in DIRS:
                return self._dir_attr(DIRS[name])
            raise NotFound(name)
        if parent == BY_ID_INO:
            try:
                return self._link_attr(self.catalog.image_by_id(name))
            except NotFound:
                raise NotFound(name) from None
        try:
            return self._image_attr(self._in_dir(parent, name))
        except NotFound:
            seq = self.uploads.delivered_to(name, caller.pid) if parent == INCOMING_INO else None
            if seq is None:
                raise
            return self._image_attr(self._image(seq))

    def readlink(self, ino: int) -> str:
        image, is_link = self._resolve(ino)
        if not is_link:
            raise Invalid("not a symlink")
        return self._link_target(image)

    async def readdir(self, ino: int) -> list[tuple[str, Attr]]:
        if ino == ROOT_INO:
            return [(name, self._dir_attr(d)) for name, d in DIRS.items()]
        await self.uploads.settle()
        if ino == BY_ID_INO:
            # Display names of killed/pending_delete images come from their directory's listing:
            # one listing per such directory, not one per image.
            images = self.catalog.images()
            shown = {other.seq: name for status in {i.status for i in images} - LIVE
                     for name, other in self._listing(STATUS_INO[status]).items()}
            return [(image.id, self._link_attr(image, shown.get(image.seq))) for image in images]
        if ino == INCOMING_INO or ino in DIR_STATUS:
            return [(name, self._image_attr(image)) for name, image in self._listing(ino).items()]
        raise ImageFSError("not a directory", err=20)  # ENOTDIR

    def statfs(self) -> os.statvfs_result:
        return os.statvfs(self.config.staging_path)

    # --- access --------------------------------------------------------------
    def _check_modify(self, image: Image, caller: Caller) -> None:
        """Glance's modify/delete default: admin, or the owner's project."""
        if not caller.is_admin and image.owner != caller.project:
            raise Forbidden(f"image {image.id} belongs to {image.owner}")

    # --- opening and data ----------------------------------------------------
    def _new_fh(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = handle
        return fh

    def create(self, parent: int, name: str, caller: Caller) -> tuple[int, Attr]:
        if parent != INCOMING_INO:
            raise AccessDenied("images are created in incoming/")
        self._writable()
        metadata.validate_name(name)
        image = self.catalog.create_image(name, owner=caller.project, actor=caller.actor)
        log.info("image %s (%s): created by %s", image.id, name, caller.actor)
        upload = self.uploads.staged_for(image)
        upload.add_writer(caller.pid)
        return self._new_fh(Handle(image.seq, upload=upload, writable=True)), self._image_attr(image)

    async def open(self, ino: int, flags: int, caller: Caller) -> tuple[int, bool]:
        """Returns (fh, keep_cache)."""
        image, is_link = self._resolve(ino)
        if is_link:
            raise ImageFSError("symlink", err=40)  # ELOOP
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if image.status in UPLOADING:
            if self.uploads.is_finalizing(image.seq):
                raise AccessDenied(f"image {image.id} is being finalized")
            if not writing:
                upload = self.uploads.staged.get(image.seq)
                return self._new_fh(Handle(image.seq, upload=upload)), False
            self._writable()
            self._check_modify(image, caller)
            upload = self.uploads.staged_for(image)
            upload.add_writer(caller.pid)
            if flags & os.O_TRUNC:
                await upload.truncate(0)
            return self._new_fh(Handle(image.seq, upload=upload, writable=True)), False
        if writing or flags & os.O_TRUNC:
            raise AccessDenied(f"{image.status} images are read-only")
        if image.status in (Status.DEACTIVATED, Status.PENDING_DELETE) and not caller.is_admin:
            raise AccessDenied(f"{image.status} image data is readable by admins only")
        if image.status not in HAS_DATA:
            return self._new_fh(Handle(image.seq)), False
        health = self._data_of(image)
        reader = await self._store_call(health, health.store.open_reader, image.blob_key)
        return self._new_fh(Handle(image.seq, reader=reader, health=health)), True

    @staticmethod
    async def _store_call(health: StoreHealth, fn, *args):
        """A read from a store. The host's own disk answers on the event loop (page cache);
        anything else in a worker thread with a time-out. Missing or unreadable data of an
        image that has data is EIO, and makes the probe look at the store at once."""
        try:
            if health.store.local_reads:
                return fn(*args)
            return await health.call(fn, *args)
        except (NotFound, OSError) as e:
            health.wake()
            raise StoreUnavailable(f"store {health.store.name}: {getattr(e, 'strerror', None) or e}") from None

    async def read(self, fh: int, offset: int, length: int) -> bytes:
        handle = self.handles[fh]
        if handle.reader is not None:
            return await self._store_call(handle.health, handle.reader.read, offset, length)
        if handle.upload is not None and handle.upload.fd >= 0:
            return handle.upload.read(offset, length)
        return b""

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handles[fh]
        if not handle.writable:
            raise ImageFSError("not open for writing", err=9)  # EBADF
        upload = handle.upload
        self._writable()
        # Asked of the catalog: the kernel sends writes in parallel, and `written` is only
        # set once the first of them holds the upload's lock.
        if not upload.written and not upload.abandoned and self._image(handle.seq).status is Status.QUEUED:
            self.catalog.change_status(handle.seq, Status.SAVING, actor="imagefs")
        try:
            return await upload.write(offset, data)
        except OSError as e:  # staging full (ENOSPC), over its quota (EDQUOT), failing (EIO)
            self.uploads.kill_upload(handle.seq, f"staging: {e.strerror or e}", error=e)
            raise

    async def fsync(self, fh: int) -> None:
        upload = self.handles[fh].upload
        if upload is not None:
            await upload.sync()

    def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle.reader is not None:
            handle.reader.close()
        if not handle.writable:
            return
        upload = handle.upload
        upload.writers -= 1
        if upload.writers == 0 and upload.written and not upload.abandoned:
            image = self._image(handle.seq)
            if not image.name.startswith(".") or upload.finalize_on_close:
                self.uploads.start_finalize(image, upload)

    async def drain(self) -> None:
        """Wait for every finalize under way (clean unmount)."""
        await self.uploads.settle()

    # --- changing the namespace ----------------------------------------------
    def setattr(self, ino: int, caller: Caller) -> Attr:
        """Only uploads change: truncate; mode, owner and times on them are accepted and ignored
        (cp -a and rsync set them; an image's mode follows its status)."""
        if ino < FIRST_IMAGE_INO:
            raise Forbidden("the directories are fixed")
        image, is_link = self._resolve(ino)
        if not is_link and self.uploads.delivered_to(image.name, caller.pid) == image.seq:
            # rsync --inplace's chmod/utimes by path after its close: accepted and ignored, as on uploads
            return self._image_attr(image)
        if is_link or image.status not in UPLOADING:
            raise Forbidden(f"{image.status} images cannot be changed")
        return self._image_attr(image)

    async def truncate(self, ino: int, size: int, caller: Caller) -> Attr:
        image, is_link = self._resolve(ino)
        if is_link or image.status not in UPLOADING or self.uploads.is_finalizing(image.seq):
            raise Forbidden(f"{image.status} images cannot be changed")
        self._writable()
        self._check_modify(image, caller)
        upload = self.uploads.staged_for(image)
        if size > 0 and not upload.written and image.status is Status.QUEUED:
            self.catalog.change_status(image.seq, Status.SAVING, actor="imagefs")
        await upload.truncate(size)
        return self._image_attr(self._image(image.seq))

    async def unlink(self, parent: int, name: str, caller: Caller) -> None:
        if parent == ROOT_INO:
            raise Forbidden("the directories are fixed")
        if parent == BY_ID_INO:
            raise AccessDenied("by-id/ is maintained by imagefs")
        await self.uploads.settle(name)
        image = self._in_dir(parent, name)
        self._writable()
        self._check_modify(image, caller)
        if image.status in UPLOADING:
            self.uploads.abandon(image, caller.actor)
            return
        if image.protected:
            raise Forbidden(f"image {image.id} is protected")
        blob = self.catalog.delete_image(image.seq, actor=caller.actor)
        crash_point("delete.committed")
        log.info("image %s (%s): deleted by %s", image.id, image.name, caller.actor)
        if blob is not None:
            self.uploads.free_blob(blob.key, blob.store)

    async def rename(self, parent_old: int, old: str, parent_new: int, new: str, caller: Caller) -> None:
        if {parent_old, parent_new} & {ROOT_INO, BY_ID_INO}:
            raise Forbidden("the directories and by-id/ are maintained by imagefs")
        await self.uploads.settle(old)
        image = self._in_dir(parent_old, old)
        self._writable()
        metadata.validate_name(new)
        if parent_old == parent_new == INCOMING_INO:
            self._rename_upload(image, new, caller)
            return
        source, target = DIR_STATUS.get(parent_old), DIR_STATUS.get(parent_new)
        moves = {
            (Status.ACTIVE, Status.ACTIVE), (Status.DEACTIVATED, Status.DEACTIVATED),
            (Status.ACTIVE, Status.DEACTIVATED), (Status.DEACTIVATED, Status.ACTIVE),
            (Status.PENDING_DELETE, Status.ACTIVE),
        }
        if (source, target) not in moves:
            raise Forbidden(f"images do not move from {source or 'here'} to {target or 'there'}")
        if source != target and not caller.is_admin:
            # Glance's code allows the owner's project too; until the access policy lands these are admin-only.
            raise Forbidden("deactivating, reactivating and restoring are for admins")
        self._check_modify(image, caller)
        crash_point("rename.before")
        if source != target:  # name and status in one transaction: a crash leaves the old pair or the new one
            renamed = {"name": new} if new != image.name else {}
            image = self.catalog.change_status(image.seq, target, actor=caller.actor, **renamed)
            log.info("image %s (%s): %s -> %s by %s", image.id, new, source, target, caller.actor)
        elif new != image.name:
            self._take_name(image, new)
        crash_point("rename.after")
        self.kernel.forget_attr(image_ino(image.seq))

    def _take_name(self, image: Image, new: str) -> Image:
        other = self.catalog.live_image_named(new)
        if other is not None and other.seq != image.seq:
            raise Conflict(f"{new!r} is taken by image {other.id} ({other.status})")
        return self.catalog.update_image(image.seq, name=new)

    def _rename_upload(self, image: Image, new: str, caller: Caller) -> None:
        self._check_modify(image, caller)
        self._take_name(image, new)
        upload = self.uploads.staged.get(image.seq)
        if upload is None or not upload.written or self.uploads.is_finalizing(image.seq):
            return
        if image.name.startswith(".") and not new.startswith("."):
            # rsync's delivery: the temp file takes its final name; finalize now or at its last close.
            if upload.writers:
                upload.finalize_on_close = True
            else:
                self.uploads.start_finalize(self._image(image.seq), upload)

    # --- metadata ------------------------------------------------------------
    def _imagefs_attrs(self, image: Image) -> dict[str, str | None]:
        stored = image.status in HAS_DATA
        return {
            "reason": image.reason,
            "stored_format": image.stored_format,
            "stores": image.store if stored else None,
            "locations": self._locations(image) if stored else None,
            "signature_verified": image.signature_verified,
        }

    def _locations(self, image: Image) -> str | None:
        health = self.healths.get(image.store)
        return health.store.url(image.blob_key) if health else None

    def _root_xattrs(self) -> dict[str, bytes]:
        return {
            "user.imagefs.mode": self.mode.encode(),
            "user.imagefs.pid": str(os.getpid()).encode(),
            "user.imagefs.data_dir": str(self.config.data_dir).encode(),
        }

    def xattrs(self, ino: int) -> dict[str, bytes]:
        if ino == ROOT_INO:
            return self._root_xattrs()
        if ino < FIRST_IMAGE_INO:
            return {}
        image, is_link = self._resolve(ino)
        if is_link:
            return {}
        return metadata.image_xattrs(
            image, self.catalog.properties(image.seq), self.catalog.tags(image.seq), self._imagefs_attrs(image)
        )

    def listxattr(self, ino: int) -> list[str]:
        attrs = self.xattrs(ino)
        if ino >= FIRST_IMAGE_INO and self._resolve(ino)[0].status in UPLOADING:
            return metadata.declared_names(attrs)
        return list(attrs)

    def getxattr(self, ino: int, name: str) -> bytes:
        try:
            return self.xattrs(ino)[name]
        except KeyError:
            raise NoAttribute(name) from None

    def setxattr(self, ino: int, name: str, value: bytes, caller: Caller) -> None:
        if ino < FIRST_IMAGE_INO:
            raise Forbidden("the directories carry no settable attributes")
        image, is_link = self._resolve(ino)
        if is_link:
            raise Forbidden("by-id links carry no attributes")
        if self.uploads.is_finalizing(image.seq):
            raise AccessDenied(f"image {image.id} is being finalized")
        self._writable()
        self._check_modify(image, caller)
        properties = self.catalog.properties(image.seq)
        key = name[len(metadata.IMAGE_PREFIX):]
        change = metadata.parse_set(
            name, value, image, is_admin=caller.is_admin, property_count=len(properties),
            has_property=key in properties, hash_algo=self.config.hash_algorithm,
        )
        self._apply(image, change)
        if change.kind == "property" and image.status in UPLOADING:
            self.uploads.property_declared(image, change.name, change.value)

    def removexattr(self, ino: int, name: str, caller: Caller) -> None:
        if ino < FIRST_IMAGE_INO:
            raise Forbidden("the directories carry no removable attributes")
        image, is_link = self._resolve(ino)
        if is_link:
            raise Forbidden("by-id links carry no attributes")
        self._writable()
        self._check_modify(image, caller)
        key = name[len(metadata.IMAGE_PREFIX):]
        change = metadata.parse_remove(name, image, has_property=key in self.catalog.properties(image.seq))
        self._apply(image, change)

    def _apply(self, image: Image, change: metadata.Change) -> None:
        if change.kind == "column" and change.name == "name":
            old_path = (STATUS_INO[image.status], self.display_name(image))
            self._take_name(image, change.value)
            self.kernel.forget_entry(*old_path)
            if image.status in UPLOADING:
                self.kernel.forget_entry(INCOMING_INO, image.name)
        elif change.kind == "column":
            self.catalog.update_image(image.seq, **{change.name: change.value})
        elif change.kind == "property":
            self.catalog.set_property(image.seq, change.name, change.value)
        elif change.kind == "delete_property":
            self.catalog.delete_property(image.seq, change.name)
        elif change.kind == "tags":
            self.catalog.set_tags(image.seq, change.value)
        self.kernel.forget_attr(image_ino(image.seq))
