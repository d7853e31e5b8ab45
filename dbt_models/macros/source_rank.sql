{#- Position of a trip's source in var('trip_source_priority') (1 = preferred; unknown last):
    which copy of a trip several sources report counts, and whose figures fill its gaps. -#}
{% macro source_rank(column) -%}
    case
    {%- for source in var('trip_source_priority') %}
        when {{ column }} = '{{ source }}' then {{ loop.index }}
    {%- endfor %}
        else {{ var('trip_source_priority') | length + 1 }}
    end
{%- endmacro %}
