-- Refuels and drains of every source. `conformed` fixes the shape; a source adds
-- `int_<source>__fuel_events` (same columns, same order) with one `union all` line below.
-- A view: a union of tables costs its few readers less than writing it again each run.
{{ config(materialized='view', event_time='occurred_at') }}
with conformed as (
    select
        cast(null as varchar) as fuel_event_id,
        cast(null as varchar) as source,
        cast(null as varchar) as source_vehicle_id,
        cast(null as timestamptz) as occurred_at,
        cast(null as varchar) as event_type,
        cast(null as double) as volume_l,
        cast(null as double) as level_before_l,
        cast(null as double) as level_after_l,
        cast(null as double) as lat,
        cast(null as double) as lon,
        cast(null as varchar) as address
    where false
),

final as (
    select * from conformed
    union all select * from {{ ref('int_metrotec__fuel_events') }}
    union all select * from {{ ref('int_kt1__fuel_events') }}
    union all select * from {{ ref('int_autopi__fuel_events') }}
    -- sources: union all select * from ref('int_<source>__fuel_events')
)

select * from final
