"""Cost: `run --dry-run` estimates, max_rows / max_cost_usd guards, the price table, actual tokens and cost after a run."""

from __future__ import annotations

import json
import math

import pytest
from projects import fails, local_rows, local_tables, ok, on_emulator

from bqbatch_sql.cost import format_usd
from bqbatch_sql.prices import PRICES_AS_OF, Price, price_for

TEXTS = ["great kettle", "bad lid", "ok blender", "loud fan"]
REVIEWS = "review_id,review_text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TEXTS, 1))
# The one text part of each request: 'Classify: ' || review_text; about four characters a token.
INPUT_TOKENS = sum(math.ceil(len(f"Classify: {t}") / 4) for t in TEXTS)


def _model(config: str = "") -> str:
    return ("{{ config(materialized='batch_prediction', on_invalid='submit', "
            f"predictor_options={{'assume_valid': true}}{', ' + config if config else ''}) }}}}\n"
            "select review_id, review_text, {{ gemini_request(prompt=\"'Classify: ' || review_text\") }} as request\n"
            "from {{ ref('reviews') }}\n")


def _project(make_project, config: str = "", project_yml: str = "name: demo\n"):
    return make_project({"seeds/reviews.csv": REVIEWS, "models/sentiment.sql": _model(config),
                         "bqbatch_project.yml": project_yml})


# -- dry run -------------------------------------------------------------------------------


def test_dry_run_prints_rows_tokens_and_cost_and_submits_nothing(make_project, cli):
    root = _project(make_project)
    ok(cli("seed", "--project-dir", root))
    result = ok(cli("run", "--project-dir", root, "--dry-run"))
    cost = INPUT_TOKENS * 0.15 / 1e6
    assert "Dry run: nothing is submitted" in result.output
    assert (f"dry run: would submit all 4 rows in 1 job(s); 4 rows, ~{INPUT_TOKENS:,} input tokens; output tokens "
            f"not estimated") in result.output
    assert f"input only; est. {format_usd(cost)} at gemini-2.5-flash" in result.output
    assert f"at gemini-2.5-flash batch price of {PRICES_AS_OF}. Nothing was submitted." in result.output
    assert "submitted projects/" not in result.output
    # Nothing built, nothing submitted, no scratch table left.
    assert local_tables(root) == ["bqbatch_jobs", "reviews"]
    assert local_rows(root, "select count(*) from main.bqbatch_jobs") == [(0,)]
    batch = json.loads((root / "target" / "run_results.json").read_text())["results"][0]["batch"]
    assert batch["dry_run"] is True and batch["rows_to_submit"] == 4
    assert batch["estimated_input_tokens"] == INPUT_TOKENS and batch["estimated_cost_usd"] == pytest.approx(cost)


def test_dry_run_of_an_incremental_model_counts_only_the_rows_a_run_would_send(make_project, cli):
    root = _project(make_project, "incremental=true, unique_key='review_id'")
    ok(cli("build", "--project-dir", root))
    assert "would submit 0 of 4 rows" in ok(cli("run", "--project-dir", root, "--dry-run")).output

    seed = root / "seeds" / "reviews.csv"
    seed.write_text(seed.read_text().replace("bad lid", "the lid broke off after a week"))
    ok(cli("seed", "--project-dir", root))
    result = ok(cli("run", "--project-dir", root, "--dry-run"))
    tokens = math.ceil(len("Classify: the lid broke off after a week") / 4)
    assert f"would submit 1 of 4 rows new, changed or failed; 3 kept in 1 job(s); 1 rows, ~{tokens} input " \
           f"tokens + ~" in result.output
    assert "(the previous output's" in result.output  # output tokens estimated from the answers so far
    # The dry run changed nothing: the real run still sends that row.
    assert "1 of 4 rows new, changed or failed" in ok(cli("run", "--project-dir", root)).output


def test_dry_run_says_how_many_jobs_past_the_limit(make_project, cli):
    root = _project(make_project, "max_requests_per_job=3")
    ok(cli("seed", "--project-dir", root))
    assert "would submit all 4 rows in 2 job(s)" in ok(cli("run", "--project-dir", root, "--dry-run")).output


# -- guards --------------------------------------------------------------------------------------


def test_max_rows_refuses_to_submit_and_says_by_how_much(make_project, cli):
    root = _project(make_project, "max_rows=3")
    result = fails(cli("build", "--project-dir", root))
    assert "4 rows to submit exceed max_rows=3 by 1; nothing was submitted" in result.output
    assert "submitted projects/" not in result.output and "sentiment" not in local_tables(root)

    dry = fails(cli("run", "--project-dir", root, "--dry-run"))
    assert "A run would refuse:" in dry.output and "by 1;" in dry.output


def test_max_cost_usd_refuses_with_the_excess(make_project, cli):
    # A price of the project's own: $1 per million input tokens, so the 4 rows cost about INPUT_TOKENS micro-dollars.
    project = "name: demo\nprices:\n  gemini-2.5-flash: {input: 1.0, output: 1.0}\n"
    budget = INPUT_TOKENS / 2 / 1e6
    root = _project(make_project, f"max_cost_usd={budget}", project)
    result = fails(cli("build", "--project-dir", root))
    assert (f"the estimated cost {format_usd(INPUT_TOKENS / 1e6)} exceeds max_cost_usd={budget:g} by "
            f"{format_usd(INPUT_TOKENS / 2 / 1e6)} (100% over;") in result.output
    assert "price from bqbatch_project.yml" in result.output and "nothing was submitted" in result.output
    assert "sentiment" not in local_tables(root)


