"""Guest names as safe path components.

A guest file system is input, and may be hostile: an NTFS name can hold '/' or NUL, an
ext4 directory entry can be crafted to read '..' or to carry bytes that are not UTF-8.
Every name is escaped once, where it is read: '%', '/', '\\', NUL, control characters and
undecodable bytes become %XX, and the names '.' and '..' become '%2E' and '%2E%2E'. An
escaped name is therefore always one harmless component, the catalog stores it, and the
restore writes it as is; `unescape_name` gives the guest's name back for display.
"""

from __future__ import annotations

import re

_SAFE_SPECIAL = {"%", "/", "\\", "\x00"}


def escape_name(name: str) -> str:
    if name in (".", ".."):
        return "%2E" * len(name)
    if name == "":
        return "%00EMPTY"
    out = []
    for ch in name:
        code = ord(ch)
        if ch in _SAFE_SPECIAL or code < 0x20 or code == 0x7F:
            out.append(f"%{code:02X}")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"%{code - 0xDC00:02X}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone UTF-16 surrogate from NTFS
            out.append(f"%U{code:04X}")
        else:
            out.append(ch)
    return "".join(out)


def unescape_name(name: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def join_path(parts: tuple[str, ...] | list[str]) -> str:
    """'/a/b' from escaped components; '/' for the volume's root."""
    return "/" + "/".join(parts)


def split_path(path: str) -> tuple[str, ...]:
    """Escaped components of a catalog path; refuses anything that is not one."""
    parts = tuple(p for p in path.split("/") if p)
    for p in parts:
        if p in (".", "..") or "\x00" in p:
            raise ValueError(f"path component {p!r} is not allowed")
    return parts
