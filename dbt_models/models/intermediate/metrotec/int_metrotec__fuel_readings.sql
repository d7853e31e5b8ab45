-- Metrotec fuel level readings in litres: percent readings are converted with the vehicle's
-- tank volume; pressure readings (is_fuel_as_pressure) have no litre value. A view: copying
-- every reading (4 M a year in the 200-vehicle bench) cost more to redo each run than the
-- join costs its readers, which filter it by time.
{{ config(materialized='view', event_time='recorded_at') }}
with readings as (
    select * from {{ ref('stg_metrotec__fuel_levels') }}
),

vehicles as (
    select * from {{ ref('stg_metrotec__vehicles') }}
),

final as (
    select
        readings.fuel_reading_id,
        readings.source_vehicle_id,
        readings.recorded_at,
        case
            when coalesce(vehicles.is_fuel_as_pressure, false) then null
            when not coalesce(vehicles.is_fuel_percent, false) then readings.level
            when vehicles.tank_volume_l is not null
                then round(readings.level * vehicles.tank_volume_l / 100, 2)
        end as level_l,
        readings.lat,
        readings.lon,
        readings.address,
        readings.is_ignition_on
    from readings
    left join vehicles
        on vehicles.source_vehicle_id = readings.source_vehicle_id
)

select * from final
