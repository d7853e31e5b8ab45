{#- A raw lake table for a staging model: the `day=` folders of this build's days if the model
    is daily (every day for a build of every day, or a model without a day), or, when none
    holds a file, an empty relation of the given shape:
    read_parquet fails on an empty glob, and one source not yet configured must not fail every
    model of the others. `empty_columns` maps column -> type. At parse time (`execute` false)
    the source() call is what records the lineage.

    A window's folders are named one by one: with union_by_name, a `day=*` glob would read the
    schema of every file of the table before any day is pruned. Which of them hold files is
    asked of the file system (DuckDB's glob) as the model compiles. FLEET_LAKE_DIR may be an
    object-store URL (s3://bucket/prefix): DuckDB's httpfs reads it, with the credentials the
    dbt plugin (pipelines/facts_plugin.py) gives the connection as a secret, never as SQL. -#}
{% macro lake_dir() -%}
    {{ return(env_var('FLEET_LAKE_DIR', '../data/lake')) }}
{%- endmacro %}

{% macro lake_source(source_name, table_name, empty_columns) -%}
    {%- set table_dir = lake_dir() ~ '/' ~ source_name ~ '/' ~ table_name -%}
    {%- set days = window_days() if config.get('event_time') else none -%}
    {%- set folders = [] -%}
    {%- set everything = days is none -%}
    {%- if execute and everything -%}
        {%- set probe = "select count(*) from glob('" ~ (table_dir ~ '/day=*/*.parquet') | replace("'", "''") ~ "')" -%}
        {%- set landed = run_query(probe).columns[0].values()[0] > 0 -%}
    {%- elif execute -%}
        {%- if days | length <= 31 -%}
            {%- set probes = [] -%}
            {%- for day in days -%}
                {%- set pattern = (table_dir ~ '/day=' ~ day ~ '/*.parquet') | replace("'", "''") -%}
                {%- do probes.append(
                    "select '" ~ day ~ "' as day where exists (select 1 from glob('" ~ pattern ~ "'))"
                ) -%}
            {%- endfor -%}
            {%- set query = probes | join(' union all ') -%}
        {%- else -%}
            {%- set pattern = (table_dir ~ '/day=*/*.parquet') | replace("'", "''") -%}
            {%- set query -%}
                select distinct regexp_extract(file, 'day=([0-9]{4}-[0-9]{2}-[0-9]{2})/[^/]*$', 1) as day
                from glob('{{ pattern }}')
            {%- endset -%}
        {%- endif -%}
        {%- for day in run_query(query).columns[0].values() | sort -%}
            {%- if day in days -%}
                {%- do folders.append(table_dir ~ '/day=' ~ day ~ '/*.parquet') -%}
            {%- endif -%}
        {%- endfor -%}
        {%- set landed = folders | length > 0 -%}
    {%- else -%}
        {%- set landed = true -%}
    {%- endif -%}
    {%- if landed and not everything and execute -%}
    select * from read_parquet(
        [
        {%- for folder in folders %}
            '{{ folder | replace("'", "''") }}'{{ "," if not loop.last }}
        {%- endfor %}
        ],
        hive_partitioning = true,
        union_by_name = true
    )
    {%- elif landed -%}
    select * from {{ source(source_name, table_name) }}
    {%- else -%}
    {{ empty_relation(empty_columns) }}
    {%- endif -%}
{%- endmacro %}
