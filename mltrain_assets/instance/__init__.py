"""Operations on the Dagster instance itself: healing dead runs, pool limits, slot claims, locks, reaping.

Nothing here builds an asset. Layering: ``core/`` may import from here; this package imports only
``resources/`` and the dagster-free base (``launch/``, ``settings``), never ``core/`` or the CLI.
"""
