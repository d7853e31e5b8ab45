{#- As-of lookups in a vehicle's readings (a relation with `source_vehicle_id` and
    `recorded_at`, such as Metrotec's fuel level log): the rule for which reading counts is
    written once here, for every column set it is applied to. -#}

{#- Every row of `base` with `columns` of its vehicle's last reading at or before `at`, each
    NULL unless that reading was taken at or after `since` (a position of a parked vehicle, not
    one from before it drove there). `at` and `since` are expressions over `base`. -#}
{% macro latest_reading(base, readings, at, since, columns) -%}
    select
        {{ base }}.*,
        {%- for column in columns %}
        case when {{ readings }}.recorded_at >= {{ since }} then {{ readings }}.{{ column }} end
            as {{ column }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ base }}
    asof left join {{ readings }}
        on {{ readings }}.source_vehicle_id = {{ base }}.source_vehicle_id
        and {{ readings }}.recorded_at <= {{ at }}
{%- endmacro %}

{#- What `readings` say at the two ends of each row of the `trips` CTE of
    int_metrotec__trip_readings: `start_<column>` and `end_<column>` for each of `columns`, by
    four ASOF joins.

    The start is the last reading at or before the trip's start if taken while parked before it
    (at or after `parked_before_from`), else the first reading at or after the start if it lies
    inside the trip; the end, the first reading at or after the trip's end if taken while parked
    after it (at or before `parked_after_until`), else the last reading at or before the end if
    it lies inside the trip. -#}
{% macro readings_at_trip_ends(readings, columns) -%}
    {%- set ends = {
        'start': [
            ['before_start', '<=', 'started_at', '>= trips.parked_before_from'],
            ['after_start', '>=', 'started_at', '< trips.ended_at'],
        ],
        'end': [
            ['after_end', '>=', 'ended_at', '<= trips.parked_after_until'],
            ['before_end', '<=', 'ended_at', '> trips.started_at'],
        ],
    } -%}
    select
        trips.source_trip_id,
        trips.source_vehicle_id
        {%- for end, candidates in ends.items() %}
        {%- for column in columns %},
        case
            {%- for alias, _, _, kept in candidates %}
            when {{ alias }}.recorded_at {{ kept }} then {{ alias }}.{{ column }}
            {%- endfor %}
        end as {{ end }}_{{ column }}
        {%- endfor %}
        {%- endfor %}
    from trips
    {%- for candidates in ends.values() %}
    {%- for alias, side, at, _ in candidates %}
    asof left join {{ readings }} as {{ alias }}
        on {{ alias }}.source_vehicle_id = trips.source_vehicle_id
        and {{ alias }}.recorded_at {{ side }} trips.{{ at }}
    {%- endfor %}
    {%- endfor %}
{%- endmacro %}