def test_max_cost_usd_within_budget_submits(make_project, cli):
    root = _project(make_project, "max_cost_usd=1.0")
    result = ok(cli("build", "--project-dir", root))
    assert "submitted projects/" in result.output


def test_a_budget_without_a_known_price_is_refused(make_project, cli):
    root = _project(make_project, "model='gemini-9-ultra', max_cost_usd=5")
    result = fails(cli("build", "--project-dir", root))
    assert "no batch price is known for model 'gemini-9-ultra'" in result.output
    assert "prices: {'gemini-9-ultra': {input: 0.15, output: 1.25}}" in result.output


# -- actual tokens and cost ------------------------------------------------------------------------


def test_run_results_and_status_show_the_actual_tokens_and_cost(make_project, cli):
    root = _project(make_project)
    result = ok(cli("build", "--project-dir", root))
    batch = json.loads((root / "target" / "run_results.json").read_text())["results"][-1]["batch"]
    price = price_for("gemini-2.5-flash")
    expected = (batch["prompt_tokens"] * price.input + (batch["output_tokens"] + batch["thoughts_tokens"])
                * price.output) / 1e6
    assert batch["prompt_tokens"] > 0 and batch["output_tokens"] > 0
    # Exactly what the output's responses say (the local predictor tallies them as it writes them).
    usage = [json.loads(r)["usageMetadata"] for (r,) in local_rows(root, "select response from sentiment")]
    assert (batch["prompt_tokens"], batch["output_tokens"], batch["thoughts_tokens"], batch["total_tokens"]) == (
        sum(u["promptTokenCount"] for u in usage), sum(u["candidatesTokenCount"] for u in usage), 0,
        sum(u["totalTokenCount"] for u in usage))
    assert batch["cost_usd"] == pytest.approx(expected, rel=1e-4)
    assert batch["price"] == f"gemini-2.5-flash batch price of {PRICES_AS_OF}"
    assert f"tokens {batch['prompt_tokens']:,} in" in result.output and "; cost $0.0" in result.output

    status = ok(cli("status", "--project-dir", root)).output.splitlines()
    header = status.index(next(line for line in status if line.startswith("model") and "tokens in" in line))
    assert status[header + 1].split()[:3] == ["sentiment", f"{batch['prompt_tokens']:,}",
                                             f"{batch['output_tokens'] + batch['thoughts_tokens']:,}"]


def test_prompts_past_a_long_context_threshold_are_priced_at_the_long_rates(make_project, cli):
    prices = {"input": 1, "output": 10, "long_context_above": 5, "long_input": 100, "long_output": 1000}
    root = _project(make_project, project_yml=f"name: demo\nprices:\n  gemini-2.5-flash: {json.dumps(prices)}\n")
    ok(cli("build", "--project-dir", root))
    batch = json.loads((root / "target" / "run_results.json").read_text())["results"][-1]["batch"]
    usage = [json.loads(r)["usageMetadata"] for (r,) in local_rows(root, "select response from sentiment")]
    long = [u for u in usage if u["promptTokenCount"] > 5]
    assert 0 < len(long) < len(usage)
    expected = sum(u["promptTokenCount"] * (100 if u in long else 1) + u["candidatesTokenCount"] * (1000 if u in long else 10)
                   for u in usage) / 1e6
    assert batch["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert batch["prompt_tokens"] == sum(u["promptTokenCount"] for u in usage)


# -- the price table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_id", "known"), [
    ("gemini-2.5-flash", "gemini-2.5-flash"),
    ("publishers/google/models/gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
    ("gemini-2.5-pro@001", "gemini-2.5-pro"),
    ("projects/p/locations/us-central1/models/123", None),
])
def test_model_ids_find_their_family_price(model_id, known):
    from bqbatch_sql.prices import BATCH_PRICES

    assert price_for(model_id) == (BATCH_PRICES[known] if known else None)


def test_project_prices_win_and_add_models():
    overrides = {"gemini-2.5-flash": {"input": 1, "output": 2},
                 "projects/p/locations/us-central1/models/123": {"input": 3, "output": 4}}
    assert price_for("gemini-2.5-flash", overrides).input == 1
    assert price_for("projects/p/locations/us-central1/models/123", overrides).output == 4


def test_batch_prices_are_half_the_online_list_price_and_long_prompts_cost_more():
    flash, pro = price_for("gemini-2.5-flash"), price_for("gemini-2.5-pro")
    assert (flash.input, flash.output) == (0.30 / 2, 2.50 / 2)
    assert pro.cost(1_000_000, 0) == pytest.approx(0.625)
    assert pro.cost(0, 0, long_input_tokens=1_000_000) == pytest.approx(1.25)
    assert Price(1, 10).cost(500_000, 100_000) == pytest.approx(1.5)


# -- the emulator: the estimate in BigQuery SQL --------------------------------------------------------


def test_dry_run_on_bigquery_counts_the_same_tokens(make_project, cli):
    from bqbatch_sql.emulator import Emulator

    root = _project(make_project)
    with Emulator(vertex_options={"pending_seconds": 0.02}) as emu:
        args = on_emulator(root, emu, "costs")
        ok(cli("seed", *args))
        result = ok(cli("run", *args, "--dry-run"))
    assert f"would submit all 4 rows in 1 job(s); 4 rows, ~{INPUT_TOKENS:,} input tokens" in result.output
