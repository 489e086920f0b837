"""A third pipeline that lives outside ``mltrain_assets`` and is registered through its spec alone.

``MLTRAIN_PIPELINES=demand,recsys,mltrain_assets_tests.pipelines.churn_plugin.spec`` adds it: its
landing dataset, simulator, CLI options, params module, assets, jobs and quality gate come from
these files; no shared file names it (``test_plugin_pipeline.py`` proves it through the CLI).
"""
