-- Structured output: the parsed view gets one typed column per schema property.
select
  review_id,
  product,
  rating,
  {{ gemini_request(
       prompt="'Classify this product review. Review: ' || review_text",
       system_instruction='You label customer reviews for a kitchen appliance shop.',
       temperature=0,
       response_mime_type='application/json',
       response_schema={
         'type': 'OBJECT',
         'properties': {
           'sentiment': {'type': 'STRING', 'enum': ['positive', 'neutral', 'negative']},
           'score': {'type': 'NUMBER'},
           'topics': {'type': 'ARRAY', 'items': {'type': 'STRING'}},
           'needs_follow_up': {'type': 'BOOLEAN'}
         },
         'required': ['sentiment', 'score', 'topics', 'needs_follow_up']
       }
  ) }} as request
from {{ ref('stg_reviews') }}
