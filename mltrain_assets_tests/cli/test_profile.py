"""``$DAGSTER_HOME/dagster.yaml`` is the user's: created when absent, completed when edited, refused on a conflict."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.secrets.env_file import get_env_var_dict

from mltrain_assets.cli import main
from mltrain_assets.cli.errors import UsageError
from mltrain_assets.cli.profile import install_profile, point_dagster_cli_here

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "dagster.yaml"
POSTGRES = REPO / "deploy" / "dagster.postgres.yaml"


def _template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def _edited_profile() -> str:
    """The shipped profile as a user left it: a key of their own, a shorter retention, two keys deleted."""
    profile = _template()
    del profile["run_retries"]
    del profile["concurrency"]["pools"]["granularity"]
    profile["retention"]["schedule"]["purge_after_days"] = 30
    text = yaml.safe_dump(profile, sort_keys=False)
    return (
        "# my instance: do not lose this comment\n"
        + text
        + "code_servers:\n  local_startup_timeout: 360  # slow disk\n"
    )


def test_a_missing_profile_is_the_template_verbatim(tmp_path):
    home = tmp_path / "dagster"
    assert install_profile(TEMPLATE, home, project=None) == []
    assert (home / "dagster.yaml").read_text() == TEMPLATE.read_text()


def test_the_shipped_profile_is_left_as_it_is(tmp_path):
    home = tmp_path / "dagster"
    install_profile(TEMPLATE, home, project=None)
    before = (home / "dagster.yaml").stat().st_mtime_ns
    assert install_profile(TEMPLATE, home, project=None) == []
    assert (home / "dagster.yaml").stat().st_mtime_ns == before


def test_an_edited_profile_keeps_its_edits_and_gets_the_keys_it_lacks(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    edited = _edited_profile()
    (home / "dagster.yaml").write_text(edited)
    said: list[str] = []

    added = install_profile(TEMPLATE, home, project=None, say=said.append)

    assert added == ["concurrency.pools.granularity", "run_retries"]
    text = (home / "dagster.yaml").read_text()
    profile = yaml.safe_load(text)
    assert profile["retention"]["schedule"]["purge_after_days"] == 30, "the user's value stays"
    assert profile["code_servers"] == {"local_startup_timeout": 360}, "the user's own key stays"
    assert profile["concurrency"]["pools"] == {"default_limit": 2, "granularity": "op"}
    assert profile["run_retries"] == _template()["run_retries"]
    # The user's lines outside the blocks that gained a key are kept verbatim, comments included.
    assert text.startswith("# my instance: do not lose this comment\n")
    assert "code_servers:\n  local_startup_timeout: 360  # slow disk\n" in text
    assert said == [
        f"mltrain: {home / 'dagster.yaml'}: added concurrency.pools.granularity, run_retries "
        "(from dagster.yaml; your other settings kept)"
    ]
    dagster_instance_config(str(home))  # Dagster loads it
    assert install_profile(TEMPLATE, home, project=None) == [], "complete now: nothing more to add"


def test_the_postgres_profile_adds_its_storage_to_a_sqlite_home_that_names_none(tmp_path):
    home = tmp_path / "dagster"
    install_profile(TEMPLATE, home, project=None)
    added = install_profile(POSTGRES, home, project=None, say=lambda _: None)
    assert added == ["storage"]
    profile = yaml.safe_load((home / "dagster.yaml").read_text())
    assert profile["storage"] == yaml.safe_load(POSTGRES.read_text())["storage"]
    assert profile["run_queue"]["dequeue_num_workers"] == 2, "the home's own tuning stays"


def test_a_subclass_of_the_default_launcher_is_accepted(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    launcher = "run_launcher:\n  module: mltrain_assets.instance.heal\n  class: PidCheckedRunLauncher\n"
    (home / "dagster.yaml").write_text(TEMPLATE.read_text() + launcher)
    assert install_profile(TEMPLATE, home, project=None) == []
    assert (home / "dagster.yaml").read_text().endswith(launcher)


@pytest.mark.parametrize(
    ("edit", "template", "message"),
    [
        (
            "run_launcher:\n  module: dagster_k8s\n  class: K8sRunLauncher\n",
            TEMPLATE,
            "run_launcher is K8sRunLauncher, mltrain needs DefaultRunLauncher or a subclass",
        ),
        (
            "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n",
            TEMPLATE,
            "run_coordinator is DefaultRunCoordinator, mltrain needs QueuedRunCoordinator",
        ),
        (
            "run_launcher:\n  module: dagster.core.launcher\n  class: DefaultRunLauncher\n",
            TEMPLATE,
            "run_launcher is dagster.core.launcher.DefaultRunLauncher, which cannot be imported, mltrain needs "
            "DefaultRunLauncher or a subclass",
        ),
        ("run_monitoring:\n  enabled: false\n", TEMPLATE, "run_monitoring.enabled is false, mltrain needs true"),
        (
            "concurrency:\n  pools:\n    granularity: run\n",
            TEMPLATE,
            "concurrency.pools.granularity is run, mltrain needs op",
        ),
        ("storage:\n  sqlite:\n    base_dir: /var/dagster\n", POSTGRES, "storage is sqlite, mltrain needs postgres"),
    ],
    ids=["run_launcher", "run_coordinator", "unimportable", "run_monitoring", "granularity", "storage"],
)
def test_an_edit_that_conflicts_with_a_needed_key_is_refused_by_name_and_nothing_is_written(
    tmp_path, monkeypatch, edit, template, message
):
    monkeypatch.delenv("MLTRAIN_COMPUTE", raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.dg]\ndirectory_type = "project"\n')
    home = tmp_path / ".mltrain" / "dagster"  # the project's default instance: accepted, it would get a .env line
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(edit)
    with pytest.raises(UsageError) as refused:
        install_profile(template, home, project=tmp_path)
    assert refused.value.message.startswith(f"{home / 'dagster.yaml'}: {message} (")
    assert (home / "dagster.yaml").read_text() == edit
    assert sorted(p.name for p in home.iterdir()) == ["dagster.yaml"]
    assert not (tmp_path / ".env").exists()


def test_a_merge_dagster_would_refuse_is_refused_with_dagsters_reason(tmp_path):
    """A run coordinator with its own run limit: adding `concurrency` (runs and pools) makes Dagster refuse both."""
    home = tmp_path / "dagster"
    home.mkdir()
    edit = textwrap.dedent(
        """\
        run_coordinator:
          module: dagster
          class: QueuedRunCoordinator
          config:
            max_concurrent_runs: 3
        """
    )
    (home / "dagster.yaml").write_text(edit)
    with pytest.raises(UsageError) as refused:
        install_profile(TEMPLATE, home, project=None)
    assert "would make an instance Dagster refuses" in refused.value.message
    assert "max_concurrent_runs" in refused.value.message and "concurrency > runs" in refused.value.message
    assert (home / "dagster.yaml").read_text() == edit


def test_mltrain_init_refuses_a_conflicting_profile_in_one_line_with_exit_code_2(mltrain_home, capsys):
    home = Path(mltrain_home) / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("run_monitoring:\n  enabled: false\n")
    assert main(["init"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"mltrain init: {home / 'dagster.yaml'}: run_monitoring.enabled is false, mltrain needs true "
        "(run monitoring frees the pool slots of runs that died); change or remove run_monitoring.enabled there\n"
    )
    assert (home / "dagster.yaml").read_text() == "run_monitoring:\n  enabled: false\n"


def test_dagsters_clis_in_the_project_folder_find_the_default_instance_unless_dagster_home_is_set(
    tmp_path, monkeypatch
):
    (tmp_path / "pyproject.toml").write_text('[tool.dg]\ndirectory_type = "project"\n')
    (tmp_path / ".env").write_text("MY_TOKEN=abc")  # the user's own line, no newline at the end
    point_dagster_cli_here(tmp_path)
    point_dagster_cli_here(tmp_path)  # once is enough: a second call adds nothing

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    # What `dg dev`, `dg launch` and `dagster dev` load from the folder before they open an instance.
    assert get_env_var_dict(str(tmp_path)) == {
        "MY_TOKEN": "abc",
        "DAGSTER_HOME": str(tmp_path.resolve() / ".mltrain" / "dagster"),
    }
    monkeypatch.setenv("DAGSTER_HOME", "/srv/dagster")
    assert get_env_var_dict(str(tmp_path))["DAGSTER_HOME"] == "/srv/dagster"
    assert (tmp_path / ".env").read_text().count("DAGSTER_HOME=") == 1


def test_the_dotenv_line_is_written_when_the_projects_default_instance_is_prepared(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.dg]\ndirectory_type = "project"\n')
    install_profile(TEMPLATE, tmp_path / "elsewhere" / "dagster", project=tmp_path)
    assert not (tmp_path / ".env").exists(), "a home of its own (MLTRAIN_HOME set): Dagster's CLIs need theirs"
    install_profile(TEMPLATE, tmp_path / ".mltrain" / "dagster", project=tmp_path)
    assert "DAGSTER_HOME=${DAGSTER_HOME:-" + str(tmp_path.resolve() / ".mltrain" / "dagster") + "}" in (
        (tmp_path / ".env").read_text()
    )


def test_a_dotenv_that_names_dagster_home_is_left_alone(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.dg]\ndirectory_type = "project"\n')
    (tmp_path / ".env").write_text("export DAGSTER_HOME=/data/dagster\n")
    point_dagster_cli_here(tmp_path)
    assert (tmp_path / ".env").read_text() == "export DAGSTER_HOME=/data/dagster\n"


def test_no_dotenv_outside_a_dg_project(tmp_path):
    point_dagster_cli_here(tmp_path)  # an installed package: no pyproject beside it
    assert not (tmp_path / ".env").exists()


def test_a_profile_naming_mltrains_classes_where_they_used_to_live_is_moved_to_where_they_live_now(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    old = TEMPLATE.read_text().replace("mltrain_assets.instance.origin", "mltrain_assets.core.instance")
    assert "module: mltrain_assets.core.instance" in old
    (home / "dagster.yaml").write_text("# mine\n" + old)
    said: list[str] = []

    assert install_profile(TEMPLATE, home, project=None, say=said.append) == []

    text = (home / "dagster.yaml").read_text()
    assert text == "# mine\n" + TEMPLATE.read_text()
    assert "mltrain_assets.core" not in text
    assert said and "mltrain_assets.core.instance renamed to where they live now" in said[0]
    named = yaml.safe_load(text)["instance_class"]
    assert getattr(importlib.import_module(named["module"]), named["class"]).__name__ == named["class"]
