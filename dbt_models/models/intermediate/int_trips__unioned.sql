-- Trips of every source in one shape, before vehicle identities are resolved.
-- A source adds its conformed model `int_<source>__trips` (same columns, same order) as an
-- import CTE and one `union all` line at the marker below.
-- A view: a union of tables costs its few readers less than writing it again each run.
{{ config(materialized='view', event_time='started_at') }}

with avl_trips as (
    select * from {{ ref('stg_avl__trips') }}
),

kt1 as (
    select * from {{ ref('int_kt1__trips') }}
),

metrotec as (
    select * from {{ ref('int_metrotec__trips') }}
),

autopi as (
    select * from {{ ref('int_autopi__trips') }}
),

avl as (
    select
        avl_trip_id as trip_id,
        'avl' as source,
        source_trip_id,
        source_vehicle_id,
        started_at,
        ended_at,
        duration_s,
        duration_s - idle_s as driving_s,
        idle_s,
        distance_km,
        max_speed_kmh,
        fuel_used_l,
        fuel_cost,
        -- AVL's `fuel` is its own figure (0 meant "not configured" and is NULL by now).
        case when fuel_used_l is not null then 'reported' end as fuel_source,
        start_lat,
        start_lon,
        start_address,
        end_lat,
        end_lon,
        end_address
    from avl_trips
),

final as (
    select * from avl
    union all select * from kt1
    union all select * from metrotec
    union all select * from autopi
    -- sources: union all select * from <source>
)

select * from final
