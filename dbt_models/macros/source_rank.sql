{#- Position of a row's source in a priority list var (1 = preferred; unknown last): which
    copy of a trip or fuel event several sources report counts, and whose figures fill its
    gaps. `priority` names the var: trip_source_priority (default) or fuel_source_priority. -#}
{% macro source_rank(column, priority='trip_source_priority') -%}
    case
    {%- for source in var(priority) %}
        when {{ column }} = '{{ source }}' then {{ loop.index }}
    {%- endfor %}
        else {{ var(priority) | length + 1 }}
    end
{%- endmacro %}
