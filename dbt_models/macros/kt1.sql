{#- Fingerprint of which kt1 assets send idling events: int_kt1__idle_periods takes an asset's
    periods from its idling events when it has any, else from its telemetry, so a change here
    rebuilds every day of it (macros/lake_days.sql). -#}
{% macro kt1_idle_evidence_check() %}
    {%- set query -%}
        select md5(coalesce(string_agg(distinct source_vehicle_id, ',' order by source_vehicle_id), ''))
        from {{ ref('stg_kt1__events') }}
        where event_class = 'idle' and event_type = 'idling'
            and try_cast(json_extract_string(details, '$.dateEnd') as timestamptz)
                > try_cast(json_extract_string(details, '$.dateStart') as timestamptz)
    {%- endset -%}
    {{ return({'kt1_idling_assets': query}) }}
{% endmacro %}
