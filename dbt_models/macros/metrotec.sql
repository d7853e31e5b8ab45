{#- Fingerprint of what turns Metrotec fuel readings into litres (int_metrotec__fuel_readings):
    each vehicle's tank volume and level units. Models incremental by day rebuild every day
    when it changes (macros/lake_days.sql). -#}
{% macro metrotec_fuel_setup_check() %}
    {%- set query -%}
        select md5(coalesce(string_agg(
            source_vehicle_id || ':' || coalesce(cast(tank_volume_l as varchar), '') || ':'
            || coalesce(cast(is_fuel_percent as varchar), '') || ':'
            || coalesce(cast(is_fuel_as_pressure as varchar), ''),
            ',' order by source_vehicle_id
        ), ''))
        from {{ ref('stg_metrotec__vehicles') }}
    {%- endset -%}
    {{ return({'metrotec_fuel_setup': query}) }}
{% endmacro %}
