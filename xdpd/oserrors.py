"""errno names as the kernel and its documentation spell them."""
import errno


def errname(err: int) -> str:
    # Python names 95 ENOTSUP; the kernel says EOPNOTSUPP.
    if err == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(err, f"errno {err}")
