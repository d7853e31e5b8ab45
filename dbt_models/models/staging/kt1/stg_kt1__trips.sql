-- One row per kt1 trip id: redelivered copies removed, and of several versions of a trip (KT1
-- may send a trip again as it changes) the last landed one wins.
{#- Until the drain has landed a file, read_parquet has nothing to match: read an empty set. -#}
{%- set landed_glob = env_var('FLEET_LAKE_DIR', '../data/lake') ~ '/kt1/trips/day=*/*.parquet' -%}
{%- set has_files = true -%}
{%- if execute -%}
    {%- set probe = run_query("select count(*) from glob('" ~ landed_glob | replace("'", "''") ~ "')") -%}
    {%- set has_files = probe.columns[0].values()[0] > 0 -%}
{%- endif %}
with source as (
    {%- if has_files %}
    select * from {{ source('kt1', 'trips') }}
    {%- else %}
    select
        cast(null as varchar) as batch_id,
        cast(null as integer) as item_index,
        cast(null as timestamptz) as fetched_at,
        cast(null as timestamptz) as landed_at,
        cast(null as varchar) as id,
        cast(null as varchar) as asset_id,
        cast(null as varchar) as asset_name,
        cast(null as varchar) as trip_type,
        cast(null as timestamptz) as date_start,
        cast(null as timestamptz) as date_end,
        cast(null as double) as start_lat,
        cast(null as double) as start_lon,
        cast(null as varchar) as start_address,
        cast(null as double) as end_lat,
        cast(null as double) as end_lon,
        cast(null as varchar) as end_address,
        cast(null as double) as stats_drive_time,
        cast(null as double) as stats_idle_time,
        cast(null as double) as stats_distance,
        cast(null as double) as records,
        cast(null as double) as maxes_speed
    where false
    {%- endif %}
),

typed as (
    select
        id as source_trip_id,
        asset_id as source_vehicle_id,
        asset_name,
        trip_type,
        cast(date_start as timestamptz) as started_at,
        cast(date_end as timestamptz) as ended_at,
        stats_drive_time as drive_time_s,
        stats_idle_time as idle_time_s,
        stats_distance as distance_km,
        maxes_speed as max_speed_kmh,
        records as telemetry_records,
        start_lat,
        start_lon,
        start_address,
        end_lat,
        end_lon,
        end_address,
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
        partition by source_trip_id
        order by landed_at desc, fetched_at desc, item_index desc
    ) = 1
),

final as (
    select
        md5('kt1|' || source_trip_id) as kt1_trip_id,
        *,
        date_diff('second', started_at, ended_at) as duration_s
    from deduplicated
)

select * from final
