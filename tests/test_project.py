from __future__ import annotations

import pytest

from bqbatch_sql.errors import ProjectError
from bqbatch_sql.project import builtin_macro_dir, load_project


def test_discovers_models_schema_files_seeds_and_macros(make_project):
    root = make_project({
        "models/staging/stg.sql": "select 1 as x",
        "models/marts/m.sql": "select * from {{ ref('stg') }}",
        "models/schema.yml": """
            version: 2
            sources:
              - name: raw
                project: p
                dataset: raw_data
                tables: [{name: reviews, identifier: reviews_v2}]
            models:
              - name: m
                description: the mart
                config: {materialized: table}
                columns: [{name: x, description: an x}]
        """,
        "seeds/dishes.csv": "id,dish\n1,bread\n",
        "macros/mine.sql": "{% macro hello() %}'hi'{% endmacro %}",
    })
    project = load_project(root)
    assert set(project.models) == {"stg", "m"}
    assert project.models["stg"].fqn == ("demo", "staging", "stg")
    assert project.models["m"].description == "the mart"
    assert project.models["m"].yml_config == {"materialized": "table"}
    assert str(project.sources[("raw", "reviews")].relation) == "p.raw_data.reviews_v2"
    assert list(project.seeds) == ["dishes"]
    names = [p.name for p in project.macro_files]
    assert "mine.sql" in names and "gemini_request.sql" in names


def test_builtin_macros_ship_from_the_repo_root_macros_folder():
    assert (builtin_macro_dir() / "gemini_request.sql").is_file()


def test_missing_project_file_says_how_to_fix(tmp_path):
    with pytest.raises(ProjectError, match="No bqbatch_project.yml .* --project-dir"):
        load_project(tmp_path)


def test_invalid_yaml_names_file_and_line(make_project):
    root = make_project({"bqbatch_project.yml": "name: demo\nvars: [unclosed\n"})
    with pytest.raises(ProjectError, match=r"'bqbatch_project.yml': invalid YAML at line 3"):
        load_project(root)


def test_unknown_project_key_suggests_the_right_one(make_project):
    root = make_project({"bqbatch_project.yml": "name: demo\nmodel-path: [models]\n"})
    with pytest.raises(ProjectError, match="unknown key 'model-path'. Did you mean 'model-paths'"):
        load_project(root)


def test_duplicate_model_names_name_both_files(make_project):
    root = make_project({"models/a/x.sql": "select 1", "models/b/x.sql": "select 2"})
    with pytest.raises(ProjectError, match="'models/a/x.sql' and 'models/b/x.sql'"):
        load_project(root)


def test_schema_file_describing_a_missing_model(make_project):
    root = make_project({"models/orders.sql": "select 1", "models/s.yml": "models:\n  - name: order\n"})
    with pytest.raises(ProjectError, match="no model file has that name. Did you mean 'orders'"):
        load_project(root)
