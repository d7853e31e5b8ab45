-- Idle periods (engine on, speed 0, at least the source's threshold) of every source.
-- `conformed` fixes the shape; a source adds `int_<source>__idle_periods` (same columns, same
-- order; a `day` an incremental model keeps is left out) with one `union all` line at the
-- marker below.
-- A view: a union of tables costs its few readers less than writing it again each run.
{{ config(materialized='view', event_time='started_at') }}
with conformed as (
    select
        cast(null as varchar) as idle_period_id,
        cast(null as varchar) as source,
        cast(null as varchar) as source_vehicle_id,
        cast(null as timestamptz) as started_at,
        cast(null as timestamptz) as ended_at,
        cast(null as double) as duration_s,
        cast(null as double) as lat,
        cast(null as double) as lon,
        cast(null as varchar) as address,
        cast(null as varchar) as trip_id
    where false
),

final as (
    select * from conformed
    union all select * exclude (day) from {{ ref('int_kt1__idle_periods') }}
    union all select * exclude (day) from {{ ref('int_metrotec__idle_periods') }}
    union all select * from {{ ref('int_autopi__idle_periods') }}
    -- sources: union all select * from ref('int_<source>__idle_periods')
)

select * from final
