-- One row per kt1 change notification, identified by (doc id, doc type, operation, date);
-- redelivered copies removed.
{#- Until the drain has landed a file, read_parquet has nothing to match: read an empty set. -#}
{%- set landed_glob = env_var('FLEET_LAKE_DIR', '../data/lake') ~ '/kt1/changes/day=*/*.parquet' -%}
{%- set has_files = true -%}
{%- if execute -%}
    {%- set probe = run_query("select count(*) from glob('" ~ landed_glob | replace("'", "''") ~ "')") -%}
    {%- set has_files = probe.columns[0].values()[0] > 0 -%}
{%- endif %}
with source as (
    {%- if has_files %}
    select * from {{ source('kt1', 'changes') }}
    {%- else %}
    select
        cast(null as varchar) as batch_id,
        cast(null as integer) as item_index,
        cast(null as timestamptz) as fetched_at,
        cast(null as timestamptz) as landed_at,
        cast(null as varchar) as operation,
        cast(null as timestamptz) as date,
        cast(null as varchar) as doc_id,
        cast(null as varchar) as doc_type
    where false
    {%- endif %}
),

typed as (
    select
        doc_id,
        doc_type,
        operation,
        cast(date as timestamptz) as changed_at,
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
        partition by doc_id, doc_type, operation, changed_at
        order by landed_at desc, fetched_at desc, item_index desc
    ) = 1
),

final as (
    select
        md5(
            'kt1|' || doc_id || '|' || coalesce(doc_type, '') || '|' || operation || '|'
            || cast(epoch_us(changed_at) as varchar)
        ) as kt1_change_id,
        *
    from deduplicated
)

select * from final
