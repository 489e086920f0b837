"""Relocatable state: a copied or moved ``MLTRAIN_HOME`` (or an artifact bucket renamed) keeps working.

Our own references locate versions relative to the storage root (``resources/storage.py``), so
they follow the store wherever it goes. MLflow's store is the one that records absolute artifact
locations (experiments, runs, logged models, model versions): ``relocate_mlflow`` rewrites them
from an old root to a new one, in its database, through SQLAlchemy (any store MLflow supports).

A home remembers where it was created (``.mltrain-home.json``); ``adopt_moved_home`` (run by
``settings.apply_defaults`` in every process that loads the code location or the CLI) notices a
home that was moved or copied and relocates its local MLflow store once. A bucket migration is
``mltrain relocate --from s3://old/mlartifacts --to s3://new/mlartifacts``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HOME_MARKER = ".mltrain-home.json"
# Where MLflow's SQL store keeps absolute artifact locations (MLflow 3.x schema).
MLFLOW_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def relocate_mlflow(tracking_uri: str, old_root: str, new_root: str) -> int:
    """Rewrite MLflow's artifact locations under ``old_root`` to ``new_root``; returns the rows changed."""
    import sqlalchemy

    if not tracking_uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        raise ValueError(f"{tracking_uri}: only a database-backed MLflow store records locations to rewrite")
    engine = sqlalchemy.create_engine(tracking_uri)
    old, new = old_root.rstrip("/"), new_root.rstrip("/")
    changed = 0
    try:
        with engine.begin() as connection:
            tables = set(sqlalchemy.inspect(connection).get_table_names())
            for table, column in MLFLOW_LOCATION_COLUMNS:
                if table not in tables:
                    continue
                result = connection.execute(
                    sqlalchemy.text(
                        f"UPDATE {table} SET {column} = :new || substr({column}, :cut) "
                        f"WHERE {column} = :old OR {column} LIKE :prefix"
                    ),
                    {"new": new, "old": old, "prefix": old.replace("%", r"\%") + "/%", "cut": len(old) + 1},
                )
                changed += result.rowcount or 0
    finally:
        engine.dispose()
    return changed


def adopt_moved_home(home: Path, tracking_uri: str) -> dict | None:
    """If ``home`` was created elsewhere, relocate its local MLflow store to it; the move, or ``None``."""
    marker = home / HOME_MARKER
    here = str(home.resolve())
    try:
        recorded = json.loads(marker.read_text())["home"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        recorded = None
    if recorded == here:
        return None
    moved = None
    store = Path(tracking_uri.removeprefix("sqlite:///"))
    local_store = tracking_uri.startswith("sqlite:///") and store.exists() and store.resolve().is_relative_to(here)
    if recorded and local_store:
        rows = relocate_mlflow(tracking_uri, f"file://{recorded}", f"file://{here}")
        rows += relocate_mlflow(tracking_uri, recorded, here)  # bare paths (mlruns default roots)
        moved = {"from": recorded, "to": here, "mlflow_rows": rows}
    partial = marker.with_name(f".{HOME_MARKER}.{os.getpid()}")
    partial.write_text(json.dumps({"home": here}))
    partial.replace(marker)
    return moved
