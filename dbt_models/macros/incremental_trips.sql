{#- Incremental builds of per-trip models over the AutoPi datapoints (the largest raw table).

    A trip needs (re)building when this model has not built its current landing: new trips
    and re-exports of reopened trips (a later landed_at). Comparing per trip, rather than a
    max(landed_at) watermark, stays exact whatever order concurrent landings commit in. The
    vars fleet_from_day / fleet_to_day (YYYY-MM-DD, UTC trip days) rebuild a window on top,
    e.g. after changing a var such as autopi_idle_min_s; `dbt build --full-refresh` rebuilds
    everything. -#}

{#- SQL predicate on `alias` (rows of stg_autopi__trips): this trip needs building. -#}
{% macro autopi_trip_unbuilt(alias) -%}
    (not exists (
        select 1 from {{ this }} as built
        where built.source_trip_id = {{ alias }}.source_trip_id
            and built.trip_landed_at >= {{ alias }}.landed_at
    )
    {%- if var('fleet_from_day', none) %}
    or {{ alias }}.day between date '{{ var("fleet_from_day") }}'
        and date '{{ var("fleet_to_day", var("fleet_from_day")) }}'
    {%- endif %})
{%- endmacro %}

{#- The UTC days holding trips to build, looked up before the model's SQL is compiled so the
    datapoints scan can prune day folders with constants; none means "all" (a full build). -#}
{% macro autopi_days_to_build() %}
    {%- if not execute or not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set query -%}
        select distinct strftime(trips.day, '%Y-%m-%d')
        from {{ ref('stg_autopi__trips') }} as trips
        where {{ autopi_trip_unbuilt('trips') }}
        order by 1
    {%- endset -%}
    {{ return(run_query(query).columns[0].values() | list) }}
{% endmacro %}

{#- `days` (YYYY-MM-DD strings) and the `margin` days either side of each, sorted; none (all
    days) stays none. -#}
{% macro days_around(days, margin=1) %}
    {%- if days is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set around = [] -%}
    {%- for day in days -%}
        {%- set base = modules.datetime.date.fromisoformat(day) -%}
        {%- for shift in range(-margin, margin + 1) -%}
            {%- set near = (base + modules.datetime.timedelta(days=shift)).isoformat() -%}
            {%- if near not in around -%}
                {%- do around.append(near) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {{ return(around | sort) }}
{% endmacro %}

{#- A filter on a relation with a `day` column: only the days to build (`true` when all). -#}
{% macro days_filter(days, column='day') -%}
    {%- if days is none -%} true
    {%- elif days | length == 0 -%} false
    {%- else -%} {{ column }} in ({% for d in days %}date '{{ d }}'{{ ", " if not loop.last }}{% endfor %})
    {%- endif -%}
{%- endmacro %}

