"""Include/exclude patterns over guest paths: '[VOLUME:]PATH', shell-style.

PATH is matched against the escaped path ('/etc/hostname'); '*' also crosses '/'. A
pattern naming a directory takes everything under it. VOLUME (for instance 'd0p1') is
matched against the volume's name; without it every volume is searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Pattern:
    volume: str
    path: str

    @classmethod
    def parse(cls, text: str) -> Pattern:
        vol, sep, path = text.partition(":")
        if not sep or "/" in vol:
            vol, path = "*", text
        body = path.strip("/")
        if not body:
            path = "/"
        elif body[0] in "*?[" and not path.startswith("/"):
            path = body.rstrip("/")  # '*.log' matches at any depth
        else:
            path = "/" + body
        return cls(vol or "*", path)

    def _literal(self) -> str:
        m = _GLOB.search(self.path)
        return self.path if m is None else self.path[:m.start()]

    def matches(self, volume: str, path: str) -> bool:
        if not fnmatchcase(volume, self.volume):
            return False
        if self.path == "/":
            return True
        return fnmatchcase(path, self.path) or fnmatchcase(path, self.path + "/*")

    def may_contain(self, volume: str, dirpath: str) -> bool:
        """Could anything under directory `dirpath` match? (prunes walks)"""
        if not fnmatchcase(volume, self.volume):
            return False
        if self.matches(volume, dirpath):
            return True
        lit = self._literal()
        d = dirpath.rstrip("/") + "/"
        return lit.startswith(d) or d.startswith(lit)


def parse_all(texts: list[str] | None) -> list[Pattern]:
    return [Pattern.parse(t) for t in texts or []]


class Selection:
    """Which objects of a volume a backup or restore takes."""

    def __init__(self, include: list[str] | None, exclude: list[str] | None = None) -> None:
        self.include = parse_all(include) or [Pattern("*", "/")]
        self.exclude = parse_all(exclude)

    def wants_volume(self, volume: str) -> bool:
        return any(fnmatchcase(volume, p.volume) for p in self.include)

    def __call__(self, volume: str, path: str, is_dir: bool) -> bool:
        if any(p.matches(volume, path) for p in self.exclude):
            return False
        if is_dir:
            return any(p.may_contain(volume, path) for p in self.include)
        return any(p.matches(volume, path) for p in self.include)

    def takes(self, volume: str, path: str) -> bool:
        """Is this object itself selected (directories too)?"""
        return (not any(p.matches(volume, path) for p in self.exclude)
                and any(p.matches(volume, path) for p in self.include))
