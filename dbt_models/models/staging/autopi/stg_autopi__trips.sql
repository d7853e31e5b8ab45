-- One row per AutoPi trip: the trip object of its latest landed export. Files are named by
-- trip id, so a re-export already replaced the earlier rows; the window only guards against a
-- trip whose start day moved between exports and whose old file a crash left behind.
{#- Until the drain has run once, the lake has no AutoPi file and read_parquet would fail
    the whole build; then this model is empty instead (the drain writes schema-only files). -#}
{%- set landed = true -%}
{%- if execute -%}
    {%- set pattern = env_var('FLEET_LAKE_DIR', '../data/lake') ~ '/autopi/trips/day=*/*.parquet' -%}
    {%- set landed = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] > 0 -%}
{%- endif %}
with source as (
    {%- if landed %}
    select * from {{ source('autopi', 'trips') }}
    {%- else %}
    select
        cast(null as varchar) as trip_id, cast(null as varchar) as device_id,
        cast(null as bigint) as vehicle_id, cast(null as timestamptz) as started_at,
        cast(null as timestamptz) as ended_at, cast(null as double) as duration_s,
        cast(null as double) as distance_km, cast(null as double) as start_lat,
        cast(null as double) as start_lon, cast(null as varchar) as start_address,
        cast(null as double) as end_lat, cast(null as double) as end_lon,
        cast(null as varchar) as end_address, cast(null as varchar) as tag,
        cast(null as boolean) as personal, cast(null as timestamptz) as last_recalc_at,
        cast(null as bigint) as task_id, cast(null as varchar) as export_sha256,
        cast(null as bigint) as datapoints, cast(null as bigint) as malformed_lines,
        cast(null as varchar) as undeclared_keys, cast(null as timestamptz) as landed_at,
        cast(null as date) as day
    where false
    {%- endif %}
),

renamed as (
    select
        trip_id as source_trip_id,
        device_id as source_vehicle_id,
        vehicle_id as autopi_vehicle_id,
        cast(started_at as timestamptz) as started_at,
        cast(ended_at as timestamptz) as ended_at,
        duration_s,
        distance_km,
        start_lat,
        start_lon,
        start_address,
        end_lat,
        end_lon,
        end_address,
        tag as trip_tag,
        personal as is_personal,
        cast(last_recalc_at as timestamptz) as last_recalc_at,
        task_id,
        export_sha256,
        datapoints as datapoint_count,
        malformed_lines,
        undeclared_keys,
        cast(landed_at as timestamptz) as landed_at,
        cast(day as date) as day
    from source
),

latest as (
    select *
    from renamed
    qualify row_number() over (partition by source_trip_id order by landed_at desc) = 1
),

final as (
    select
        md5('autopi|' || source_trip_id) as autopi_trip_id,
        *
    from latest
)

select * from final
