{#- One display name per fleet vehicle (dim_vehicles has a row per source identity), as a CTE
    the worked questions in analyses/ paste in, so each compiles to a query that stands alone. -#}
{%- macro vehicle_names() -%}
names as (
    select vehicle_id, min(display_name) as display_name
    from {{ ref('dim_vehicles') }}
    group by vehicle_id
)
{%- endmacro %}
