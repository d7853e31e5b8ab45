-- One row per Metrotec fuel level reading (vehicle, second), in UTC. `level` is in the unit
-- the vehicle reports (litres, or percent when its isPercent is set; see int_ models).
{{ daily_table('day') }}

with source as (
    {{ lake_source('metrotec', 'fuel_levels', {
        '"objectID"': 'varchar',
        '"GMTime"': 'timestamptz',
        'fuel': 'double',
        'lat': 'double',
        'lon': 'double',
        'input': 'bigint',
        'location': 'varchar',
        'fuel_is_code': 'boolean',
        'extracted_at': 'timestamptz',
        'day': 'date',
    }) }}
),

renamed as (
    select
        md5(
            "objectID" || '|'
            || strftime(cast("GMTime" as timestamptz) at time zone 'UTC', '%Y-%m-%dT%H:%M:%S')
        ) as fuel_reading_id,
        "objectID" as source_vehicle_id,
        cast("GMTime" as timestamptz) as recorded_at,
        fuel as fuel_raw,
        case when not coalesce(fuel_is_code, false) then fuel end as level,
        coalesce(fuel_is_code, false) as is_fuel_code,
        -- (0, 0) is a device without a GPS fix, not a point in the Gulf of Guinea.
        case when not (lat = 0 and lon = 0) then lat end as lat,
        case when not (lat = 0 and lon = 0) then lon end as lon,
        input,
        (input & 1) = 1 as is_ignition_on,
        location as address,
        extracted_at,
        cast(day as date) as day
    from source
),

-- Two readings in one second are one reading for every use downstream; keep the fresher.
final as (
    {{ latest_landing('renamed', 'source_vehicle_id, recorded_at', 'extracted_at desc, level desc nulls last') }}
)

select * from final
