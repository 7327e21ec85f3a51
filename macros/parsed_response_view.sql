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
{%- set _ = columns.append("JSON_VALUE(`__bqbatch_candidate`, '$.finishReason') AS `finish_reason`") -%}
{%- set _ = columns.append("SAFE_CAST(JSON_VALUE(`__bqbatch_usage`, '$.promptTokenCount') AS INT64) AS `prompt_tokens`") -%}
{%- set _ = columns.append("SAFE_CAST(JSON_VALUE(`__bqbatch_usage`, '$.candidatesTokenCount') AS INT64) AS `output_tokens`") -%}
{%- set _ = columns.append("SAFE_CAST(JSON_VALUE(`__bqbatch_usage`, '$.totalTokenCount') AS INT64) AS `total_tokens`") -%}
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
  Stages, innermost first. Each JSON function parses its whole input, so the
  response is cut once into its small pieces (candidate, usage) and the rest reads
  those. Text: answers of up to `direct` parts (nearly all: one text part, or a
  thought and a text) are read part by part, each next part only when it exists.
  Longer ones go through a per-row subquery; DuckDB turns that subquery into a join
  costing seconds per million rows, so its UNNEST gets NULL (no rows) for the others.
  BigQuery runs either form in the same single scan.
-#}
{%- set direct = 4 -%}
{%- set part = "IF(COALESCE(JSON_VALUE(`__bqbatch_parts`, '$[{i}].thought'), 'false') = 'true', NULL, JSON_VALUE(`__bqbatch_parts`, '$[{i}].text'))" -%}
{%- set ns = namespace(text="COALESCE(" ~ part.replace('{i}', (direct - 1) | string) ~ ", '')") -%}
{%- for i in range(direct - 2, -1, -1) -%}
  {%- set ns.text = "CONCAT(COALESCE(" ~ part.replace('{i}', i | string) ~ ", ''), IF(JSON_QUERY(`__bqbatch_parts`, '$[" ~ (i + 1) ~ "]') IS NULL, '', " ~ ns.text ~ "))" -%}
{%- endfor -%}
{%- set short_text = ns.text -%}
{%- set long_text = "(SELECT STRING_AGG(JSON_VALUE(`__bqbatch_part`, '$.text'), '' ORDER BY `__bqbatch_pos`) FROM UNNEST(JSON_QUERY_ARRAY(`__bqbatch_long_parts`)) AS `__bqbatch_part` WITH OFFSET AS `__bqbatch_pos` WHERE COALESCE(JSON_VALUE(`__bqbatch_part`, '$.thought'), 'false') <> 'true')" -%}
{%- set pieces -%}
SELECT *,
        JSON_QUERY(`response`, '$.candidates[0]') AS `__bqbatch_candidate`,
        JSON_QUERY(`response`, '$.usageMetadata') AS `__bqbatch_usage`,
        SAFE.PARSE_JSON(REGEXP_EXTRACT(`status`, {{ sql_string('(?s)\\{.*\\}') }})) AS `__bqbatch_error`
      FROM {{ relation }}
{%- endset -%}
{%- set parts -%}
SELECT *,
      JSON_QUERY(`__bqbatch_candidate`, '$.content.parts') AS `__bqbatch_parts`,
      IF(JSON_QUERY(`__bqbatch_candidate`, '$.content.parts[{{ direct }}]') IS NULL, NULL, JSON_QUERY(`__bqbatch_candidate`, '$.content.parts')) AS `__bqbatch_long_parts`
    FROM (
      {{ pieces }}
    ) AS `__bqbatch_pieces`
{%- endset -%}
{%- set texts -%}
SELECT *,
    NULLIF(IF(`__bqbatch_long_parts` IS NULL,
      {{ short_text }},
      {{ long_text }}), '') AS `__bqbatch_text`
  FROM (
    {{ parts }}
  ) AS `__bqbatch_with_parts`
{%- endset -%}
{#- Only a text that starts as an object can hold the properties; the check also spares
    DuckDB a failed parse per prose answer, which costs seconds per million rows. -#}
SELECT
  {{ columns | join(',\n  ') }}
{% if typed -%}
FROM (
  SELECT *, IF(REGEXP_CONTAINS(`__bqbatch_text`, {{ sql_string('^\\s*\\{') }}), SAFE.PARSE_JSON(`__bqbatch_text`), NULL) AS `__bqbatch_output`
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
