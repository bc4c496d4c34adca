"""The pyfuse3 adapter: translate FUSE calls to ImageTree calls and errors to errno.

Nothing is decided here. This and daemon.py are the only modules that import
pyfuse3; `_errors` is the only place an exception becomes an errno.
"""

from __future__ import annotations

import errno
import logging
import os
from contextlib import contextmanager

import pyfuse3
import trio

from .errors import ImageFSError
from .tree import Attr, Caller, ImageTree, KernelCache

log = logging.getLogger(__name__)

@contextmanager
def _errors():
    try:
        yield
    except pyfuse3.FUSEError:
        raise
    except ImageFSError as e:
        log.debug("%s: %s", type(e).__name__, e)
        raise pyfuse3.FUSEError(e.errno) from None
    except OSError as e:
        log.warning("I/O error: %s", e)
        raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
    except Exception:
        log.exception("internal error")
        raise pyfuse3.FUSEError(errno.EIO) from None


def _name(raw: bytes) -> str:
    try:
        return os.fsdecode(raw).encode("utf-8").decode("utf-8")
    except UnicodeError:
        raise pyfuse3.FUSEError(errno.ENOENT) from None


def _entry(attr: Attr) -> pyfuse3.EntryAttributes:
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attr.ino
    entry.st_mode = attr.mode
    entry.st_nlink = attr.nlink
    entry.st_uid = entry.st_gid = 0
    entry.st_size = attr.size
    entry.st_blocks = attr.blocks
    entry.st_blksize = attr.blksize
    entry.st_atime_ns = entry.st_mtime_ns = attr.mtime_ns
    entry.st_ctime_ns = attr.ctime_ns
    entry.entry_timeout = entry.attr_timeout = attr.timeout
    return entry


class PyfuseKernelCache(KernelCache):
    """Invalidations are sent from a worker thread: pyfuse3's calls block, and the
    kernel may wait on the very request we are still answering."""

    def __init__(self, spawn):
        self.spawn = spawn
        self._pending: set[trio.Event] = set()

    def forget_attr(self, ino: int) -> None:
        self._start(pyfuse3.invalidate_inode, ino, True)

    def forget_entry(self, parent_ino: int, name: str) -> None:
        self._start(pyfuse3.invalidate_entry, parent_ino, os.fsencode(name))

    def _start(self, fn, *args) -> None:
        done = trio.Event()
        self._pending.add(done)
        self.spawn(self._run, done, fn, *args)

    async def settle(self) -> None:
        """Wait for the invalidations started so far. A request that changed a name or attributes
        awaits this before it answers, so no process finds the old entry after the change
        returned (the loop keeps serving meanwhile: the kernel may need another request answered)."""
        for done in list(self._pending):
            await done.wait()

    async def _run(self, done: trio.Event, fn, *args):
        try:
            await trio.to_thread.run_sync(fn, *args)
        except OSError as e:  # ENOENT: the kernel had nothing cached
            if e.errno != errno.ENOENT:
                log.debug("invalidation %s%s failed: %s", fn.__name__, args, e)
        finally:
            self._pending.discard(done)
            done.set()


class FuseOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False  # it would reorder writes and defeat streaming hashes

    def __init__(self, tree: ImageTree):
        super().__init__()
        self.tree = tree
        self._dirs: dict[int, list] = {}
        self._next_dir = 1

    def _caller(self, ctx) -> Caller:
        return Caller(ctx.uid, ctx.gid, ctx.pid, ctx.uid in self.tree.config.admin_uids)

    async def lookup(self, parent_inode, name, ctx):
        with _errors():
            return _entry(await self.tree.lookup(parent_inode, _name(name), self._caller(ctx)))

    async def getattr(self, inode, ctx):
        with _errors():
            return _entry(self.tree.getattr(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        with _errors():
            caller = self._caller(ctx)
            if fields.update_size:
                return _entry(await self.tree.truncate(inode, attr.st_size, caller))
            return _entry(self.tree.setattr(inode, caller))

    async def readlink(self, inode, ctx):
        with _errors():
            return os.fsencode(self.tree.readlink(inode))

    async def opendir(self, inode, ctx):
        with _errors():
            # One snapshot per opendir, so offsets stay valid while the directory changes.
            entries = await self.tree.readdir(inode)
            fh = self._next_dir
            self._next_dir += 1
            self._dirs[fh] = entries
            return fh

    async def readdir(self, fh, start_id, token):
        entries = self._dirs[fh]
        for index in range(start_id, len(entries)):
            name, attr = entries[index]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), _entry(attr), index + 1):
                break

    async def releasedir(self, fh):
        self._dirs.pop(fh, None)

    async def open(self, inode, flags, ctx):
        with _errors():
            fh, keep_cache = await self.tree.open(inode, flags, self._caller(ctx))
            return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    async def create(self, parent_inode, name, mode, flags, ctx):
        with _errors():
            fh, attr = self.tree.create(parent_inode, _name(name), self._caller(ctx))
            return pyfuse3.FileInfo(fh=fh, keep_cache=False), _entry(attr)

    async def read(self, fh, off, size):
        with _errors():
            return await self.tree.read(fh, off, size)

    async def write(self, fh, off, buf):
        with _errors():
            return await self.tree.write(fh, off, buf)

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        with _errors():
            await self.tree.fsync(fh)

    async def release(self, fh):
        with _errors():
            self.tree.release(fh)

    async def unlink(self, parent_inode, name, ctx):
        with _errors():
            await self.tree.unlink(parent_inode, _name(name), self._caller(ctx))

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        with _errors():
            await self.tree.rename(
                parent_inode_old, _name(name_old), parent_inode_new, _name(name_new), self._caller(ctx)
            )

    async def mkdir(self, parent_inode, name, mode, ctx):
        raise pyfuse3.FUSEError(errno.EACCES)

    async def rmdir(self, parent_inode, name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise pyfuse3.FUSEError(errno.EACCES)

    async def symlink(self, parent_inode, name, target, ctx):
        raise pyfuse3.FUSEError(errno.EACCES)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def getxattr(self, inode, name, ctx):
        # Only user.* is kept. The kernel asks for security.capability before every write, and
        # ls -l for security.selinux and system.posix_acl_access of every file: EOPNOTSUPP (not
        # ENODATA) answers at once and lets ls stop asking for the rest of the mount. (The kernel
        # only stops sending getxattr altogether on ENOSYS.)
        if not name.startswith(b"user."):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        with _errors():
            return self.tree.getxattr(inode, os.fsdecode(name))

    async def listxattr(self, inode, ctx):
        with _errors():
            return [os.fsencode(n) for n in self.tree.listxattr(inode)]

    async def setxattr(self, inode, name, value, ctx):
        if not name.startswith(b"user."):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)  # ACLs, security labels: not kept
        with _errors():
            self.tree.setxattr(inode, os.fsdecode(name), value, self._caller(ctx))
            await self.tree.kernel.settle()

    async def removexattr(self, inode, name, ctx):
        if not name.startswith(b"user."):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        with _errors():
            self.tree.removexattr(inode, os.fsdecode(name), self._caller(ctx))
            await self.tree.kernel.settle()

    async def statfs(self, ctx):
        with _errors():
            st = self.tree.statfs()
            out = pyfuse3.StatvfsData()
            out.f_bsize, out.f_frsize = st.f_bsize, st.f_frsize
            out.f_blocks, out.f_bfree, out.f_bavail = st.f_blocks, st.f_bfree, st.f_bavail
            out.f_files, out.f_ffree, out.f_favail = st.f_files, st.f_ffree, st.f_favail
            out.f_namemax = 255
            return out

    async def access(self, inode, mode, ctx):
        return True
