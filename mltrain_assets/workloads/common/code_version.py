"""A workload's code version, derived from the source it runs: no hand-bumped constant to forget.

``derive(module)`` hashes

- the module tree: the entry module and every first-party module it imports, transitively
  (static ``ast`` analysis, relative imports resolved, parent packages included since importing a
  module runs their ``__init__``; nothing is imported or executed). First-party is the entry's own
  top-level package and ``mltrain_assets`` (a plugin runs the framework's writer, readers, runtime);
  imports under ``if TYPE_CHECKING:`` do not run and do not count;
- each module as its normalised syntax tree (``ast.dump`` without docstrings, line numbers or
  comments): a changed function body, constant or signature is a new version; a comment, a
  docstring or reformatting is not;
- the pins of the third-party distributions those modules import (directly, not their own
  dependencies): from ``requirements.runtime.lock`` beside the package (a checkout), else (an
  installed image, where the Dockerfile installs the lock and removes it) the installed versions.
  Both drop a local version suffix (``2.13.0+cpu`` is ``2.13.0``), so a checkout and an image
  installed from the same lock derive the same version.

Dagster-free and cached per process: the control plane derives every workload's version when it
loads its definitions, a workload its own when it writes its manifest.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FRAMEWORK = "mltrain_assets"
LOCK_FILE = "requirements.runtime.lock"
PREFIX = "src-"  # a derived version reads as one; an explicit override is whatever its author wrote
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


@dataclass(frozen=True)
class Derivation:
    """What a derived code version hashes: its module tree, its pins, and where the pins came from."""

    module: str
    version: str
    modules: tuple[str, ...]
    pins: tuple[tuple[str, str], ...]  # (distribution, version), sorted
    pins_from: str  # the lock file's name, or "installed"

    def describe(self) -> str:
        return f"derived ({self.version}: {len(self.modules)} modules, {len(self.pins)} pins from {self.pins_from})"


@functools.cache
def derived_code_version(module: str) -> str:
    """The code version of the workload whose entry point is ``module``, as this process finds its source."""
    return derive(module).version


@functools.cache
def derive(module: str, path: tuple[str, ...] | None = None, lock: Path | None = None) -> Derivation:
    """Derive ``module``'s code version; ``path``: where to find its packages (default ``sys.path``),
    ``lock``: the lock file to read pins from (default: ``requirements.runtime.lock`` beside the package)."""
    search = list(path) if path is not None else None
    tree = _ModuleTree(search, roots={module.partition(".")[0], FRAMEWORK})
    tree.walk(module)
    if lock is None:
        lock = _lock_beside(module.partition(".")[0], search)
    pins_from, pinned = ("installed", {}) if lock is None else (lock.name, _read_lock(lock))
    pins = tuple(sorted({dist: pinned.get(dist) or _installed(dist) for dist in tree.distributions()}.items()))
    digest = hashlib.sha256()
    for name in sorted(tree.sources):
        digest.update(f"module {name}\n{tree.sources[name]}\n".encode())
    for dist, version in pins:
        digest.update(f"pin {dist}=={version}\n".encode())
    return Derivation(module, PREFIX + digest.hexdigest()[:16], tuple(sorted(tree.sources)), pins, pins_from)


class _ModuleTree:
    """The first-party modules reachable from an entry module, each as its normalised tree, and the
    top-level names of the third-party modules they import."""

    def __init__(self, path: list[str] | None, roots: set[str]):
        self.path, self.roots = path, roots
        self.sources: dict[str, str] = {}
        self.third_party: set[str] = set()
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}
        self._lazy: dict[str, dict[str, str]] = {}

    def walk(self, module: str) -> None:
        pending = [module]
        while pending:
            name = pending.pop()
            if name in self.sources:
                continue
            spec = self._spec(name)
            if spec is None:
                raise ModuleNotFoundError(f"code version of {module}: cannot find the source of {name}")
            is_package = spec.submodule_search_locations is not None
            parsed = _parse(spec)
            self.sources[name] = parsed.normalised if parsed is not None else ""
            pending.extend(_parents(name))
            if parsed is not None:
                package = name if is_package else name.rpartition(".")[0]
                pending.extend(self._imported(parsed.imports, package))

    def distributions(self) -> set[str]:
        """The distributions (normalised names) that provide the third-party modules imported."""
        return {_normalise(dist) for top in sorted(self.third_party) for dist in _providers(top)}

    def _imported(self, imports: tuple[tuple[str, tuple[str, ...]], ...], package: str) -> Iterator[str]:
        """First-party modules among ``imports`` (recording third-party top-level names on the way)."""
        for base, names in imports:
            resolved = _resolve(base, package)
            top = resolved.partition(".")[0]
            if top not in self.roots:
                if top and top not in sys.stdlib_module_names and top != "__future__":
                    self.third_party.add(top)
                continue
            if self._spec(resolved) is None:
                continue
            yield resolved
            for name in names:  # `from pkg import name`: a submodule, a lazy export (PEP 562) or an attribute
                if self._spec(f"{resolved}.{name}") is not None:
                    yield f"{resolved}.{name}"
                elif name in self._exports(resolved):
                    yield self._exports(resolved)[name]

    def _exports(self, name: str) -> dict[str, str]:
        """A lazy module's ``_EXPORTS`` (name -> the module it is imported from on first use; ``mltrain_assets.sdk``)."""
        if name not in self._lazy:
            spec = self._spec(name)
            parsed = _parse(spec) if spec is not None else None
            self._lazy[name] = dict(parsed.exports) if parsed is not None else {}
        return self._lazy[name]

    def _spec(self, name: str) -> importlib.machinery.ModuleSpec | None:
        """Where ``name``'s source is, found level by level from the search path: no package is imported."""
        if name not in self._specs:
            parent, _, _ = name.rpartition(".")
            if parent:
                outer = self._spec(parent)
                locations = list(outer.submodule_search_locations or []) if outer is not None else []
                found = importlib.machinery.PathFinder.find_spec(name, locations) if locations else None
            else:
                found = _top_level_spec(name, self.path)
            self._specs[name] = found
        return self._specs[name]


