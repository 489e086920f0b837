"""The churn pipeline's contract: its landing dataset, its gate threshold and names (dagster-free)."""

import pyarrow as pa

from mltrain_assets.sdk import UTC_TS, DatasetSpec, Window

ACCOUNT_EVENTS = DatasetSpec(
    name="account_events",
    schema=pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("account_id", pa.int64(), nullable=False),
            pa.field("event_at", UTC_TS, nullable=False),
            pa.field("minutes", pa.float64(), nullable=False),  # time the account spent in the product
            pa.field("plan", pa.string(), nullable=False),  # 'free' | 'pro'
            pa.field("churned", pa.int8(), nullable=False),  # label
        ]
    ),
    id_column="event_id",
    time_column="event_at",
    row_rules={"non_negative_minutes": "minutes >= 0", "valid_label": "churned IN (0, 1)"},
    min_rows_per_day=480,
    count_by=("plan",),
)
LANDING_WINDOW = Window(days=1)
AUC_THRESHOLD = 0.7
MODEL_NAME = "churn-classifier"
EXPERIMENT_NAME = "churn"
