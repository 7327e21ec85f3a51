-- Multi-turn contents built per row. The roles come from data, so a bad one
-- (thread 3: 'tester') is only known at prediction time. on_invalid='submit' sends
-- every row as Vertex would receive it: that row ends with Vertex's status text, the
-- others with responses; nothing is lost.
{{ config(on_invalid='submit') }}
select
  thread_id,
  {{ gemini_request(
       contents="JSON_ARRAY(
         JSON_OBJECT('role', first_role, 'parts', JSON_ARRAY(JSON_OBJECT('text', first_message))),
         JSON_OBJECT('role', 'model', 'parts', JSON_ARRAY(JSON_OBJECT('text', 'Thanks for reaching out! Let me look into that.'))),
         JSON_OBJECT('role', 'user', 'parts', JSON_ARRAY(JSON_OBJECT('text', customer_follow_up))))",
       system_instruction='You are a friendly support agent. Reply in two sentences.'
  ) }} as request
from {{ ref('support_threads') }}
