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
{%- set columns = [] -%}
{%- for name in passthrough -%}
  {%- set _ = columns.append(sql_ident(name)) -%}
{%- endfor -%}
{%- set _ = columns.append("`__bqbatch_text` AS `text`") -%}
{%- set _ = columns.append("JSON_VALUE(`response`, '$.candidates[0].finishReason') AS `finish_reason`") -%}
{%- set _ = columns.append("SAFE_CAST(JSON_VALUE(`response`, '$.usageMetadata.promptTokenCount') AS INT64) AS `prompt_tokens`") -%}
{%- set _ = columns.append("SAFE_CAST(JSON_VALUE(`response`, '$.usageMetadata.candidatesTokenCount') AS INT64) AS `output_tokens`") -%}
{%- set _ = columns.append("SAFE_CAST(JSON_VALUE(`response`, '$.usageMetadata.totalTokenCount') AS INT64) AS `total_tokens`") -%}
{%- set _ = columns.append("SAFE_CAST(JSON_VALUE(`__bqbatch_error`, '$.error.code') AS INT64) AS `error_code`") -%}
{%- set _ = columns.append("COALESCE(JSON_VALUE(`__bqbatch_error`, '$.error.message'), NULLIF(`status`, '')) AS `error_message`") -%}
{%- for column in typed -%}
  {%- if column.type == 'STRING' -%}
    {%- set value = "JSON_VALUE(`__bqbatch_output`, " ~ column.path ~ ")" -%}
  {%- elif column.type == 'JSON' -%}
    {%- set value = "JSON_QUERY(`__bqbatch_output`, " ~ column.path ~ ")" -%}
  {%- elif column.type == 'BOOL' -%}
    {%- set value = "CASE JSON_VALUE(`__bqbatch_output`, " ~ column.path ~ ") WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END" -%}
  {%- else -%}
    {%- set value = "SAFE_CAST(JSON_VALUE(`__bqbatch_output`, " ~ column.path ~ ") AS " ~ column.type ~ ")" -%}
  {%- endif -%}
  {%- set _ = columns.append(value ~ " AS " ~ sql_ident(column.name)) -%}
{%- endfor -%}
{#-
  Text: most answers have one or two parts, read directly. Only longer ones go
  through the per-row subquery: DuckDB turns that subquery into a join costing about
  5 s per million rows, so its UNNEST gets NULL (no rows) unless a third part exists.
  BigQuery runs both forms in the same single scan.
-#}
{%- set part = "IF(COALESCE(JSON_VALUE(`__bqbatch_parts`, '$[{i}].thought'), 'false') = 'true', NULL, JSON_VALUE(`__bqbatch_parts`, '$[{i}].text'))" -%}
{%- set short_text = "CONCAT(COALESCE(" ~ part.replace('{i}', '0') ~ ", ''), COALESCE(" ~ part.replace('{i}', '1') ~ ", ''))" -%}
{%- set long_text = "(SELECT STRING_AGG(JSON_VALUE(`__bqbatch_part`, '$.text'), '' ORDER BY `__bqbatch_pos`) FROM UNNEST(JSON_QUERY_ARRAY(`__bqbatch_long_parts`)) AS `__bqbatch_part` WITH OFFSET AS `__bqbatch_pos` WHERE COALESCE(JSON_VALUE(`__bqbatch_part`, '$.thought'), 'false') <> 'true')" -%}
{%- set text = "NULLIF(IF(`__bqbatch_long_parts` IS NULL,\n      " ~ short_text ~ ",\n      " ~ long_text ~ "), '')" -%}
{%- set error = "SAFE.PARSE_JSON(REGEXP_EXTRACT(`status`, " ~ sql_string('(?s)\\{.*\\}') ~ "))" -%}
{%- set rows = "SELECT *, JSON_QUERY(`response`, '$.candidates[0].content.parts') AS `__bqbatch_parts`, IF(JSON_QUERY(`response`, '$.candidates[0].content.parts[2]') IS NULL, NULL, JSON_QUERY(`response`, '$.candidates[0].content.parts')) AS `__bqbatch_long_parts`\n    FROM " ~ relation -%}
{%- set texts = "SELECT *,\n    " ~ text ~ " AS `__bqbatch_text`,\n    " ~ error ~ " AS `__bqbatch_error`\n  FROM (\n    " ~ rows ~ "\n  ) AS `__bqbatch_rows`" -%}
SELECT
  {{ columns | join(',\n  ') }}
{% if typed -%}
FROM (
  SELECT *, SAFE.PARSE_JSON(`__bqbatch_text`) AS `__bqbatch_output`
  FROM (
  {{ texts }}
  ) AS `__bqbatch_texts`
) AS `__bqbatch_parsed`
{%- else -%}
FROM (
  {{ texts }}
) AS `__bqbatch_parsed`
{%- endif -%}
{%- endmacro -%}
