"""The schema's scalar checks and its error collector.

Owns: one checker per kind of value (integers in a range, powers of two,
choices, netdev names, MACs, listen addresses) and _Errors, which words every
message as `FILE: YAML.PATH: what is wrong; what to do`.
Must not: know which section a value belongs to.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any

import yaml

from xdpd.config.model import MAC_EXAMPLE, MAX_NETDEV_NAME, ConfigError

# at most this many messages per file (a hostile file could make thousands)
MAX_ERRORS = 50


def _clip(text: str, limit: int = 40) -> str:
    """A piece of the file for a message: quoted, escaped, at most `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def _owned_refs(errs: _Errors, path: str, refs: tuple[int, ...], owned, dev: str) -> None:
    if owned is None:
        return                  # queues: all, channels unchanged: checked on the host
    for i, q in enumerate(refs):
        if q not in owned:
            errs.at(f"{path}[{i}]", f"queue {q} is not owned by {dev} (owned: {_queue_text(owned)}); "
                    "steer only to queues xdpd serves")


def _queue_text(owned) -> str:
    owned = list(owned)
    if len(owned) > 2 and owned == list(range(owned[0], owned[-1] + 1)):
        return f"{owned[0]}-{owned[-1]}"
    return ", ".join(map(str, owned))


# --- values -------------------------------------------------------------------
# Each checker returns the value, or None after recording why it is wrong.

def _check_keys(errs: _Errors, path: str, mapping: dict, allowed: tuple[str, ...]) -> set[str]:
    """Report unknown keys; return the keys suggested instead, so that the
    caller does not also call them missing."""
    suggested = set()
    for key in mapping:
        if isinstance(key, str) and key in allowed:
            continue
        # a key already present is no answer to "did you mean"
        unused = [k for k in allowed if k not in mapping]
        match = difflib.get_close_matches(key, unused, n=1) if isinstance(key, str) else []
        where = _join(path, _key(key))
        if match:
            errs.at(where, f"unknown key; did you mean '{match[0]}'?")
            suggested.add(match[0])
        else:
            errs.at(where, f"unknown key; allowed keys: {', '.join(allowed)}")
    return suggested


def _int(errs: _Errors, path: str, value: Any) -> int | None:
    # bool is a subclass of int in Python; `true` is not a number in a config
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    errs.at(path, f"expected an integer, got {_got(value)}")
    return None


def _int_in(errs: _Errors, path: str, value: Any, lowest: int, highest: int,
            hint: str = "") -> int | None:
    n = _int(errs, path, value)
    if n is not None and not lowest <= n <= highest:
        errs.at(path, f"{n} is out of range; use {lowest} to {highest}"
                + (f", {hint}" if hint else ""))
        return None
    return n


def _power_of_two(errs: _Errors, path: str, value: Any, lowest: int, highest: int) -> int | None:
    n = _int(errs, path, value)
    if n is None:
        return None
    if not lowest <= n <= highest:
        errs.at(path, f"{n} is out of range; use a power of two from {lowest} to {highest}")
        return None
    if n & (n - 1):
        below = 1 << (n.bit_length() - 1)
        errs.at(path, f"{n} is not a power of two; use {below} or {below * 2}")
        return None
    return n


def _bool(errs: _Errors, path: str, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    errs.at(path, f"expected true or false, got {_got(value)}")
    return None


def _choice(errs: _Errors, path: str, value: Any, allowed: tuple) -> Any:
    """One of a few words, or of a few numbers."""
    if isinstance(allowed[0], int):
        value = _int(errs, path, value)
        if value is None:
            return None
    elif not isinstance(value, str):
        errs.at(path, f"expected {_one_of(allowed)}, got {_got(value)}")
        return None
    if value in allowed:
        return value
    errs.at(path, f"{_show(value)} is not allowed; use {_one_of(allowed)}")
    return None


def _id_list(errs: _Errors, path: str, value: Any, keyword: str, noun: str,
             highest: int | None) -> str | tuple[int, ...] | None:
    """`keyword` or a non-empty list of distinct numbers >= 0 (queues, CPUs), in the order given."""
    if value == keyword:
        return keyword
    if isinstance(value, str):
        errs.at(path, f"{_show(value)} is not allowed; use '{keyword}' or a list of "
                      f"{noun} numbers, e.g. [0, 1]")
        return None
    if not isinstance(value, list):
        hint = f"; write [{value}]" if type(value) is int else ""
        errs.at(path, f"expected '{keyword}' or a list of {noun} numbers, got {_got(value)}{hint}")
        return None
    if not value:
        errs.at(path, f"empty list; use '{keyword}' or list at least one {noun}, e.g. [0]")
        return None
    first_index: dict[int, int] = {}
    ok = True
    for i, item in enumerate(value):
        n = _int(errs, f"{path}[{i}]", item)
        if n is None:
            ok = False
        elif n < 0 or highest is not None and n > highest:
            allowed = f"use 0 to {highest}" if highest is not None else f"{noun} numbers start at 0"
            errs.at(f"{path}[{i}]", f"{noun} {n} is out of range; {allowed}")
            ok = False
        elif n in first_index:
            errs.at(f"{path}[{i}]", f"{noun} {n} is listed twice (also {path}[{first_index[n]}]); "
                                    f"list each {noun} once")
            ok = False
        else:
            first_index[n] = i
    return tuple(first_index) if ok else None


def _netdev_name(errs: _Errors, path: str, value: Any) -> str | None:
    if not isinstance(value, str):
        errs.at(path, f"expected a netdev name, got {_got(value)}{_quote_hint(value)}")
        return None
    size = len(value.encode())
    if not value:
        errs.at(path, "empty name; give the netdev, e.g. 'eth0'")
    elif size > MAX_NETDEV_NAME:
        unit = "characters" if value.isascii() else "bytes in UTF-8"
        errs.at(path, f"{_show(value)} is {size} {unit} long; netdev names have at most "
                      f"{MAX_NETDEV_NAME}")
    elif value in (".", "..") or any(c in "/:" or c.isspace() for c in value):
        # the kernel's dev_valid_name() rules
        errs.at(path, f"{_show(value)} is not a valid netdev name; it cannot be '.' or '..' "
                      "or contain '/', ':' or whitespace")
    elif not value.isprintable():
        # the kernel would stop at a NUL, and the name goes into log lines and metric labels
        errs.at(path, f"{_show(value)} has a control character; a netdev name is printable text")
    else:
        return value
    return None


def _netdev_ref(errs: _Errors, path: str, value: Any, names: list[str] | None) -> str | None:
    """A reference to a listed interface; unchecked when the list itself is broken."""
    if not isinstance(value, str):
        errs.at(path, f"expected an interface name, got {_got(value)}{_quote_hint(value)}")
        return None
    if names is not None and value not in names:
        errs.at(path, f"{_show(value)} is not a configured interface; add it under 'interfaces' "
                      f"or use one of: {', '.join(names)}")
        return None
    return value


_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


def _mac(errs: _Errors, path: str, value: Any, source: bool = False) -> bytes | None:
    if not isinstance(value, str):
        errs.at(path, f"expected a MAC address such as '{MAC_EXAMPLE}', got {_got(value)}")
        return None
    if not _MAC.fullmatch(value):
        errs.at(path, f"{_show(value)} is not a MAC address; write six hex pairs, e.g. '{MAC_EXAMPLE}'")
        return None
    mac = bytes.fromhex(value.replace(":", ""))
    # IEEE 802.3: the I/G bit marks a group address, which no frame may carry as its source
    if source and mac[0] & 1:
        errs.at(path, f"{_show(value)} is a multicast address; a source MAC must be unicast "
                      "(first byte even)")
        return None
    return mac


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_LISTEN_EXAMPLE = "write HOST:PORT, e.g. '127.0.0.1:9464' or '[::1]:9464'"


def _listen(errs: _Errors, path: str, value: Any) -> tuple[str, int] | None:
    """HOST:PORT or [IPv6]:PORT; the caller treats null as 'no endpoint'."""
    if value is None:
        return None
    if not isinstance(value, str):
        errs.at(path, f"expected 'HOST:PORT' or null, got {_got(value)}; {_LISTEN_EXAMPLE}")
        return None
    shown = _show(value)
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            errs.at(path, f"{shown} has no closing ']'; {_LISTEN_EXAMPLE}")
            return None
        if not _is_ipv6(host):
            errs.at(path, f"{_show(host)} in {shown} is not an IPv6 address; {_LISTEN_EXAMPLE}")
            return None
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            errs.at(path, f"{shown} has {_show(rest)} after ']'; {_LISTEN_EXAMPLE}")
            return None
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            host, port_text = value, None
        elif ":" in host:
            errs.at(path, f"{shown} has an IPv6 address without brackets; write '[IPv6]:PORT', "
                          "e.g. '[::1]:9464'")
            return None
        if not host:
            example = port_text or "9464"
            errs.at(path, f"{shown} has no host; write '0.0.0.0:{example}' for every IPv4 address "
                          f"or '127.0.0.1:{example}' for this machine only")
            return None
        if not _is_host(host):
            errs.at(path, f"{_show(host)} in {shown} is not an IP address or host name; "
                          f"{_LISTEN_EXAMPLE}")
            return None
    if not port_text:
        errs.at(path, f"{shown} has no port; {_LISTEN_EXAMPLE}")
        return None
    if not (port_text.isascii() and port_text.isdigit()):
        errs.at(path, f"port {_show(port_text)} in {shown} is not a number; use 0 to 65535")
        return None
    port = int(port_text)
    if port > 65535:
        errs.at(path, f"port {port} in {shown} is out of range; use 0 to 65535")
        return None
    return host, port


def _is_ipv6(text: str) -> bool:
    if not text.isprintable() or any(c.isspace() for c in text):  # the %scope may be anything
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_host(text: str) -> bool:
    if all(part.isdigit() for part in text.split(".")):  # looks like IPv4: must be one
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME.fullmatch(text))


# --- message helpers ----------------------------------------------------------

class _Errors:
    """The messages found so far, each prefixed with the source file."""

    def __init__(self, source: str):
        self.source = _clip(source, 200) if len(source) > 200 else source
        self.lines: list[str] = []          # the first MAX_ERRORS of them
        self.found = 0

    def __len__(self) -> int:
        return self.found

    def at(self, path: str, message: str) -> None:
        self.line(f"{self.source}: {path}: {message}")

    def line(self, text: str) -> None:
        """A message that has no YAML path (the file as a whole, or a line:col)."""
        self.found += 1
        if len(self.lines) < MAX_ERRORS:
            self.lines.append(text)

    def raise_if_any(self) -> None:
        if self.lines:
            more = self.found - len(self.lines)
            raise ConfigError(self.lines + ([f"{self.source}: ... and {more} more errors; "
                                             "fix these first"] if more else []))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: Any) -> str:
    """A mapping key as a step of a YAML path: a plain word as it is, anything
    else quoted, so that a key cannot break the line or pass for a path."""
    if isinstance(key, str):
        return key if _PLAIN_KEY.fullmatch(key) and len(key) <= 40 else _clip(key)
    return _show(key)


def _one_of(allowed: tuple) -> str:
    words = [str(a) for a in allowed]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "float", str: "string",
               list: "list", dict: "mapping"}


def _got(value: Any) -> str:
    """What a value is, for 'expected X, got ...': `string '64x'`, `null`."""
    if value is None:
        return "null"
    return f"{_TYPE_NAMES.get(type(value), type(value).__name__)} {_show(value)}"


def _show(value: Any) -> str:
    """A value as the operator wrote it, more or less, in YAML notation."""
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
        if "\n" in text:      # a string with a line break: YAML folds it over lines
            text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return str(value)


def _quote_hint(value: Any) -> str:
    """YAML reads `name: 1234` as a number; netdev names may well look like one."""
    return "; write it in quotes" if isinstance(value, (int, float)) else ""
