-- One row per kt1 asset (vehicle) seen in telemetry or trips, with the name it last had.
-- A view over two staging tables: it picks each asset's newest name across days.
{{ config(materialized='view') }}

with telemetry as (
    select * from {{ ref('stg_kt1__telemetry') }}
),

trips as (
    select * from {{ ref('stg_kt1__trips') }}
),

named as (
    select asset_id, asset_name, recorded_at as seen_at from telemetry
    union all
    select source_vehicle_id, asset_name, started_at from trips
),

final as (
    select
        asset_id,
        coalesce(arg_max(asset_name, seen_at) filter (where asset_name is not null), asset_id)
            as asset_name,
        min(seen_at) as first_seen_at,
        max(seen_at) as last_seen_at
    from named
    group by asset_id
)

select * from final
