"""Named sentinels for states and phases: unique objects compared by identity, so no two
names can share a value by accident (as h11's states); cheaper to create than an ``Enum``."""

_ALL = {}  # type: dict[str, Sentinel]


class Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if name in _ALL:
            raise ValueError("a sentinel named %r exists already" % name)
        self.name = name
        _ALL[name] = self

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> "tuple[object, ...]":
        return (named, (self.name,))  # a copy is the one sentinel itself


def named(name: str) -> Sentinel:
    return _ALL[name]
