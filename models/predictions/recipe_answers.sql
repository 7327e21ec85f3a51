-- Free text: one recipe per dish.
select
  dish_id,
  dish,
  {{ gemini_request(
       prompt="'Give me a recipe for ' || dish || ' that serves ' || CAST(servings AS STRING) || '.'",
       system_instruction='You are a chef. Answer with a short ingredient list and numbered steps.',
       temperature=0.2,
       max_output_tokens=1024
  ) }} as request
from {{ ref('stg_dishes') }}
