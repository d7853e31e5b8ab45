{#- sum() of a double column, exact and independent of row order (as a double again). -#}
{% macro exact_sum(column) -%}
    cast(sum(cast({{ column }} as decimal(38, 9))) as double)
{%- endmacro %}
