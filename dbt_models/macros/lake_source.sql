{#- A raw lake table for a staging model — or, before its asset has landed any file, an empty
    relation of the given shape: read_parquet fails on an empty glob, and one source not yet
    configured must not fail every model of the others. `empty_columns` maps column → type.
    At parse time (`execute` false) the source() call is what records the lineage.

    A lake-day incremental model being updated (macros/lake_days.sql) reads only the day
    folders it rebuilds, named one by one: with union_by_name, a `day=*` glob would read the
    schema of every file of the table before any day is pruned. -#}
{% macro lake_source(source_name, table_name, empty_columns) -%}
    {%- set folders = none -%}
    {%- set landed = true -%}
    {%- if lake_days_incremental() -%}
        {%- set days = lake_days_to_build() -%}
        {%- if days is not none -%}
            {%- set folders = lake_day_folders(source_name ~ '/' ~ table_name, days) -%}
            {%- set landed = folders | length > 0 -%}
        {%- endif -%}
    {%- endif -%}
    {%- if execute and folders is none -%}
        {%- set files = lake_dir() ~ '/' ~ source_name ~ '/' ~ table_name ~ '/day=*/*.parquet' -%}
        {%- set probe = "select count(*) from glob('" ~ files | replace("'", "''") ~ "')" -%}
        {%- set landed = run_query(probe).columns[0].values()[0] > 0 -%}
    {%- endif -%}
    {%- if landed and folders is not none -%}
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
    select
        {%- for name, type in empty_columns.items() %}
        cast(null as {{ type }}) as {{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    where false
    {%- endif -%}
{%- endmacro %}
