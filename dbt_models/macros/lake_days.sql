{#- Staging tables incremental by lake day: a build re-reads only the day folders that changed.

    Each run starts by listing the lake once (fleet_build.lake_days: per raw table and UTC day,
    a fingerprint of the files' names, sizes and modification times). Each staging table keeps
    a ledger (fleet_build.lake_built) of the fingerprints it was built from, so it rebuilds a
    day when the day's files differ from what it last read: new, replaced or removed files,
    whatever order or day they land in, by our assets or by hand. Nothing relies on the run's
    arguments or on Dagster partitions, so a late kt1 item or a re-exported AutoPi trip of an
    old day is never skipped.

    * A day whose newest file is under 2 s older than the listing is "racy" (where the file
      system keeps coarse times, a rewrite of the same size moments later would look
      unchanged): it gets no fingerprint, so the next run reads it again.
    * A model whose SQL changed since its ledger was written rebuilds every day (its columns
      follow through on_schema_change), as does `dbt build --full-refresh`.
    * The vars fleet_from_day / fleet_to_day (YYYY-MM-DD) rebuild a window on top.
    * The ledger is written after the model's rows (post-hook): a failed build leaves it as it
      was, so the next run retries the same days. -#}

{% macro lake_dir() -%}
    {{ return(env_var('FLEET_LAKE_DIR', '../data/lake')) }}
{%- endmacro %}

{#- on-run-start: the ledger tables and this run's listing of the lake (the raw tables dbt
    reads), taken by fleet_lake_listing() of the profile's plugin (pipelines/lake_listing.py):
    per table and day folder, its files' count, bytes, newest mtime (ns) and fingerprint. -#}
{% macro lake_snapshot() %}
    {%- if not execute -%}
        {{ return('select 1') }}  {#- parsing: the graph is not loaded yet #}
    {%- endif -%}
    {%- set tables = [] -%}
    {%- for node in graph.sources.values() | sort(attribute='unique_id') -%}
        {%- do tables.append(node.source_name ~ '/' ~ node.name) -%}
    {%- endfor -%}
    create schema if not exists fleet_build;
    create table if not exists fleet_build.lake_built (
        model varchar,
        model_checksum varchar,
        lake_table varchar,
        day date,
        fingerprint varchar,
        built_at timestamptz
    );
    create or replace table fleet_build.lake_days as
    with listing as (
        select unnest(from_json(
            fleet_lake_listing(
                '{{ lake_dir() | replace("'", "''") }}',
                [{% for table in tables %}'{{ table }}'{{ ", " if not loop.last }}{% endfor %}]
            ),
            '[{"lake_table": "VARCHAR", "day": "DATE", "files": "BIGINT", "bytes": "BIGINT",
              "newest_ns": "BIGINT", "fingerprint": "VARCHAR"}]'
        ), recursive := true)
    )
    select
        lake_table,
        day,
        files,
        bytes,
        case
            when newest_ns >= epoch_ns(now()) - 2 * 1000000000 then null else fingerprint
        end as fingerprint
    from listing
{%- endmacro %}

{#- The run's listing, taken now if no on-run-start hook took it (e.g. `dbt compile`). -#}
{% macro ensure_lake_snapshot() %}
    {%- if adapter.get_relation(this.database, 'fleet_build', 'lake_days') is none -%}
        {%- do run_query(lake_snapshot()) -%}
    {%- endif -%}
{% endmacro %}

{#- `<source>/<table>` of a staging model named stg_<source>__<table>. -#}
{% macro lake_table_of(model_name) %}
    {%- set parts = model_name[4:].split('__') -%}
    {%- if not model_name.startswith('stg_') or parts | length != 2 -%}
        {{ exceptions.raise_compiler_error(
            "lake-day staging model " ~ model_name ~ " must be named stg_<source>__<table>") }}
    {%- endif -%}
    {{ return(parts[0] ~ '/' ~ parts[1]) }}
{% endmacro %}

{% macro model_checksum() %}
    {{ return((model.get('checksum') or {}).get('checksum', '')) }}
{% endmacro %}

{#- True when the current model's ledger was written by its current SQL (and exists). -#}
{% macro ledger_matches_sql() %}
    {%- set query -%}
        select count(*) filter (where model_checksum = '{{ model_checksum() }}'), count(*)
        from fleet_build.lake_built where model = '{{ this.identifier }}'
    {%- endset -%}
    {%- set counts = run_query(query).rows[0] -%}
    {{ return(counts[0] > 0 and counts[0] == counts[1]) }}
{% endmacro %}

{#- True when the current model is a lake-day incremental table being updated in place. -#}
{% macro lake_days_incremental() %}
    {{ return(execute and config.get('materialized') == 'incremental' and is_incremental()) }}
{% endmacro %}

{#- The UTC days (YYYY-MM-DD strings) this staging model must rebuild, or none for "all". -#}
{% macro lake_days_to_build() %}
    {%- if not lake_days_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {%- do ensure_lake_snapshot() -%}
    {%- set model_name = this.identifier -%}
    {%- if not ledger_matches_sql() -%}
        {{ return(none) }}  {#- never built by this SQL: every day -#}
    {%- endif -%}
    {%- set query -%}
        with now as (
            select day, fingerprint from fleet_build.lake_days
            where lake_table = '{{ lake_table_of(model_name) }}'
        ),
        built as (
            select day, fingerprint from fleet_build.lake_built where model = '{{ model_name }}'
        )
        select strftime(coalesce(now.day, built.day), '%Y-%m-%d') as day
        from now
        full join built on built.day = now.day
        where now.fingerprint is null
            or built.fingerprint is null
            or now.fingerprint <> built.fingerprint
        {%- if var('fleet_from_day', none) %}
            or coalesce(now.day, built.day) between date '{{ var("fleet_from_day") }}'
                and date '{{ var("fleet_to_day", var("fleet_from_day")) }}'
        {%- endif %}
        order by 1
    {%- endset -%}
    {{ return(run_query(query).columns[0].values() | list) }}
{% endmacro %}

{#- `<lake>/<source>/<table>/day=<day>/*.parquet` of those of `days` that hold files now. -#}
{% macro lake_day_folders(lake_table, days) %}
    {%- if days | length == 0 -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set query -%}
        select strftime(day, '%Y-%m-%d') from fleet_build.lake_days
        where lake_table = '{{ lake_table }}' and {{ days_filter(days) }}
        order by 1
    {%- endset -%}
    {%- set folders = [] -%}
    {%- for day in run_query(query).columns[0].values() -%}
        {%- do folders.append(lake_dir() ~ '/' ~ lake_table ~ '/day=' ~ day ~ '/*.parquet') -%}
    {%- endfor -%}
    {{ return(folders) }}
{% endmacro %}

{#- pre-hook: drop the rows of the days about to be re-read (all of them when `days` is none). -#}
{% macro lake_days_delete() %}
    {%- if lake_days_incremental() -%}
        delete from {{ this }} where {{ days_filter(lake_days_to_build()) }}
    {%- endif -%}
{% endmacro %}

{#- post-hook: the model now holds every day of this run's listing. -#}
{% macro lake_days_record() %}
    {%- if execute and config.get('materialized') == 'incremental' -%}
        {%- do ensure_lake_snapshot() -%}
        delete from fleet_build.lake_built where model = '{{ this.identifier }}';
        insert into fleet_build.lake_built
        select
            '{{ this.identifier }}', '{{ model_checksum() }}', lake_table, day, fingerprint, now()
        from fleet_build.lake_days
        where lake_table = '{{ lake_table_of(this.identifier) }}'
    {%- endif -%}
{% endmacro %}

{#- Intermediate models incremental by day, downstream of lake-day staging tables.

    Such a model keeps, in the same ledger, the staging tables' own ledger rows as it last
    built from them (lake_table = the staging model's name). It rebuilds a day when a staging
    table's row for that day differs (the staging table re-read it), plus `margin` days either
    side, for rows whose inputs reach across midnight. Comparing with what the staging tables
    hold (their ledger rows and SQL checksum), not with the lake listing, keeps it exact when
    only some models are built or a staging model's SQL changed.
    `checks` maps a name to a query returning one fingerprint of an input read whole (e.g. the
    vehicles' tank sizes): when it changes, every day is rebuilt. -#}

{% macro upstream_days_to_build(inputs, checks={}, margin=1) %}
    {%- if not (execute and is_incremental()) -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set model_name = this.identifier -%}
    {%- if not ledger_matches_sql() -%}
        {{ return(none) }}  {#- never built by this SQL: every day -#}
    {%- endif -%}
    {%- for name, query in checks.items() -%}
        {%- set recorded -%}
            select fingerprint from fleet_build.lake_built
            where model = '{{ model_name }}' and lake_table = '{{ name }}'
        {%- endset -%}
        {%- set before = run_query(recorded).columns[0].values() -%}
        {%- set now = run_query(query).columns[0].values() -%}
        {%- if before | list != now | list -%}
            {{ return(none) }}
        {%- endif -%}
    {%- endfor -%}
    {%- set query -%}
        with now_by_model as (
            select model as lake_table, day, fingerprint || '@' || model_checksum as fingerprint
            from fleet_build.lake_built
            where model in ({{ quoted_list(inputs) }})
        ),
        built as (
            select lake_table, day, fingerprint from fleet_build.lake_built
            where model = '{{ model_name }}' and lake_table in ({{ quoted_list(inputs) }})
        ),
        changed as (
            select coalesce(now_by_model.day, built.day) as day
            from now_by_model
            full join built
                on built.lake_table = now_by_model.lake_table and built.day = now_by_model.day
            where now_by_model.fingerprint is null
                or built.fingerprint is null
                or now_by_model.fingerprint <> built.fingerprint
            {%- if var('fleet_from_day', none) %}
            union all
            select unnest(generate_series(
                date '{{ var("fleet_from_day") }}',
                date '{{ var("fleet_to_day", var("fleet_from_day")) }}',
                interval 1 day
            ))::date
            {%- endif %}
        )
        select distinct strftime(day + to_days(shift), '%Y-%m-%d') as day
        from changed, range(-{{ margin }}, {{ margin }} + 1) as shifts(shift)
        order by 1
    {%- endset -%}
    {{ return(run_query(query).columns[0].values() | list) }}
{% endmacro %}

{% macro quoted_list(names) -%}
    {%- for name in names %}'{{ name }}'{{ ", " if not loop.last }}{% endfor -%}
{%- endmacro %}

{#- pre-hook of such a model: drop the rows of the days about to be rebuilt. -#}
{% macro upstream_days_delete(inputs, checks={}, margin=1) %}
    {%- if execute and is_incremental() -%}
        delete from {{ this }} where {{ days_filter(upstream_days_to_build(inputs, checks, margin)) }}
    {%- endif -%}
{% endmacro %}

{#- post-hook: the model now reflects its inputs' ledgers and checks as they stand. -#}
{% macro upstream_days_record(inputs, checks={}) %}
    {%- if execute -%}
        delete from fleet_build.lake_built where model = '{{ this.identifier }}';
        insert into fleet_build.lake_built
        select
            '{{ this.identifier }}', '{{ model_checksum() }}', model, day,
            fingerprint || '@' || model_checksum, now()
        from fleet_build.lake_built
        where model in ({{ quoted_list(inputs) }});
        {%- for name, query in checks.items() %}
        insert into fleet_build.lake_built
        select '{{ this.identifier }}', '{{ model_checksum() }}', '{{ name }}', null, ({{ query }}), now();
        {%- endfor %}
    {%- endif -%}
{% endmacro %}

{#- config() of a model incremental by day over staging ledgers: `inputs`, the staging models
    it reads by day; `checks`, the name of a macro returning its whole-input fingerprints
    (e.g. 'metrotec_fuel_setup_check'), if any. -#}
{% macro upstream_days_config(inputs, checks=none) %}
    {%- set checks_call = checks ~ '()' if checks else '{}' -%}
    {{ config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='sync_all_columns',
        pre_hook="{{ upstream_days_delete(" ~ inputs ~ ", " ~ checks_call ~ ") }}",
        post_hook="{{ upstream_days_record(" ~ inputs ~ ", " ~ checks_call ~ ") }}",
    ) }}
{% endmacro %}
