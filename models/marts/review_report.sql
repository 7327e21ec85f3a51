-- Downstream of a parsed view: plain SQL over typed columns.
select
  product,
  count(*) as reviews,
  countif(sentiment = 'positive') as positive,
  countif(sentiment = 'negative') as negative,
  round(avg(score), 2) as mean_score,
  countif(error_code is not null) as failed
from {{ ref('review_sentiment__parsed') }}
group by product
