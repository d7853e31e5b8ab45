-- One row per AutoPi datapoint, renamed to fleet words. Only the keys the facts use get a
-- column here; every other declared key stays in the raw table, undeclared ones in `extra`.
{#- Until the drain has run once, the lake has no AutoPi file and read_parquet would fail
    the whole build; then this model is empty instead (the drain writes schema-only files). -#}
{%- set landed = true -%}
{%- if execute -%}
    {%- set pattern = env_var('FLEET_LAKE_DIR', '../data/lake') ~ '/autopi/datapoints/day=*/*.parquet' -%}
    {%- set landed = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] > 0 -%}
{%- endif %}
with source as (
    {%- if landed %}
    select * from {{ source('autopi', 'datapoints') }}
    {%- else %}
    select
        cast(null as varchar) as trip_id, cast(null as bigint) as line_no,
        cast(null as timestamptz) as "@ts", cast(null as timestamptz) as "@rec",
        cast(null as varchar) as "@t", cast(null as varchar) as "@tag",
        cast(null as bigint) as "@vid", cast(null as varchar) as "@uid",
        cast(null as double) as "track.pos.loc.lat", cast(null as double) as "track.pos.loc.lon",
        cast(null as double) as "track.pos.alt", cast(null as double) as "track.pos.sog",
        cast(null as double) as "track.pos.cog", cast(null as double) as "track.pos.nsat",
        cast(null as double) as "obd.speed.value", cast(null as varchar) as "obd.speed.unit",
        cast(null as double) as "obd.rpm.value", cast(null as double) as "obd.engine_load.value",
        cast(null as double) as "obd.coolant_temp.value", cast(null as double) as "obd.fuel_level.value",
        cast(null as double) as "obd.bat.voltage", cast(null as double) as "obd.bat.level",
        cast(null as varchar) as extra, cast(null as date) as day
    where false
    {%- endif %}
),

trips as (
    select source_trip_id, day from {{ ref('stg_autopi__trips') }}
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
