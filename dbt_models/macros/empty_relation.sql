{#- A relation with no rows and the given columns (a mapping of column -> type, in order): the
    shape of a source not landed yet (lake_source) or of a union of every source's models
    (the int_*__unioned models), so a missing or late source never changes a column's type. -#}
{% macro empty_relation(columns) -%}
    select
        {%- for name, type in columns.items() %}
        cast(null as {{ type }}) as {{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    where false
{%- endmacro %}
