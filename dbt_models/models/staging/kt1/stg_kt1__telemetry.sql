-- One row per kt1 telemetry report: copies from redelivered batches removed by the report's
-- identity (origin.id, date). Device counters stay raw (see the YAML): they are the tracker's
-- counters, not the vehicle's odometer.
{#- Until the drain has landed a file, read_parquet has nothing to match: read an empty set. -#}
{%- set landed_glob = env_var('FLEET_LAKE_DIR', '../data/lake') ~ '/kt1/telemetry/day=*/*.parquet' -%}
{%- set has_files = true -%}
{%- if execute -%}
    {%- set probe = run_query("select count(*) from glob('" ~ landed_glob | replace("'", "''") ~ "')") -%}
    {%- set has_files = probe.columns[0].values()[0] > 0 -%}
{%- endif %}
with source as (
    {%- if has_files %}
    select * from {{ source('kt1', 'telemetry') }}
    {%- else %}
    select
        cast(null as varchar) as batch_id,
        cast(null as integer) as item_index,
        cast(null as timestamptz) as fetched_at,
        cast(null as timestamptz) as landed_at,
        cast(null as varchar) as origin_id,
        cast(null as varchar) as origin_name,
        cast(null as varchar) as asset_id,
        cast(null as varchar) as asset_name,
        cast(null as timestamptz) as date,
        cast(null as timestamptz) as received,
        cast(null as boolean) as active,
        cast(null as double) as lat,
        cast(null as double) as lon,
        cast(null as double) as speed,
        cast(null as double) as altitude,
        cast(null as double) as heading,
        cast(null as double) as accuracy,
        cast(null as varchar) as address,
        cast(null as double) as counters_odometer,
        cast(null as double) as counters_odo_counter,
        cast(null as double) as counters_engine_hours
    where false
    {%- endif %}
),

typed as (
    select
        origin_id,
        origin_name,
        asset_id,
        asset_name,
        cast(date as timestamptz) as recorded_at,
        cast(received as timestamptz) as received_at,
        active as is_active,
        lat,
        lon,
        speed as speed_kmh,
        altitude,
        heading as heading_deg,
        accuracy as gps_accuracy,
        address,
        counters_odometer as device_odometer_counter_m,
        counters_odo_counter as device_distance_counter_m,
        counters_engine_hours as device_engine_hours,
        batch_id,
        item_index,
        cast(fetched_at as timestamptz) as fetched_at,
        cast(landed_at as timestamptz) as landed_at
    from source
),

deduplicated as (
    select *
    from typed
    qualify row_number() over (
        partition by origin_id, recorded_at
        order by landed_at desc, fetched_at desc, item_index desc
    ) = 1
),

final as (
    select
        md5('kt1|' || origin_id || '|' || cast(epoch_us(recorded_at) as varchar)) as telemetry_id,
        *
    from deduplicated
)

select * from final
