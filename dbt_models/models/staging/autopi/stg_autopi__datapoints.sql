-- One row per AutoPi datapoint, renamed to fleet words. Only the keys the facts use get a
-- column here; every other declared key stays in the raw table, undeclared ones in `extra`.
-- Daily by lake day (the trip's UTC start day, where its datapoints are landed).
{{ daily_table('day') }}

with source as (
    {{ lake_source('autopi', 'datapoints', {
        'trip_id': 'varchar',
        'line_no': 'bigint',
        '"@ts"': 'timestamptz',
        '"@rec"': 'timestamptz',
        '"@t"': 'varchar',
        '"@tag"': 'varchar',
        '"@vid"': 'bigint',
        '"@uid"': 'varchar',
        '"track.pos.loc.lat"': 'double',
        '"track.pos.loc.lon"': 'double',
        '"track.pos.alt"': 'double',
        '"track.pos.sog"': 'double',
        '"track.pos.cog"': 'double',
        '"track.pos.nsat"': 'double',
        '"obd.speed.value"': 'double',
        '"obd.speed.unit"': 'varchar',
        '"obd.rpm.value"': 'double',
        '"obd.engine_load.value"': 'double',
        '"obd.coolant_temp.value"': 'double',
        '"obd.fuel_level.value"': 'double',
        '"obd.bat.voltage"': 'double',
        '"obd.bat.level"': 'double',
        'extra': 'varchar',
        'day': 'date',
    }) }}
),

trips as (
    select source_trip_id, day from {{ ref('stg_autopi__trips') }}
    where {{ in_days('day') }}
),

renamed as (
    select
        trip_id as source_trip_id,
        line_no,
        cast("@ts" as timestamptz) as recorded_at,
        cast("@rec" as timestamptz) as received_at,
        "@t" as datapoint_type,
        "@tag" as event_tag,
        "@vid" as autopi_vehicle_id,
        "@uid" as unit_id,
        "track.pos.loc.lat" as lat,
        "track.pos.loc.lon" as lon,
        "track.pos.alt" as altitude_m,
        "track.pos.sog" as gps_speed_kmh,
        "track.pos.cog" as course_deg,
        "track.pos.nsat" as satellites,
        -- OBD speed comes in kph; convert the rare mph dongle rather than mix units.
        case
            when "obd.speed.unit" = 'mph' then "obd.speed.value" * 1.609344
            else "obd.speed.value"
        end as speed_kmh,
        "obd.rpm.value" as rpm,
        "obd.engine_load.value" as engine_load_pct,
        "obd.coolant_temp.value" as coolant_temp_c,
        -- Percent of the tank: AutoPi reports no litres (see int_autopi__trips for litres).
        "obd.fuel_level.value" as fuel_level_pct,
        "obd.bat.voltage" as battery_v,
        "obd.bat.level" as battery_level_pct,
        cast(extra as json) as extra,
        cast(day as date) as day
    from source
),

final as (
    -- Only the datapoints of the trip's current landing: a crash between landing a trip under
    -- a new start day and removing the old day's file could leave an orphan behind.
    select renamed.*
    from renamed
    inner join trips
        on trips.source_trip_id = renamed.source_trip_id
        and trips.day = renamed.day
)

select * from final
