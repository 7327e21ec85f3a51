"""The static fast path renders exactly what Jinja renders, and hands everything else to Jinja."""

from __future__ import annotations

import pytest

from bqbatch_sql.context import Context
from bqbatch_sql.static_render import compile_static

FILES = {
    "bqbatch_project.yml": "name: demo\nvars: {n: 3, label: nightly}\n",
    "models/stg.sql": "select 1 as id, 'a' as dish",
    "macros/m.sql": "{% macro twice(x, sep=', ') %}{{ x }}{{ sep }}{{ x }}{% endmacro %}",
}

SAME = [
    "select * from {{ ref('stg') }}",
    "{{ config(materialized='table', tags=['a', \"b\"]) }}\nselect {{ var('n') }} as n, '{{ var('label') }}' as l",
    "select {{ twice('id') }}, {{ twice(x='dish', sep=' || ') }} from {{ ref('stg') }}",
    "select {{ var('missing', none) }} as a, {{ var('flag', true) }} as b, {{ var('neg', -2.5) }} as c",
    "{# a comment\nover two lines #}\nselect {{ gemini_request(prompt=\"'Say hi to ' || dish\", temperature=0.2, "
    "response_schema={'type': 'OBJECT', 'properties': {'a': {'type': 'STRING'}}}) }} as request from {{ ref('stg') }}",
]

JINJA_ONLY = [
    "{% if true %}select 1{% endif %}",
    "select {{ 'a' ~ 'b' }}",
    "select {{ var('n') | string }}",
    "select {{ this.name }}",
    "select {{- ref('stg') }}",
    "select {{ ref('stg') }",
    "select {{ f'x' }}",
]


@pytest.fixture
def ctx(make_project):
    return Context(project_dir=make_project(FILES))


@pytest.mark.parametrize("text", SAME)
def test_fast_path_output_equals_jinja_output(ctx, text):
    renderer = ctx.manifest.renderer
    assert compile_static(text, renderer.env.globals) is not None
    model = ctx.manifest.project.models["stg"]
    relation = ctx.manifest.relations[model.unique_id]
    resolve = dict(resolve_ref=lambda n: ctx.manifest.resolve_ref(model, n),
                   resolve_source=lambda s, t: ctx.manifest.resolve_source(model, s, t))
    fast = renderer.render_snippet("case.sql", text, "case", relation, **resolve)
    renderer._static[text] = None  # force the Jinja path for the same text
    slow = renderer.render_snippet("case_jinja.sql", text, "case", relation, **resolve)
    assert fast == slow


@pytest.mark.parametrize("text", JINJA_ONLY)
def test_anything_else_goes_to_jinja(ctx, text):
    assert compile_static(text, ctx.manifest.renderer.env.globals) is None


def test_errors_on_the_fast_path_keep_their_line(make_project):
    from bqbatch_sql.errors import RenderError

    root = make_project({**FILES, "models/m.sql": "select 1\n\nfrom {{ ref('stgg') }}"})
    with pytest.raises(RenderError, match=r"Model 'm' \(models/m.sql\), line 3 depends on a node named 'stgg'"):
        Context(project_dir=root).manifest
    root = make_project({**FILES, "models/m.sql": "select\n  {{ twice('a', nope=1) }}"}, name="p2")
    with pytest.raises(RenderError, match=r"Model 'm' \(models/m.sql\).*line 2.*nope"):
        Context(project_dir=root).compile()
