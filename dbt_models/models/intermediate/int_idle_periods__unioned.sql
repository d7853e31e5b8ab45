-- Idle periods (engine on, speed 0, at least the source's threshold) of every source.
-- `conformed` fixes the shape; a source adds `int_<source>__idle_periods` (same columns, same
-- order; a `day` an incremental model keeps is left out) as an import CTE and one `union all`
-- line at the marker below.
-- A view: a union of tables costs its few readers less than writing it again each run.
{{ config(materialized='view', event_time='started_at') }}

with kt1 as (
    select * exclude (day) from {{ ref('int_kt1__idle_periods') }}
),

metrotec as (
    select * exclude (day) from {{ ref('int_metrotec__idle_periods') }}
),

autopi as (
    select * from {{ ref('int_autopi__idle_periods') }}
),

conformed as (
    {{ empty_relation({
        'idle_period_id': 'varchar',
        'source': 'varchar',
        'source_vehicle_id': 'varchar',
        'started_at': 'timestamptz',
        'ended_at': 'timestamptz',
        'duration_s': 'double',
        'lat': 'double',
        'lon': 'double',
        'address': 'varchar',
        'trip_id': 'varchar',
    }) }}
),

final as (
    select * from conformed
    union all select * from kt1
    union all select * from metrotec
    union all select * from autopi
    -- sources: union all select * from <source>
)

select * from final
