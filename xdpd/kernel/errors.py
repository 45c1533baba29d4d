"""errno names as the kernel and its documentation spell them, and the
error the kernel-facing modules raise."""
import errno
import os


def errname(err: int) -> str:
    # Python names 95 ENOTSUP; the kernel says EOPNOTSUPP.
    if err == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(err, f"errno {err}")


class CallError(OSError):
    """A kernel call failed: errno is kept (None where no call failed but a
    check of the result did), and the message says what was tried on what
    and, where there is one, the way out."""

    def __init__(self, err: int | None, what: str, hint: str = ""):
        msg = f"{what} failed: {errname(err)} ({os.strerror(err)})" if err else what
        if hint:
            msg += f"; {hint}"
        super().__init__(err, msg)
        self.what = what

    def __str__(self) -> str:
        return self.strerror
