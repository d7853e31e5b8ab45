-- One row per Metrotec stop: halted at started_at, engine off at engine_stopped_at, moved off
-- at ended_at. The engine ran for running_s (the API's runningTime "HH:MM:SS").
{{ daily_table('day') }}

with source as (
    {{ lake_source('metrotec', 'stops', {
        '"ID"': 'bigint',
        '"objectID"': 'varchar',
        '"startTime"': 'timestamptz',
        '"stopTime"': 'timestamptz',
        '"stopEnd"': 'timestamptz',
        '"runningTime"': 'varchar',
        'input': 'bigint',
        'status': 'bigint',
        'distance': 'double',
        'fuel': 'double',
        'running_time_s': 'bigint',
        'fuel_is_code': 'boolean',
        'extracted_at': 'timestamptz',
        'day': 'date',
    }) }}
),

renamed as (
    select
        "objectID" || '|' || cast("ID" as varchar) as source_stop_id,
        "objectID" as source_vehicle_id,
        cast("startTime" as timestamptz) as started_at,
        cast("stopTime" as timestamptz) as engine_stopped_at,
        cast("stopEnd" as timestamptz) as ended_at,
        "runningTime" as running_time,
        cast(running_time_s as double) as running_s,
        coalesce(running_time_s > 0, false) as is_engine_running,
        input,
        (input & 1) = 1 as is_ignition_on,
        status,
        distance as distance_km,
        fuel as fuel_raw,
        case when not coalesce(fuel_is_code, false) then fuel end as fuel_l,
        coalesce(fuel_is_code, false) as is_fuel_code,
        extracted_at,
        cast(day as date) as day
    from source
),

final as (
    {{ latest_landing('renamed', 'source_stop_id', 'extracted_at desc') }}
)

select * from final
