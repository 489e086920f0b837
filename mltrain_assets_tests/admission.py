"""What an API server checks of a pod before it admits it, for tests of objects built by the real components.

Three layers, in the order the API server applies them: the OpenAPI schema (kubernetes-validate,
1.30, strict), the pod-spec validation the schema cannot express (``ValidatePodSpec`` in
kubernetes/pkg/apis/core/validation: unique volume and container names, unique mount paths per
container, every mount backed by a volume), and Pod Security admission at ``restricted``
(``resources/pod_security.py``, itself checked against the upstream fixtures). Plus what a read-only
root file system and a non-root user need to work at all: a writable working directory, no port below 1024.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from typing import Any

import kubernetes_validate

from mltrain_assets.resources.pod_security import pod_specs, privileged_ports, violations


def pod_spec_refusals(spec: dict[str, Any], where: str = "spec") -> list[str]:
    """What ``ValidatePodSpec`` refuses in ``spec`` (a subset: names, volumes, mounts), as the API server words it."""
    refusals = []
    volumes = [volume["name"] for volume in spec.get("volumes") or []]
    refusals += [f"{where}.volumes[{name}]: Duplicate value: {name!r}" for name, n in Counter(volumes).items() if n > 1]
    containers = [
        *(("initContainers", c) for c in spec.get("initContainers") or []),
        *(("containers", c) for c in spec.get("containers") or []),
    ]
    names = Counter(c["name"] for _, c in containers)
    refusals += [f"{where}.containers[{name}]: Duplicate value: {name!r}" for name, n in names.items() if n > 1]
    for kind, container in containers:
        mounts = container.get("volumeMounts") or []
        path = f"{where}.{kind}[{container['name']}].volumeMounts"
        for mount in mounts:
            if mount["name"] not in volumes:
                refusals.append(f"{path}[{mount['name']}].name: Not found: {mount['name']!r}")
        paths = Counter(posixpath.normpath(m["mountPath"]) for m in mounts)
        refusals += [f"{path}.mountPath: Invalid value: {p!r}: must be unique" for p, n in paths.items() if n > 1]
    return refusals


def unwritable_working_dirs(spec: dict[str, Any]) -> list[str]:
    """Containers with a read-only root whose working directory is not on a writable volume mount."""
    found = []
    for container in spec.get("containers") or []:
        if not (container.get("securityContext") or {}).get("readOnlyRootFilesystem"):
            continue
        workdir = container.get("workingDir")
        writable = [m["mountPath"] for m in container.get("volumeMounts") or [] if not m.get("readOnly")]
        if not workdir or not any(workdir == p or workdir.startswith(p.rstrip("/") + "/") for p in writable):
            found.append(f"{container['name']}: working directory {workdir or '(the image WORKDIR)'} is read-only")
    return found


def admission_refusals(obj: dict[str, Any], version: str = "1.30") -> list[str]:
    """Everything the checks above refuse in ``obj`` (a Pod, or an object with pod templates); empty: admitted."""
    refusals = []
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        refusals.append(f"schema {version}: {exc.message} at {'.'.join(map(str, exc.path))}")
    for where, spec in pod_specs(obj):
        refusals += pod_spec_refusals(spec, where)
    refusals += violations(obj)
    refusals += privileged_ports(obj)  # a non-root container cannot bind below 1024: it would crash-loop
    return refusals
