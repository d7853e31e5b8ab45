{#- The latest landing of each item of `relation`: one row per `key` (a column, or several
    separated by commas), the first in `order`. A source lands an item again when it is
    redelivered or re-pulled; staging keeps only the newest copy. `order` defaults to var
    latest_landing_order (kt1's batches: newest landing, then newest fetch, then the later item
    of a batch), which the raw checks read too; other sources pass their own. -#}
{% macro latest_landing(relation, key, order=none) -%}
    select *
    from {{ relation }}
    qualify row_number() over (
        partition by {{ key }}
        order by {{ order or var('latest_landing_order') }}
    ) = 1
{%- endmacro %}

{#- The columns that say which kt1 landing a staging row came from: what latest_landing_order
    sorts by, kept on every kt1 staging model. -#}
{% macro kt1_landing_columns() -%}
    batch_id,
        item_index,
        cast(fetched_at as timestamptz) as fetched_at,
        cast(landed_at as timestamptz) as landed_at,
        cast(day as date) as day
{%- endmacro %}