def _top_level_spec(name: str, path: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    """A top-level package's spec: from ``path``, else as Python would import it (an editable install's
    finder included); finding a top-level name imports nothing."""
    if path is not None:
        return importlib.machinery.PathFinder.find_spec(name, path)
    return importlib.util.find_spec(name)


def _resolve(name: str, package: str) -> str:
    level = len(name) - len(name.lstrip("."))
    if not level:
        return name
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    rest = name[level:]
    return f"{base}.{rest}" if rest else base


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@dataclass(frozen=True)
class _Parsed:
    normalised: str  # ast.dump of the module without docstrings: no comments, formatting or line numbers
    imports: tuple[tuple[str, tuple[str, ...]], ...]  # (module, names imported from it), relative as written
    exports: tuple[tuple[str, str], ...] = ()  # a lazy module's `_EXPORTS = {"name": "module:attribute"}`


def _parse(spec: importlib.machinery.ModuleSpec) -> _Parsed | None:
    """The module's normalised tree and its imports; None for a namespace package (no source of its own)."""
    if not spec.origin or not spec.has_location or not spec.origin.endswith(".py"):
        return None
    stat = Path(spec.origin).stat()
    return _parse_file(spec.origin, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parse_file(origin: str, mtime_ns: int, size: int) -> _Parsed:
    """Parsed once per process per file content (mtime and size name it): workloads share most modules."""
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"), filename=origin)
    imports: list[tuple[str, tuple[str, ...]]] = []
    # One pass: drop docstrings, collect the imports that run (not those under `if TYPE_CHECKING:`).
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            imports.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            imports.append((base, tuple(alias.name for alias in node.names if alias.name != "*")))
        elif isinstance(node, _WITH_DOCSTRING):
            _drop_docstring(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return _Parsed(ast.dump(tree), tuple(imports), _lazy_exports(tree))


def _lazy_exports(tree: ast.Module) -> tuple[tuple[str, str], ...]:
    """``_EXPORTS = {"name": "module:attribute", ...}`` at module level: the names a PEP 562 ``__getattr__``
    imports on first use, which static analysis follows as if they were imported from their modules."""
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign):
            target, value = node.targets[0], node.value  # type: ignore[assignment]  # any target; Name checked below
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and isinstance(value, ast.Dict):
            return tuple(
                (key.value, item.value.partition(":")[0])
                for key, item in zip(value.keys, value.values, strict=True)
                if isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and isinstance(item, ast.Constant)
                and isinstance(item.value, str)
            )
    return ()


_WITH_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _drop_docstring(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        node.body = node.body[1:] or [ast.Pass()]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _lock_beside(top: str, path: list[str] | None) -> Path | None:
    """``requirements.runtime.lock`` in the folder holding the package (a checkout); None in an image."""
    spec = _top_level_spec(top, path)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location).parent / LOCK_FILE
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _read_lock(lock: Path) -> dict[str, str]:
    """``{distribution: version}`` of a pip-compile/uv lock, local suffixes dropped."""
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[_normalise(match.group(1))] = _public(match.group(2))
    return pins


def _installed(dist: str) -> str:
    try:
        return _public(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"


@functools.cache
def _providers(top: str) -> tuple[str, ...]:
    """The distributions providing import name ``top``: the one of that name (``lightgbm``, ``dagster_pipes``),
    else those whose RECORD lists it (``yaml`` -> ``PyYAML``); ``(top,)`` when none does."""
    try:
        return (importlib.metadata.distribution(top).metadata["Name"],)
    except importlib.metadata.PackageNotFoundError:
        pass
    # Read as text and matched, not parsed: importlib's packages_distributions() parses every RECORD (0.5 s).
    listed = re.compile(rf"^{re.escape(top)}(/|\.py,|\.[^/,]*\.(so|pyd),)", re.MULTILINE)
    found = [dist.metadata["Name"] for dist in importlib.metadata.distributions() if listed.search(_record(dist))]
    return tuple(sorted(set(found))) or (top,)


def _record(dist: importlib.metadata.Distribution) -> str:
    return dist.read_text("RECORD") or ""


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _public(version: str) -> str:
    """The version without its local suffix: ``2.13.0+cpu`` -> ``2.13.0``."""
    return version.partition("+")[0]
