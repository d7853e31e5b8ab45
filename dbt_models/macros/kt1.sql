{#- kt1's idling events that measured a period (dateStart before dateEnd): int_kt1__idle_periods
    takes an asset's periods from these when it has any, else from its telemetry. `lake_days`:
    a predicate on the events' lake `day`. -#}
{% macro kt1_measured_idling(lake_days='true') %}
    select *
    from (
        select
            source_vehicle_id as asset_id,
            source_event_id,
            try_cast(json_extract_string(details, '$.dateStart') as timestamptz) as started_at,
            try_cast(json_extract_string(details, '$.dateEnd') as timestamptz) as ended_at,
            lat,
            lon,
            address
        from {{ ref('stg_kt1__events') }}
        where event_class = 'idle' and event_type = 'idling' and {{ lake_days }}
    )
    where started_at is not null and ended_at > started_at
{% endmacro %}
