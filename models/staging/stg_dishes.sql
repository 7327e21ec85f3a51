select
  dish_id,
  trim(dish) as dish,
  cuisine,
  servings
from {{ ref('dishes') }}
