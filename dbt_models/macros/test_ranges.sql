{#- Range tests for the marts' units (dbt hub packages are not reachable). NULL passes: an
    unknown value is NULL by design, never a sentinel. -#}

{#- Every value is at least `value` (e.g. 0 for distances, durations, litres). -#}
{% test at_least(model, column_name, value) %}
select {{ column_name }} from {{ model }} where {{ column_name }} < {{ value }}
{% endtest %}

{#- Every value is below `value` (e.g. 300 km/h: anything faster is a unit or sensor error). -#}
{% test below(model, column_name, value) %}
select {{ column_name }} from {{ model }} where {{ column_name }} >= {{ value }}
{% endtest %}

{#- Every value is later than the row's `than` column (e.g. ended_at after started_at). -#}
{% test later_than(model, column_name, than) %}
select {{ than }}, {{ column_name }} from {{ model }} where {{ column_name }} <= {{ than }}
{% endtest %}
