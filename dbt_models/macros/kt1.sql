{#- kt1's idling events that measured a period (dateStart before dateEnd): int_kt1__idle_periods
    takes an asset's periods from these when it has any, else from its telemetry. -#}
{% macro kt1_measured_idling() %}
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
        where event_class = 'idle' and event_type = 'idling'
    )
    where started_at is not null and ended_at > started_at
{% endmacro %}

{#- Fingerprint of which assets have such events: a change rebuilds every day of
    int_kt1__idle_periods (macros/lake_days.sql). -#}
{% macro kt1_idle_evidence_check() %}
    {%- set query -%}
        select md5(coalesce(string_agg(distinct asset_id, ',' order by asset_id), ''))
        from ({{ kt1_measured_idling() }})
    {%- endset -%}
    {{ return({'kt1_idling_assets': query}) }}
{% endmacro %}
