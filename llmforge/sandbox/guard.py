"""Runs first in every sandboxed interpreter: resource limits and the audit hook.

This file is not imported by the child: `llmforge.sandbox` sends its source ahead of the
script it guards, so it uses the standard library only and no `from __future__`.

The hook must keep working after the untrusted code has patched whatever it can reach.
So it is a closure that reads no global or builtin name when it runs (a test checks the
bytecode): every function and constant it needs is captured when `install` runs, and only
from immutable types (`str`, `tuple`, ...) or C functions held directly, never through a
module attribute or a mutable type such as `os.stat_result`. Nothing keeps a reference to
the hook but the interpreter, and the events that could reach it anyway (gc walks, trace
functions that write frame locals back) are refused.
"""

import posix
import resource
import sys

# Modules whose import would lift the hook: ctypes (raw memory and syscalls), the
# fork+exec primitive behind subprocess (it raises no audit event of its own),
# sub-interpreters (which start without our hook) and CPython's test helpers.
BLOCKED_MODULES = frozenset(
    {
        "ctypes",
        "_ctypes",
        "_posixsubprocess",
        "subprocess",
        "multiprocessing",
        "_multiprocessing",
        "_xxsubinterpreters",
        "_xxinterpchannels",
        "_testcapi",
        "_testinternalcapi",
        "_testbuffer",
        "_testmultiphase",
        "_testsinglephase",
        "_testimportmultiple",
        "_xxtestfuzz",
    }
)
PATH_EVENTS = frozenset(
    {
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.chflags",
        "os.lchflags",
        "os.truncate",
        "os.symlink",
        "os.link",
        "os.utime",
        "os.setxattr",
        "os.removexattr",
        "shutil.rmtree",
        "shutil.move",
        "shutil.copyfile",
        "shutil.copytree",
        "shutil.chown",
    }
)
DENIED_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "os.kill",
        "os.killpg",
        "signal.pthread_kill",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys.settrace",
        "sys.setprofile",
        "sys._current_frames",
        "sys._current_exceptions",
    }
)
LIST_EVENTS = frozenset({"os.listdir", "os.scandir"})
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


def install(
    work: str, read_roots: tuple, hidden: tuple, cpu_s: int, memory_b: int, fsize_b: int
) -> None:
    """Set the hard resource limits and add the audit hook; both stay for the process.

    The child may read `work` and everything under `read_roots` except under `hidden`.
    """
    for limit, value in (
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_AS, memory_b),
        (resource.RLIMIT_FSIZE, fsize_b),
    ):
        resource.setrlimit(limit, (value, value))  # soft == hard: cannot be raised again
    sys.dont_write_bytecode = True
    own_proc = "/proc/" + str(posix.getpid())
    sys.addaudithook(make_hook(work, (work, own_proc, *read_roots), tuple(hidden)))


def make_hook(work: str, readable: tuple, hidden: tuple):  # noqa: C901 (one closure, see above)
    """The audit hook: writes only inside `work`, reads only under `readable` and not under
    `hidden`, no processes, no network, no imports that lift the hook."""
    lstat, readlink, getcwd = posix.lstat, posix.readlink, posix.getcwd
    field = tuple.__getitem__  # st_mode without touching the patchable os.stat_result type
    str_t, bytes_t, int_t, tuple_t, none_t, type_of = str, bytes, int, tuple, type(None), type
    oserror, denied = OSError, PermissionError
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_APPEND | posix.O_CREAT | posix.O_TRUNC
    fmt, link, regular, directory = 0o170000, 0o120000, 0o100000, 0o040000
    blocked, path_events, denied_events = BLOCKED_MODULES, PATH_EVENTS, DENIED_EVENTS
    list_events, devices, writable = LIST_EVENTS, DEVICES, (work,)

    def mode_of(path):
        try:
            return field(lstat(path), 0)
        except oserror:
            return 0

    def resolve(path):
        """The absolute path with every symlink followed (missing parts kept as written)."""
        if type_of(path) is bytes_t:
            path = path.decode("utf-8", "surrogateescape")
        if type_of(path) is not str_t:
            raise denied("sandbox: paths must be str or bytes")
        pending = (path if path.startswith("/") else getcwd() + "/" + path).split("/")
        pending.reverse()
        parts, hops = [], 0
        while pending:
            part = pending.pop()
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            here = "/" + "/".join([*parts, part])
            if mode_of(here) & fmt == link:
                hops += 1
                if hops > 40:
                    raise denied("sandbox: too many symbolic links")
                target = readlink(here).split("/")
                if target[0] == "":
                    parts = []
                target.reverse()
                pending += target
            else:
                parts.append(part)
        return "/" + "/".join(parts)

    def under(path, roots):
        for root in roots:
            if path == root or path.startswith(root + "/"):
                return True
        return False

    def may_write(path):
        return under(path, writable)

    def may_read(path):
        return under(path, readable) and not under(path, hidden)

    def check_open(path, mode, flags):
        if type_of(path) is int_t:
            return
        real = resolve(path)
        if real in devices:
            return
        writing = (flags or 0) & write_flags or (
            type_of(mode) is str_t and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
        )
        kind = mode_of(real) & fmt
        if kind == directory:  # a directory fd would let dir_fd= paths dodge the checks
            raise denied("sandbox: opening a directory is not allowed")
        if writing and (not under(real, writable) or kind not in (0, regular)):
            raise denied(f"sandbox: writing outside the work directory: {real}")
        if not writing and not may_read(real):
            raise denied(f"sandbox: reading outside the sandbox's files: {real}")

    def check_paths(event, args, allowed):
        for arg in args[:2]:  # the path(s); later arguments are modes, times or dir fds
            kind = type_of(arg)
            if kind is str_t or kind is bytes_t:
                if not allowed(resolve(arg)):
                    raise denied(f"sandbox: {event} outside the work directory")
            elif kind is not int_t and kind is not none_t and kind is not tuple_t:
                raise denied("sandbox: paths must be str or bytes")

    def hook(event, args):
        if event == "open":
            check_open(args[0], args[1], args[2])
        elif event in path_events:
            check_paths(event, args, may_write)
        elif event in list_events:
            check_paths(event, args, may_read)
        elif event in denied_events:
            raise denied(f"sandbox: {event} is not allowed")
        elif event == "import":
            if type_of(args[0]) is not str_t:
                raise denied("sandbox: module names must be str")
            for part in args[0].split("."):
                if part in blocked:
                    raise denied(f"sandbox: importing {args[0]} is not allowed")
        elif event.startswith("socket.") and event != "socket.gethostname":
            raise denied("sandbox: network access is disabled")

    return hook
