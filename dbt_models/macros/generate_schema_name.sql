{#- Schema names: seeds and models all go in `main` (docs/facts.md), no target-schema prefix. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {{ custom_schema_name or target.schema }}
{%- endmacro %}
