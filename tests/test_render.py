"""Render stage: golden fixtures (model -> rendered BigQuery SQL) and the errors users meet."""

from __future__ import annotations

from pathlib import Path

import pytest

from bqbatch_sql.context import Context
from bqbatch_sql.errors import DagError, RenderError

FIXTURES = Path(__file__).parent / "fixtures" / "render"
BASE = {
    "bqbatch_project.yml": "name: demo\nvars:\n  label: \"'nightly'\"\n",
    "models/stg.sql": "select 1 as id, 250 as amount",
    "models/sources.yml": """
        sources:
          - name: raw
            dataset: raw_data
            tables: [{name: events, identifier: events_v2}]
    """,
    "macros/money.sql": "{% macro cents_to_dollars(col) %}({{ col }} / 100.0){% endmacro %}",
}


def _case(path: Path) -> tuple[str, str]:
    text = path.read_text()
    model, rendered = text.split("-- rendered:\n")
    return model.removeprefix("-- model:\n"), rendered


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.sql")), ids=lambda p: p.stem)
def test_golden_render(make_project, fixture):
    model_sql, expected = _case(fixture)
    root = make_project({**BASE, "models/case.sql": model_sql})
    ctx = Context(project_dir=root)
    ctx.compile(select=["case"])
    compiled = (root / "target/compiled/demo/models/case.sql").read_text()
    assert compiled.strip() == expected.strip()


def _compile_error(make_project, files: dict[str, str], exc=RenderError) -> str:
    root = make_project({**BASE, **files})
    with pytest.raises(exc) as info:
        Context(project_dir=root).compile()
    return str(info.value)


def test_missing_ref_names_model_file_line_and_suggestion(make_project):
    msg = _compile_error(make_project, {"models/m.sql": "select 1\nfrom {{ ref('stgg') }}"})
    assert msg == "Model 'm' (models/m.sql), line 2 depends on a node named 'stgg' which was not found. Did you mean 'stg'?"


def test_missing_source_says_where_to_declare_it(make_project):
    msg = _compile_error(make_project, {"models/m.sql": "select * from {{ source('raw', 'event') }}"})
    assert "Model 'm' (models/m.sql), line 1 depends on source 'raw.event'" in msg
    assert "Did you mean 'raw.events'" in msg and "sources:" in msg


def test_undefined_var_names_line_and_fix(make_project):
    msg = _compile_error(make_project, {"models/m.sql": "select\n  {{ var('lable') }}"})
    assert "Model 'm' (models/m.sql), line 2: var('lable') is not defined. Did you mean 'label'?" in msg
    assert "--vars" in msg


def test_jinja_syntax_error_names_file_and_line(make_project):
    msg = _compile_error(make_project, {"models/m.sql": "select 1\n{% if x %}\nselect 2"})
    assert msg.startswith("Model 'm' (models/m.sql): Jinja syntax error in 'models/m.sql' at line 2")
    assert "'endif'" in msg


def test_unknown_macro_is_named(make_project):
    msg = _compile_error(make_project, {"models/m.sql": "select {{ no_such_macro('x') }}"})
    assert "Model 'm' (models/m.sql), line 1: 'no_such_macro' is undefined" in msg


def test_cycle_lists_the_models(make_project):
    msg = _compile_error(make_project, {
        "models/a.sql": "select * from {{ ref('b') }}",
        "models/b.sql": "select * from {{ ref('a') }}",
    }, DagError)
    assert "cycle" in msg and "a (models/a.sql)" in msg and "b (models/b.sql)" in msg


def test_config_precedence_model_over_yml_over_folder(make_project):
    root = make_project({
        **BASE,
        "bqbatch_project.yml": BASE["bqbatch_project.yml"] + """
models:
  demo:
    +materialized: table
    +tags: [all]
    marts:
      +materialized: view
      +tags: [marts]
""",
        "models/marts/a.sql": "{{ config(tags=['a']) }} select 1",
        "models/marts/b.sql": "{{ config(materialized='table') }} select 1",
        "models/marts/c.sql": "select 1",
        "models/marts/c.yml": "models:\n  - name: c\n    config: {materialized: table}\n",
    })
    models = Context(project_dir=root).manifest.project.models
    assert models["stg"].config.materialized == "table"
    assert models["a"].config.materialized == "view"
    assert models["a"].config.tags == ["all", "marts", "a"]
    assert models["b"].config.materialized == "table"
    assert models["c"].config.materialized == "table"


def test_bad_config_value_names_model_and_accepted_forms(make_project):
    from bqbatch_sql.errors import ConfigError

    msg = _compile_error(make_project, {
        "models/m.sql": "{{ config(materialized='batch_prediction', model='gpt-4 turbo') }} select 1",
    }, ConfigError)
    assert "The config of Model 'm' (models/m.sql) is invalid" in msg
    assert "publishers/google/models/" in msg and "projects/PROJECT/locations/LOCATION/models/MODEL_ID" in msg


def test_typo_in_config_key_is_caught(make_project):
    from bqbatch_sql.errors import ConfigError

    msg = _compile_error(make_project, {"models/m.sql": "{{ config(materialised='table') }} select 1"}, ConfigError)
    assert "unknown key 'materialised'. Did you mean 'materialized'?" in msg


def test_macro_argument_errors_name_the_model_and_line(make_project):
    msg = _compile_error(make_project, {
        "models/m.sql": "select\n  {{ gemini_request(prompt=\"'hi'\", temperature='hot') }} as request",
    })
    assert msg.startswith("Model 'm' (models/m.sql)")
    assert "line 2" in msg and "temperature" in msg
