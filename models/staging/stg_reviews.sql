select review_id, product, rating, review_text
from {{ ref('reviews') }}
where rating >= {{ var('min_rating') }}
