-- One row per Metrotec refuel, litres before and after, in UTC.
{{ daily_table('day') }}

with source as (
    {{ lake_source('metrotec', 'refuels', {
        '"ID"': 'bigint',
        '"objectID"': 'varchar',
        '"startTime"': 'timestamptz',
        '"stopTime"': 'timestamptz',
        '"maxTime"': 'timestamptz',
        '"fuelBeforeL"': 'double',
        '"fuelAfterL"': 'double',
        '"routeLengthKM"': 'double',
        '"fuelAddress"': 'varchar',
        'fuel_is_code': 'boolean',
        'extracted_at': 'timestamptz',
        'day': 'date',
    }) }}
),

renamed as (
    select
        "objectID" || '|' || cast("ID" as varchar) as source_refuel_id,
        "objectID" as source_vehicle_id,
        cast("startTime" as timestamptz) as started_at,
        cast("stopTime" as timestamptz) as ended_at,
        cast("maxTime" as timestamptz) as peaked_at,
        -- Negative values are device codes, not litres.
        case when "fuelBeforeL" >= 0 then "fuelBeforeL" end as level_before_l,
        case when "fuelAfterL" >= 0 then "fuelAfterL" end as level_after_l,
        "routeLengthKM" as distance_since_last_km,
        "fuelAddress" as address,
        coalesce(fuel_is_code, false) as is_fuel_code,
        extracted_at,
        cast(day as date) as day
    from source
),

deduplicated as (
    {{ latest_landing('renamed', 'source_refuel_id', 'extracted_at desc') }}
),

final as (
    select
        *,
        round(level_after_l - level_before_l, 3) as volume_l
    from deduplicated
)

select * from final
