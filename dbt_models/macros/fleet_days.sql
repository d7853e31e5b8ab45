{#- Facts by UTC day, with dbt's own incremental machinery.

    A daily model (one with an `event_time` config: the column holding each row's UTC day or
    instant) is a Dagster asset partitioned by UTC day. A run of a partition range passes its
    time window as dbt's own `--event-time-start/--event-time-end` flags (pipelines/dbt.py),
    as dagster-dbt does for microbatch models; the model's SQL reads only those days (and the
    neighbour days it names), and the `fleet_days` incremental strategy below replaces exactly
    those days' rows. Without the flags a build covers every day.

    Why not `incremental_strategy='microbatch'`: dbt runs a microbatch model once per day of
    the window, so a full build of 365 days made ~30 models x 365 batches (each its own query,
    temp table and DuckLake commit); one batch per run keeps a full build one query per model,
    and a one-day partition one small query per model. Why not `--vars`: a change of vars
    makes dbt re-parse the whole project (~15 s), on every partition run. -#}

{#- [first, last] (dates, inclusive) of this build, or none for every day. -#}
{% macro fleet_window() %}
    {%- set start = invocation_args_dict.get('event_time_start') -%}
    {%- set end = invocation_args_dict.get('event_time_end') -%}
    {%- if not start or not end -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set start, end = start | string, end | string -%}
    {%- if start[11:19] not in ['', '00:00:00'] -%}
        {{ exceptions.raise_compiler_error("--event-time-start must be a UTC midnight: " ~ start) }}
    {%- endif -%}
    {%- set first = modules.datetime.date.fromisoformat(start[:10]) -%}
    {%- set last = modules.datetime.date.fromisoformat(end[:10]) -%}
    {%- if end[11:19] in ['', '00:00:00'] -%}
        {%- set last = last - modules.datetime.timedelta(days=1) -%}
    {%- endif -%}
    {%- if flags.FULL_REFRESH -%}
        {{ exceptions.raise_compiler_error(
            "--full-refresh rebuilds every day: run it without --event-time-start/--event-time-end") }}
    {%- endif -%}
    {{ return([first, last]) }}
{% endmacro %}

{#- SQL predicate: `column` lies in this build's days, widened by `before` days before the
    first and `after` days after the last (for rows a day's rows are computed from); `true`
    when the build covers every day. A column named `day` is a DATE, any other a TIMESTAMPTZ
    compared with UTC midnights (never the session's time zone). -#}
{% macro in_days(column, before=0, after=0) -%}
    {%- set window = fleet_window() -%}
    {%- if window is none -%}
        true
    {%- else -%}
        {%- set first = window[0] - modules.datetime.timedelta(days=before) -%}
        {%- set end = window[1] + modules.datetime.timedelta(days=after + 1) -%}
        {%- if column == 'day' or column.endswith('.day') -%}
            ({{ column }} >= date '{{ first }}' and {{ column }} < date '{{ end }}')
        {%- else -%}
            {%- set since = "timestamptz '" ~ first ~ " 00:00:00+00'" -%}
            {%- set until = "timestamptz '" ~ end ~ " 00:00:00+00'" -%}
            ({{ column }} >= {{ since }} and {{ column }} < {{ until }})
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- The ISO days of this build's window, widened as in_days; none for every day. -#}
{% macro window_days(before=0, after=0) %}
    {%- set window = fleet_window() -%}
    {%- if window is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set days = [] -%}
    {%- set first = window[0] - modules.datetime.timedelta(days=before) -%}
    {%- for i in range((window[1] - first).days + after + 1) -%}
        {%- do days.append((first + modules.datetime.timedelta(days=i)).isoformat()) -%}
    {%- endfor -%}
    {{ return(days) }}
{% endmacro %}

{#- config() of a daily table: `event_time` is the column that puts a row in its UTC day. -#}
{% macro daily_table(event_time) %}
    {{ config(
        materialized='incremental',
        incremental_strategy='fleet_days',
        event_time=event_time,
        on_schema_change='sync_all_columns',
    ) }}
{% endmacro %}

{#- The `fleet_days` incremental strategy: replace the rows of this build's days. The model's
    SQL selected exactly those days' rows (in_days on its own event_time). -#}
{% macro get_incremental_fleet_days_sql(arg_dict) %}
    {%- set event_time = config.get('event_time') -%}
    {%- if not event_time -%}
        {{ exceptions.raise_compiler_error("the fleet_days strategy needs an event_time config") }}
    {%- endif -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ arg_dict['target_relation'] }} where {{ in_days(event_time) }};
    insert into {{ arg_dict['target_relation'] }} ({{ columns }})
    select {{ columns }} from {{ arg_dict['temp_relation'] }}
{% endmacro %}
