from __future__ import annotations

import pytest

from bqbatch_sql.context import Context
from bqbatch_sql.errors import SelectionError

FILES = {
    "bqbatch_project.yml": "name: demo\nmodels:\n  demo:\n    marts:\n      +materialized: table\n",
    "seeds/raw.csv": "id\n1\n",
    "models/staging/stg_a.sql": "{{ config(tags=['nightly']) }} select * from {{ ref('raw') }}",
    "models/staging/stg_b.sql": "select 1 as id",
    "models/marts/mart.sql": "select * from {{ ref('stg_a') }} join {{ ref('stg_b') }} using (id)",
    "models/marts/report.sql": "select * from {{ ref('mart') }}",
    "models/other.sql": "select 2 as id",
}


@pytest.fixture
def ctx(make_project):
    return Context(project_dir=make_project(FILES))


def names(ctx, select=None, exclude=None):
    return [uid.split(".", 1)[1] for uid in ctx.select(select, exclude)]


@pytest.mark.parametrize("select, expected", [
    (["mart"], ["mart"]),
    (["+mart"], ["raw", "stg_a", "stg_b", "mart"]),
    (["mart+"], ["mart", "report"]),
    (["+mart+"], ["raw", "stg_a", "stg_b", "mart", "report"]),
    (["1+mart"], ["stg_a", "stg_b", "mart"]),
    (["tag:nightly"], ["stg_a"]),
    (["path:models/staging"], ["stg_a", "stg_b"]),
    (["config.materialized:table"], ["mart", "report"]),
    (["stg_b other"], ["stg_b", "other"]),
    (["stg_b", "other"], ["stg_b", "other"]),
    (["path:models/staging,tag:nightly"], ["stg_a"]),
    (["stg_*"], ["stg_a", "stg_b"]),
])
def test_selectors(ctx, select, expected):
    assert sorted(names(ctx, select)) == sorted(expected)


def test_order_is_topological_and_exclude_subtracts(ctx):
    order = names(ctx)
    assert order.index("raw") < order.index("stg_a") < order.index("mart") < order.index("report")
    assert names(ctx, ["+report"], ["path:models/staging"]) == ["raw", "mart", "report"]


def test_selector_that_matches_nothing_suggests_a_name(ctx):
    with pytest.raises(SelectionError, match="'mrat' matches no model or seed. Did you mean 'mart'"):
        ctx.select(["mrat"], None)


def test_unknown_method(ctx):
    with pytest.raises(SelectionError, match="Unknown selector method 'tags'"):
        ctx.select(["tags:x"], None)
