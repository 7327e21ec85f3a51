{#-
  parsed_response_view: the SELECT behind `<model>__parsed`, run by the default
  post-hook over a batch prediction output table (BigQuery SQL; sqlglot carries it to
  DuckDB). Everything is read in the warehouse; no row goes through Python.

    relation             the output table, already quoted SQL
    passthrough_columns  the request table's columns other than request (names)
    response_schema      the requests' responseSchema (dict or JSON string), or none

  Columns: the pass-through columns, then
    text            the first candidate's text parts joined ('' between them, thought parts left out)
    finish_reason   candidates[0].finishReason
    prompt_tokens / output_tokens / total_tokens   usageMetadata counts, INT64
    error_code / error_message   read from the JSON inside `status`
                    (e.g. 'Bad Request: {"error": {"code": 400, "message": ...}}');
                    error_message falls back to the whole status when it holds no JSON
  and, with a response_schema, one typed column per top-level property, read from
  `text` as JSON; a property named like another column becomes output_<name>.
  A text that is not valid JSON gives NULLs there, never an error.
-#}
{%- macro parsed_response_view(relation, passthrough_columns, response_schema=none) -%}
{%- set fixed = ['text', 'finish_reason', 'prompt_tokens', 'output_tokens', 'total_tokens', 'error_code', 'error_message'] -%}
{%- set batch_columns = ['request', 'response', 'status', 'processed_time'] -%}
{%- set passthrough = [] -%}
{%- for name in passthrough_columns if name | lower not in batch_columns -%}
  {%- if name | lower in fixed -%}
    {{- raise_error("parsed_response_view: pass-through column '" ~ name ~ "' has the name of a parsed column (" ~ fixed | join(', ') ~ "); rename it in the model, e.g. `" ~ name ~ " as input_" ~ name ~ "`.") -}}
  {%- endif -%}
  {%- set _ = passthrough.append(name) -%}
{%- endfor -%}
{%- set typed = bqbatch_response_schema_columns(response_schema, passthrough + fixed) -%}
{#-
  Stages, innermost first; each reads the columns of the one inside it. BigQuery runs
  them in one scan; the shapes below are what makes DuckDB fast too (1M local-predictor
  responses, every column on 2 cores: 3.4 s before, 0.8 s now; plain `->>` of the text
  and the prompt tokens alone: 0.4 s; bench/bench_parsed_view.py).

  reads   Every value the view needs from `response`, as plain `JSON_VALUE(...) AS name`
          (and one `JSON_QUERY(...) IS NOT NULL AS name`) items of one SELECT list: the
          form whose reads of one column the DuckDB compiler merges into a single parse
          (compile_duckdb_json.shared_json_reads). Apart, each read parses the whole
          response again, about 0.5 s of CPU per million. The first `direct` parts are
          read one by one (nearly every answer: one text part, or a thought and a text);
          a part past them sends the row to the subquery over all parts.
  texts   The text: the direct parts joined, thought parts left out, or for rows with
          more parts, every part through a subquery over the parts array (on DuckDB,
          list functions computed for those rows only, not a join over all rows:
          compile_duckdb_json.json_array_string_agg). The error JSON is read here, from
          the status of failed rows only (successful rows have an empty status).
  output  With a response_schema: the text as JSON, parsed only when it starts as an
          object (a failed parse costs DuckDB seconds per million prose answers), then
          its properties as one more set of merged reads. On DuckDB a text that is
          itself JSON costs one more parse of the response, to tell it from an object.
  The last SELECT names and casts the columns.
-#}
{%- set direct = 2 -%}
{%- set parts_path = '$.candidates[0].content.parts' -%}
{%- set reads = [] -%}
{%- for i in range(direct) -%}
  {%- set _ = reads.append("JSON_VALUE(`response`, '" ~ parts_path ~ "[" ~ i ~ "].text') AS `__bqbatch_text_" ~ i ~ "`") -%}
  {%- set _ = reads.append("JSON_VALUE(`response`, '" ~ parts_path ~ "[" ~ i ~ "].thought') AS `__bqbatch_thought_" ~ i ~ "`") -%}
{%- endfor -%}
{%- set _ = reads.append("JSON_QUERY(`response`, '" ~ parts_path ~ "[" ~ direct ~ "]') IS NOT NULL AS `__bqbatch_more_parts`") -%}
{%- set _ = reads.append("JSON_VALUE(`response`, '$.candidates[0].finishReason') AS `__bqbatch_finish_reason`") -%}
{%- set _ = reads.append("JSON_VALUE(`response`, '$.usageMetadata.promptTokenCount') AS `__bqbatch_prompt_tokens`") -%}
{%- set _ = reads.append("JSON_VALUE(`response`, '$.usageMetadata.candidatesTokenCount') AS `__bqbatch_output_tokens`") -%}
{%- set _ = reads.append("JSON_VALUE(`response`, '$.usageMetadata.totalTokenCount') AS `__bqbatch_total_tokens`") -%}
{%- set _ = reads.append("IF(`status` <> '', SAFE.PARSE_JSON(REGEXP_EXTRACT(`status`, " ~ sql_string('(?s)\\{.*\\}') ~ ")), NULL) AS `__bqbatch_error`") -%}
{%- set short_parts = [] -%}
{%- for i in range(direct) -%}
  {%- set _ = short_parts.append("IF(`__bqbatch_thought_" ~ i ~ "` = 'true', '', COALESCE(`__bqbatch_text_" ~ i ~ "`, ''))") -%}
{%- endfor -%}
{%- set all_parts = "(SELECT STRING_AGG(JSON_VALUE(`__bqbatch_part`, '$.text'), '' ORDER BY `__bqbatch_pos`) FROM UNNEST(JSON_QUERY_ARRAY(`response`, '" ~ parts_path ~ "')) AS `__bqbatch_part` WITH OFFSET AS `__bqbatch_pos` WHERE COALESCE(JSON_VALUE(`__bqbatch_part`, '$.thought'), 'false') <> 'true')" -%}
{%- set columns = [] -%}
{%- for name in passthrough -%}
  {%- set _ = columns.append(sql_ident(name)) -%}
{%- endfor -%}
{%- set _ = columns.append("NULLIF(`__bqbatch_text`, '') AS `text`") -%}
{%- set _ = columns.append("`__bqbatch_finish_reason` AS `finish_reason`") -%}
{%- set _ = columns.append("SAFE_CAST(`__bqbatch_prompt_tokens` AS INT64) AS `prompt_tokens`") -%}
{%- set _ = columns.append("SAFE_CAST(`__bqbatch_output_tokens` AS INT64) AS `output_tokens`") -%}
{%- set _ = columns.append("SAFE_CAST(`__bqbatch_total_tokens` AS INT64) AS `total_tokens`") -%}
{%- set _ = columns.append("SAFE_CAST(`__bqbatch_error_code` AS INT64) AS `error_code`") -%}
{%- set _ = columns.append("COALESCE(`__bqbatch_error_message`, NULLIF(`status`, '')) AS `error_message`") -%}
{%- set props = [] -%}
{%- for column in typed -%}
  {%- set prop = "`__bqbatch_property_" ~ loop.index0 ~ "`" -%}
  {%- if column.type == 'JSON' -%}
    {%- set value = "JSON_QUERY(`__bqbatch_output`, " ~ column.path ~ ")" -%}
  {%- else -%}
    {%- set _ = props.append("JSON_VALUE(`__bqbatch_output`, " ~ column.path ~ ") AS " ~ prop) -%}
    {%- if column.type == 'STRING' -%}
      {%- set value = prop -%}
    {%- elif column.type == 'BOOL' -%}
      {%- set value = "CASE " ~ prop ~ " WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END" -%}
    {%- else -%}
      {%- set value = "SAFE_CAST(" ~ prop ~ " AS " ~ column.type ~ ")" -%}
    {%- endif -%}
  {%- endif -%}
  {%- set _ = columns.append(value ~ " AS " ~ sql_ident(column.name)) -%}
{%- endfor -%}
{%- set stage -%}
SELECT *,
        {{ reads | join(',\n        ') }}
      FROM {{ relation }}
{%- endset -%}
{%- set stage -%}
SELECT *,
      IF(`__bqbatch_more_parts`,
        {{ all_parts }},
        CONCAT({{ short_parts | join(', ') }})) AS `__bqbatch_text`,
      JSON_VALUE(`__bqbatch_error`, '$.error.code') AS `__bqbatch_error_code`,
      JSON_VALUE(`__bqbatch_error`, '$.error.message') AS `__bqbatch_error_message`
    FROM (
      {{ stage }}
    ) AS `__bqbatch_reads`
{%- endset -%}
{%- if typed -%}
{%- set stage -%}
SELECT *, IF(REGEXP_CONTAINS(`__bqbatch_text`, {{ sql_string('^\\s*\\{') }}), SAFE.PARSE_JSON(`__bqbatch_text`), NULL) AS `__bqbatch_output`
    FROM (
    {{ stage }}
    ) AS `__bqbatch_texts`
{%- endset -%}
{%- if props -%}
{%- set stage -%}
SELECT *,
    {{ props | join(',\n    ') }}
  FROM (
  {{ stage }}
  ) AS `__bqbatch_with_output`
{%- endset -%}
{%- endif -%}
{%- endif -%}
SELECT
  {{ columns | join(',\n  ') }}
FROM (
  {{ stage }}
) AS `__bqbatch_parsed`
{%- endmacro -%}
