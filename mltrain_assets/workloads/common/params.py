"""The typed contract between an asset and its workload: one dataclass per workload.

The asset builds the workload's ``Params``; the workload parses the same class from its
command line (``--params JSON``). Local, Kubernetes and k8s-local launches all pass this one
object, so nothing the workload reads can be dropped on the way to a pod. Its versioned
fields are what the output version hashes. Dagster-free and cheap to import: the control
plane imports every ``params`` module.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar

# Field roles: versioned parameters change the output; the rest say where to read, write or run.
_INPUT = {"versioned": False, "role": "input"}
_RUNTIME = {"versioned": False, "role": "runtime"}


def input_uri(**kwargs: Any) -> Any:
    """A field naming committed input versions: their versions are hashed, not their locations."""
    return dataclasses.field(metadata=_INPUT, **kwargs)


def runtime(**kwargs: Any) -> Any:
    """A field that says how or where to run (engine, master, devices): it does not change the output."""
    return dataclasses.field(metadata=_RUNTIME, **kwargs)


# The deployment's service settings a params field may declare itself bound to (``service(binds=...)``).
SERVICES = ("spark", "mlflow", "sql_engine", "engine_parity")


def service(binds: str, **kwargs: Any) -> Any:
    """A runtime field the control plane fills with one of the deployment's service settings (``SERVICES``).

    Declared, never matched by name: a field that happens to be called ``spark`` is left alone.
    """
    if binds not in SERVICES:
        raise ValueError(f"service(binds={binds!r}): one of {SERVICES}")
    return dataclasses.field(metadata={**_RUNTIME, "binds": binds}, **kwargs)


# What a hyperparameter may declare about its range (pydantic's names): checked on every construction.
_BOUNDS: dict[str, Callable[[Any, Any], bool]] = {
    "ge": lambda value, bound: value >= bound,
    "gt": lambda value, bound: value > bound,
    "le": lambda value, bound: value <= bound,
    "lt": lambda value, bound: value < bound,
}
_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def hyperparameter(*, default: Any, help: str, **bounds: float) -> Any:
    """A tunable, versioned field: launch config of the asset that runs the workload (the Dagster launchpad,
    ``mltrain materialize --config``), hashed into the output's version, logged to MLflow by training.

    ``bounds``: ``ge``, ``gt``, ``le``, ``lt`` (e.g. ``hyperparameter(default=0.05, help=..., gt=0, le=1)``);
    a value outside them is refused before anything is launched.
    """
    unknown = sorted(set(bounds) - set(_BOUNDS))
    if unknown:
        raise TypeError(f"hyperparameter(): unknown bound(s) {unknown}; known: {sorted(_BOUNDS)}")
    return dataclasses.field(
        default=default, metadata={"versioned": True, "role": "hyperparameter", "help": help, **bounds}
    )


def hyperparameters(params: WorkloadParams | type[WorkloadParams]) -> list[dataclasses.Field]:
    """The fields of ``params`` declared with ``hyperparameter()``, in declaration order."""
    return [f for f in dataclasses.fields(params) if f.metadata.get("role") == "hyperparameter"]


def hyperparameter_defaults(params: type[WorkloadParams]) -> dict[str, Any]:
    """``{name: default}`` of ``params``' hyperparameters: what a launch without config uses."""
    return {f.name: f.default for f in hyperparameters(params)}


def hyperparameter_values(params: WorkloadParams) -> dict[str, Any]:
    """``{name: value}`` of ``params``' hyperparameters: what a training workload tunes and logs."""
    return {f.name: getattr(params, f.name) for f in hyperparameters(params)}


def bounds_text(field: dataclasses.Field) -> str:
    """A hyperparameter's declared range, e.g. ``> 0, <= 1`` (empty when it declares none)."""
    return ", ".join(f"{_BOUND_TEXT[key]} {field.metadata[key]}" for key in _BOUNDS if key in field.metadata)


