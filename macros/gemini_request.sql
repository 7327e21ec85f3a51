{#-
  gemini_request: the `request` column of a batch_prediction model, one Gemini
  GenerateContentRequest per row, built in BigQuery SQL (sqlglot carries it to DuckDB).

  SQL expressions (evaluated per row):
    prompt                 the user's text, e.g. "'Give me a recipe for ' || dish"
    contents               earlier turns, either a list of (role, sql) pairs /
                           {'role', 'text', 'file_uri', 'mime_type'} dicts, or one SQL
                           expression of type JSON holding the whole contents array
    file_uri               a file for the last user turn, e.g. "gcs_uri" (needs mime_type
                           or mime_type_sql)
    system_instruction_sql a per-row system instruction
    mime_type_sql          a per-row MIME type for file_uri
  Constants (written into the SQL as literals):
    system_instruction, mime_type, temperature, max_output_tokens, top_p, top_k,
    candidate_count, seed, stop_sequences, response_mime_type,
    response_schema (dict or JSON string), safety_settings (list of dicts),
    labels (dict), generation_config (dict of any further generationConfig keys)

  SQL-expression arguments are parsed at render time, so prompt='Summarize this'
  (text where SQL is expected) fails here, naming the argument and the fix.
  A NULL prompt yields {"text": null}: the query still runs, and the request check
  names the row (or, with on_invalid='skip', the row alone gets a failed status).
-#}
{%- macro gemini_request(prompt=none, system_instruction=none, temperature=none, max_output_tokens=none, top_p=none, top_k=none, response_schema=none, response_mime_type=none, safety_settings=none, labels=none, contents=none, file_uri=none, mime_type=none, system_instruction_sql=none, mime_type_sql=none, candidate_count=none, seed=none, stop_sequences=none, generation_config=none) -%}
{%- if contents is string and (prompt is not none or file_uri is not none) -%}
  {{- raise_error("gemini_request: contents is a SQL expression, so it must hold every turn; add the last user turn to it instead of passing prompt= or file_uri=, or pass contents as a list of (role, sql) pairs.") -}}
{%- endif -%}
{%- if prompt is none and contents is none and file_uri is none -%}
  {{- raise_error("gemini_request: nothing to send; pass prompt= (a SQL expression such as \"'Summarize: ' || body\"), contents=, or file_uri=.") -}}
{%- endif -%}
{%- if file_uri is none and (mime_type is not none or mime_type_sql is not none) -%}
  {{- raise_error("gemini_request: mime_type/mime_type_sql describe file_uri; pass file_uri= too, or drop them.") -}}
{%- endif -%}
{%- if system_instruction is not none and system_instruction_sql is not none -%}
  {{- raise_error("gemini_request: pass system_instruction (a constant) or system_instruction_sql (a SQL expression), not both.") -}}
{%- endif -%}
{%- set turns = [] -%}
{%- if contents is not none and contents is not string -%}
  {%- set turns = bqbatch_turns(contents) -%}
{%- endif -%}
{%- if prompt is not none or file_uri is not none -%}
  {%- set _ = prompt is none or bqbatch_sql_expr(prompt, 'prompt') -%}
  {%- set _ = file_uri is none or bqbatch_sql_expr(file_uri, 'file_uri') -%}
  {%- set _ = mime_type_sql is none or bqbatch_sql_expr(mime_type_sql, 'mime_type_sql') -%}
  {%- set turns = turns + [{'role': 'user', 'text': prompt, 'file_uri': file_uri, 'mime_type': mime_type, 'mime_type_sql': mime_type_sql}] -%}
{%- endif -%}
{%- set fields = [] -%}
{%- if contents is string -%}
  {%- set _ = fields.append("'contents', " ~ bqbatch_sql_expr(contents, 'contents')) -%}
{%- else -%}
  {#- A file part goes before the text part, as Gemini's docs advise. -#}
  {%- set sql_turns = [] -%}
  {%- for turn in turns -%}
    {%- set parts = [] -%}
    {%- if turn.file_uri is not none -%}
      {%- if turn.mime_type is not none and turn.mime_type_sql is not none -%}
        {{- raise_error("gemini_request: pass mime_type (a constant) or mime_type_sql (a SQL expression), not both.") -}}
      {%- elif turn.mime_type is not none -%}
        {%- set mime = sql_string(turn.mime_type) -%}
      {%- elif turn.mime_type_sql is not none -%}
        {%- set mime = turn.mime_type_sql -%}
      {%- else -%}
        {{- raise_error("gemini_request: file_uri needs mime_type (a constant such as 'application/pdf') or mime_type_sql (a SQL expression).") -}}
      {%- endif -%}
      {%- set _ = parts.append("JSON_OBJECT('fileData', JSON_OBJECT('fileUri', " ~ turn.file_uri ~ ", 'mimeType', " ~ mime ~ "))") -%}
    {%- endif -%}
    {%- if turn.text is not none -%}
      {%- set _ = parts.append("JSON_OBJECT('text', " ~ turn.text ~ ")") -%}
    {%- endif -%}
    {%- set _ = sql_turns.append("JSON_OBJECT('role', " ~ sql_string(turn.role) ~ ", 'parts', JSON_ARRAY(" ~ parts | join(', ') ~ "))") -%}
  {%- endfor -%}
  {%- set _ = fields.append("'contents', JSON_ARRAY(" ~ sql_turns | join(', ') ~ ")") -%}
{%- endif -%}
{%- if system_instruction is not none -%}
  {%- set _ = fields.append("'systemInstruction', JSON_OBJECT('parts', JSON_ARRAY(JSON_OBJECT('text', " ~ sql_string(system_instruction) ~ ")))") -%}
{%- elif system_instruction_sql is not none -%}
  {%- set _ = fields.append("'systemInstruction', JSON_OBJECT('parts', JSON_ARRAY(JSON_OBJECT('text', " ~ bqbatch_sql_expr(system_instruction_sql, 'system_instruction_sql') ~ ")))") -%}
{%- endif -%}
{%- set config = bqbatch_generation_config(temperature=temperature, max_output_tokens=max_output_tokens, top_p=top_p, top_k=top_k, candidate_count=candidate_count, seed=seed, stop_sequences=stop_sequences, response_mime_type=response_mime_type, response_schema=response_schema, extra=generation_config) -%}
{%- if config is not none -%}
  {%- set _ = fields.append("'generationConfig', " ~ sql_json(config)) -%}
{%- endif -%}
{%- if safety_settings is not none -%}
  {%- set _ = fields.append("'safetySettings', " ~ sql_json(bqbatch_safety_settings(safety_settings))) -%}
{%- endif -%}
{%- if labels is not none -%}
  {%- set _ = fields.append("'labels', " ~ sql_json(bqbatch_labels(labels))) -%}
{%- endif -%}
JSON_OBJECT({{ fields | join(', ') }})
{%- endmacro -%}
