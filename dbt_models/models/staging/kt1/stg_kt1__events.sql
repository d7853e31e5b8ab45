-- One row per kt1 event id, redelivered copies removed. `details` keeps the event's own
-- fields (e.g. an idling event's dateStart/dateEnd, a refuel's volume) as JSON.
{#- Until the drain has landed a file, read_parquet has nothing to match: read an empty set. -#}
{%- set landed_glob = env_var('FLEET_LAKE_DIR', '../data/lake') ~ '/kt1/events/day=*/*.parquet' -%}
{%- set has_files = true -%}
{%- if execute -%}
    {%- set probe = run_query("select count(*) from glob('" ~ landed_glob | replace("'", "''") ~ "')") -%}
    {%- set has_files = probe.columns[0].values()[0] > 0 -%}
{%- endif %}
with source as (
    {%- if has_files %}
    select * from {{ source('kt1', 'events') }}
    {%- else %}
    select
        cast(null as varchar) as batch_id,
        cast(null as integer) as item_index,
        cast(null as timestamptz) as fetched_at,
        cast(null as timestamptz) as landed_at,
        cast(null as varchar) as id,
        cast(null as varchar) as owner,
        cast(null as varchar) as origin,
        cast(null as timestamptz) as event_date,
        cast(null as varchar) as event_class,
        cast(null as varchar) as event_type,
        cast(null as varchar) as asset_id,
        cast(null as double) as lat,
        cast(null as double) as lon,
        cast(null as varchar) as address,
        cast(null as varchar) as item_json
    where false
    {%- endif %}
),

typed as (
    select
        id as source_event_id,
        asset_id as source_vehicle_id,
        origin as origin_id,
        owner as owner_id,
        cast(event_date as timestamptz) as occurred_at,
        event_class,
        event_type,
        lat,
        lon,
        address,
        json_extract(item_json, '$.details') as details,
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
        partition by source_event_id
        order by landed_at desc, fetched_at desc, item_index desc
    ) = 1
),

final as (
    select
        md5('kt1|' || source_event_id) as kt1_event_id,
        *
    from deduplicated
)

select * from final
