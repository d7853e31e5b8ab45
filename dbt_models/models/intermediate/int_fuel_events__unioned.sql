-- Refuels and drains of every source. `conformed` fixes the shape; a source adds
-- `int_<source>__fuel_events` (same columns, same order) as an import CTE and one `union all`
-- line at the marker below.
-- A view: a union of tables costs its few readers less than writing it again each run.
{{ config(materialized='view', event_time='occurred_at') }}

with metrotec as (
    select * from {{ ref('int_metrotec__fuel_events') }}
),

kt1 as (
    select * from {{ ref('int_kt1__fuel_events') }}
),

autopi as (
    select * from {{ ref('int_autopi__fuel_events') }}
),

conformed as (
    {{ empty_relation({
        'fuel_event_id': 'varchar',
        'source': 'varchar',
        'source_vehicle_id': 'varchar',
        'occurred_at': 'timestamptz',
        'event_type': 'varchar',
        'volume_l': 'double',
        'level_before_l': 'double',
        'level_after_l': 'double',
        'lat': 'double',
        'lon': 'double',
        'address': 'varchar',
    }) }}
),

final as (
    select * from conformed
    union all select * from metrotec
    union all select * from kt1
    union all select * from autopi
    -- sources: union all select * from <source>
)

select * from final
