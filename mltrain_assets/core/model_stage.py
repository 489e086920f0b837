"""A pipeline's model, stated once: one gate and one registered name give the model step, its registration
and its quality report entry.

``stage = model_stage(spec, gate, "churn-classifier")``; then ``@stage.model(TrainParams)`` declares the
training step (gated by ``gate``), ``@stage.registration`` the step registering what it trained (under
that name, promoted past that gate; its score is the gate's metric), and ``stage.quality`` what the model
quality report shows (``define_pipeline(..., quality=stage.quality)``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import AssetsDefinition, MultiPartitionKey, MultiPartitionsDefinition

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.core.assets import Step, code_reference, step_asset, workload_asset
from mltrain_assets.core.gates import Gate
from mltrain_assets.core.partitions import daily_partitions
from mltrain_assets.core.pipeline import ModelQuality
from mltrain_assets.core.promotion import ChampionComparison, register_and_promote, snapshot_with_upstream
from mltrain_assets.registry import PipelineSpec
from mltrain_assets.workloads.common.params import WorkloadParams


@dataclass(frozen=True)
class Registration:
    """What a registration step registers: the trained model's URI and the references its lineage snapshot names."""

    model_uri: str
    upstream: Mapping[str, ArtifactRef]  # the model's reference and the inputs it was built from, by role
    compare_with_champion: ChampionComparison | None = None  # None: a newer passing model always takes `staging`


def partition_key_of(partition_key: Any) -> str:
    """The key of a date x key partition (e.g. the city), ``""`` for a daily one: what a model name is per."""
    if isinstance(partition_key, MultiPartitionKey):
        (key,) = [value for dimension, value in partition_key.keys_by_dimension.items() if dimension != "date"]
        return key
    return ""


class ModelStage:
    """One model of a pipeline: its gate and its registered name, said once (``model_stage``)."""

    def __init__(self, spec: PipelineSpec, gate: Gate, model_name: str | Callable[[str], str]) -> None:
        if gate.measure is None:
            raise ValueError(f"pipeline {spec.name}: the model's gate {gate.name} is not a metric gate")
        self.spec, self.gate = spec, gate
        self.model_name: Callable[[str], str] = model_name if callable(model_name) else (lambda _key: model_name)
        self._model: AssetsDefinition | None = None
        self._registered: AssetsDefinition | None = None

    def model(
        self, workload: type[WorkloadParams], *, gates: Sequence[Gate] = (), **asset_args: Any
    ) -> Callable[[Callable[..., Step]], AssetsDefinition]:
        """``workload_asset`` for the training step, gated on the stage's gate (and ``gates``)."""
        asset_args.setdefault("layer", "model")
        declare = workload_asset(self.spec, workload, gates=[self.gate, *gates], **asset_args)

        def decorate(body: Callable[..., Step]) -> AssetsDefinition:
            self._model = declare(body)
            return self._model

        return decorate

    def registration(
        self, body: Callable[..., Registration] | None = None, *, required_resource_keys: Sequence[str] = ()
    ) -> Any:
        """The step registering the model (``@stage.registration``): the body says what to register, the stage
        registers it under its name and promotes it past its gate (``register_and_promote``).

        The body takes the model step's output by its asset name (and any other input); a resource it needs
        beyond ``registry`` is named in ``required_resource_keys`` and read from ``context.resources``.
        """
        if body is None:
            return functools.partial(self.registration, required_resource_keys=required_resource_keys)
        model = self._require_model()
        model_input = model.key.to_user_string()
        parameters = inspect.signature(body).parameters
        if model_input not in parameters:
            raise TypeError(f"{body.__name__}: takes no `{model_input}` (the model it registers) among its inputs")
        measure = self.gate.measure
        assert measure is not None  # checked in __init__

        def register(context, **inputs: Any) -> Any:
            registration = body(context, **inputs)
            model_ref: ArtifactRef = inputs[model_input]
            return register_and_promote(
                context,
                registry=context.resources.registry,
                model_name=self.model_name(partition_key_of(context.partition_key)),
                model_ref=model_ref,
                model_uri=registration.model_uri,
                data_snapshot=snapshot_with_upstream(dict(registration.upstream)),
                gate=self.gate,
                score_metadata={measure.metric: model_ref.metadata.get(measure.metric)},
                compare_with_champion=registration.compare_with_champion,
            )

        functools.update_wrapper(register, body)
        # Dagster reads the inputs from the body's signature; the output is the IO manager's reference.
        register.__signature__ = inspect.signature(body).replace(return_annotation=inspect.Signature.empty)  # type: ignore[attr-defined]
        # The ``registry`` pool has one slot (MLTRAIN_POOL_LIMITS): registrations and promotions never overlap.
        self._registered = step_asset(
            self.spec,
            layer="registered",
            kinds={"mlflow"},
            pool="registry",
            partitions_def=model.partitions_def or daily_partitions,  # the model's partitions, one per model
            description=inspect.getdoc(body) or self._description(model_input),
            required_resource_keys={"registry", *required_resource_keys},
            metadata=code_reference(inspect.getsourcefile(body) or "", inspect.getsourcelines(body)[1]),
        )(register)
        return self._registered

    @property
    def quality(self) -> ModelQuality:
        """What the model quality report shows: the model, its registration, the gate, the registered name."""
        if self._registered is None:
            raise ValueError(f"pipeline {self.spec.name}: the model stage has no @registration step yet")
        return ModelQuality(
            model=self._require_model(), registered=self._registered, gate=self.gate, model_name=self.model_name
        )

    def _require_model(self) -> AssetsDefinition:
        if self._model is None:
            raise ValueError(
                f"pipeline {self.spec.name}: declare the model step (@stage.model) before its registration"
            )
        return self._model

    def _description(self, model: str) -> str:
        keyed = isinstance(self._require_model().partitions_def, MultiPartitionsDefinition)
        name = self.model_name("{key}" if keyed else "")
        return f"`{model}` registered as `{name}` with lineage tags; `staging` moves to it when it passes {self.gate.name}."


def model_stage(spec: PipelineSpec, gate: Gate, model_name: str | Callable[[str], str]) -> ModelStage:
    """A pipeline's model from its one gate and its one registered name (per key: ``model_name(key)``)."""
    return ModelStage(spec, gate, model_name)


def staging_version(model_name: str) -> Any | None:
    """The registry's version of ``model_name`` aliased ``staging`` now (MLflow's ``ModelVersion``), or ``None``."""
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient().get_model_version_by_alias(model_name, "staging")
    except Exception:  # no such model or alias yet: nothing is served
        return None
