-- One row per Metrotec vehicle ever listed: its newest snapshot row (vehicles that left the
-- account keep their last row, so their history still resolves to a vehicle).
-- A view: it picks each vehicle's newest snapshot across days, and the lake table is small.
{{ config(materialized='view') }}

with source as (
    {{ lake_source('metrotec', 'vehicles', {
        'id': 'varchar',
        'alias': 'varchar',
        '"categoryName"': 'varchar',
        'tank_vol': 'double',
        '"isPercent"': 'bigint',
        'is_fuel_as_pressure': 'bigint',
        'odometer': 'double',
        'odometer_day': 'timestamptz',
        'gps_refresh_interval': 'bigint',
        'extracted_at': 'timestamptz',
        'day': 'date',
    }) }}
),

renamed as (
    select
        id as source_vehicle_id,
        coalesce(nullif(trim(alias), ''), id) as display_name,
        "categoryName" as category_name,
        -- 0 is what the API sends when no tank volume is configured.
        nullif(tank_vol, 0) as tank_volume_l,
        coalesce("isPercent" = 1, false) as is_fuel_percent,
        coalesce(is_fuel_as_pressure = 1, false) as is_fuel_as_pressure,
        nullif(odometer, 0) as odometer_km,
        cast(odometer_day as timestamptz) as odometer_at,
        gps_refresh_interval as gps_refresh_interval_s,
        cast(day as date) as snapshot_day,
        extracted_at
    from source
),

final as (
    select
        *,
        snapshot_day = max(snapshot_day) over () as is_in_latest_snapshot
    from renamed
    qualify
        row_number() over (
            partition by source_vehicle_id order by snapshot_day desc, extracted_at desc
        ) = 1
)

select * from final