def range_problem(field: dataclasses.Field, value: Any) -> str:
    """Why ``value`` is outside the range hyperparameter ``field`` declares (``is out of range: must be ...``); "" if within."""
    if all(check(value, field.metadata[key]) for key, check in _BOUNDS.items() if key in field.metadata):
        return ""
    return f"is out of range: must be {bounds_text(field)}"


def check_hyperparameters(params: WorkloadParams) -> None:
    """Refuse a hyperparameter outside its declared range, naming the class, field and value."""
    for f in hyperparameters(params):
        value = getattr(params, f.name)
        if problem := range_problem(f, value):
            raise ValueError(f"{type(params).__name__}.{f.name}={value!r} {problem}")


class _DerivedCodeVersion:
    """``Params.code_version``: an explicit ``@workload(code_version=...)``, else derived from the entry
    module's source (``code_version.derive``), lazily: importing a params module stays cheap."""

    def __get__(self, instance: object, owner: type[WorkloadParams]) -> str:
        explicit = owner._explicit_code_version
        if explicit:
            return explicit
        from mltrain_assets.workloads.common.code_version import derived_code_version

        return derived_code_version(owner.module)


P = TypeVar("P", bound="WorkloadParams")


def workload(
    module: str,
    code_version: str | None = None,
    kinds: Iterable[str] = ("python",),
    profile: str = "default",
    resources: Mapping[str, Any] | None = None,
) -> Callable[[type[P]], type[P]]:
    """Declare what a params class runs: its entry module (``.train``: beside the params module), code version,
    technologies, resource profile and where it needs more or less than its profile (``resources``: fields of
    ``WorkloadResources``, e.g. ``{"memory": "16Gi", "timeout_s": 900}``).

    ``code_version``: None (the default) derives it from the entry module's source tree and the pins of what
    it imports (``workloads.common.code_version``); a string overrides that, e.g. to keep reusing committed
    versions across a change known not to alter the output.
    """

    def declare(cls: type[P]) -> type[P]:
        entry = importlib.util.resolve_name(module, cls.__module__.rpartition(".")[0])
        cls.module, cls.kinds, cls.profile = entry, frozenset(kinds), profile
        cls._explicit_code_version = code_version
        cls.resources = dict(resources or {})
        return cls

    return declare


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkloadParams:
    """Base of every workload's parameters. Subclasses are frozen keyword-only dataclasses.

    ``module`` is the entry point (``python -m <module> --params JSON``); ``out_uri`` is the
    version folder to commit into, filled in by the control plane once the version is known.
    """

    module: ClassVar[str]
    # Declared with ``@workload``: what the asset that runs it shows and needs: its code version (part of
    # every version hash it commits), the technologies it runs on (the catalog's kinds) and the resources
    # it needs (``default``, ``spark`` or ``training``: MLTRAIN_WORKLOAD_RESOURCES' profiles and its pool).
    code_version = _DerivedCodeVersion()  # a str on access: explicit, else derived (once per process)
    _explicit_code_version: ClassVar[str | None] = None
    kinds: ClassVar[frozenset[str]] = frozenset({"python"})
    profile: ClassVar[str] = "default"
    resources: ClassVar[Mapping[str, Any]] = {}  # per-workload departures from its profile's resources
    distributed: ClassVar[bool] = False  # see DistributedParams
    commits: ClassVar[bool] = True  # commits one version into out_uri (False: reports only, or several targets)
    out_uri: str = dataclasses.field(default="", metadata={"versioned": False, "role": "output"})

    def __post_init__(self) -> None:
        check_hyperparameters(self)

    @classmethod
    def code_version_source(cls) -> str:
        """Where ``code_version`` comes from, as the catalog shows it: ``explicit override`` or ``derived (...)``."""
        if cls._explicit_code_version:
            return "explicit override"
        from mltrain_assets.workloads.common.code_version import derive

        return derive(cls.module).describe()

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return _build(cls, data, where=cls.__name__)

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{cls.__name__}: --params is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: --params must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    # ------------------------------------------------------------ command line

    def argv(self) -> list[str]:
        return ["--params", self.to_json()]

    def command(self, python: str) -> list[str]:
        return [python, "-m", self.module, *self.argv()]

    @classmethod
    def parse_args(cls, argv: Sequence[str] | None = None) -> Self:
        parser = argparse.ArgumentParser(
            prog=f"python -m {cls.module}", description=(cls.__doc__ or cls.__name__).strip().splitlines()[0]
        )
        parser.add_argument("--params", required=True, help=f"JSON object with the fields of {cls.__name__}")
        return cls.from_json(parser.parse_args(argv).params)

    # ------------------------------------------------------------ versioning

    def versioned_fields(self) -> dict[str, Any]:
        """The fields that change the output: hashed into its version with the inputs' versions."""
        return {
            f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("versioned", True)
        }

    def recorded_fields(self) -> dict[str, Any]:
        """What a manifest records of the params that built it: all but the runtime fields (where and how to run)."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("role") != "runtime"
        }

    def require_output(self) -> None:
        """A committing workload refuses to start without the version folder the control plane names."""
        if self.commits and not self.out_uri:
            raise ValueError(f"{type(self).__name__}.out_uri is empty: the control plane names the version to commit")

    def with_output(self, out_uri: str) -> Self:
        return dataclasses.replace(self, out_uri=out_uri)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MlflowSettings:
    """Where a training workload tracks its runs; passed explicitly so a pod uses the same server."""

    tracking_uri: str = ""  # empty: MLflow's own default ($MLFLOW_TRACKING_URI)
    artifacts_uri: str = ""  # artifact root for experiments created on a local (non-server) store
    # The Dagster launch this workload runs for (filled by the compute resource; empty when run
    # standalone): training runs carry them as tags and links back to the Dagster UI.
    dagster_ui_url: str = ""  # MLTRAIN_DAGSTER_UI_URL
    dagster_run_id: str = ""
    dagster_asset_key: str = ""  # user string, e.g. "city_demand_model"
    dagster_partition_key: str = ""  # exactly as Dagster writes it, e.g. "nyc|2026-11-27"


# Kubernetes sets this in every pod of an Indexed Job: the pod's index, 0..completions-1.
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedParams(WorkloadParams):
    """A workload that runs as ``nnodes`` x ``nproc_per_node`` processes (torchrun), one launch per node.

    Every node receives the same params; ``node_rank=-1`` takes the node's rank from the
    Kubernetes Indexed Job it runs in (``$JOB_COMPLETION_INDEX``). Node 0 hosts the c10d
    rendezvous at ``rdzv_endpoint`` and is the one that commits.
    """

    distributed: ClassVar[bool] = True

    nproc_per_node: int = runtime(default=1)
    nnodes: int = runtime(default=1)
    node_rank: int = runtime(default=0)
    rdzv_endpoint: str = runtime(default="")  # host:port of the c10d rendezvous; empty: standalone (one node)
    backend: str = runtime(default="gloo")  # "gloo" | "nccl"
    device: str = runtime(default="cpu")  # "cpu" | "cuda"

    @property
    def world_size(self) -> int:
        """How many processes train: every node runs ``nproc_per_node``."""
        return self.nnodes * self.nproc_per_node

    def resolved_node_rank(self) -> int:
        if self.node_rank >= 0:
            return self.node_rank
        index = os.environ.get(COMPLETION_INDEX_ENV)
        if index is None:
            raise ValueError(f"{type(self).__name__}.node_rank=-1 needs ${COMPLETION_INDEX_ENV} (an Indexed Job pod)")
        return int(index)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Construct dataclass ``cls`` from JSON data, converting nested dataclasses and tuples."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected {sorted(known)}")
    missing = sorted(
        name
        for name, f in known.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{where}: missing required field(s) {missing}")
    return cls(**{name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()})


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(options[0], value, where)
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return _build(hint, value, where)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_convert(item, v, where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
