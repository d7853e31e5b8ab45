{#- A raw lake table for a staging model — or, before its asset has landed any file, an empty
    relation of the given shape: read_parquet fails on an empty glob, and one source not yet
    configured must not fail every model of the others. `empty_columns` maps column → type.
    At parse time (`execute` false) the source() call is what records the lineage. -#}
{% macro lake_source(source_name, table_name, empty_columns) -%}
    {%- set landed = true -%}
    {%- if execute -%}
        {%- set files = env_var('FLEET_LAKE_DIR', '../data/lake') ~ '/' ~ source_name ~ '/'
            ~ table_name ~ '/day=*/*.parquet' -%}
        {%- set probe = "select count(*) from glob('" ~ files | replace("'", "''") ~ "')" -%}
        {%- set landed = run_query(probe).columns[0].values()[0] > 0 -%}
    {%- endif -%}
    {%- if landed -%}
    select * from {{ source(source_name, table_name) }}
    {%- else -%}
    select
        {%- for name, type in empty_columns.items() %}
        cast(null as {{ type }}) as {{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    where false
    {%- endif -%}
{%- endmacro %}
