-- kt1 refuel events in the fct_fuel_events shape. kt1 reports the refuel itself (`details`:
-- dateStart, dateEnd, volume, levelBefore, levelAfter, in litres), so no tank size is needed;
-- the volume is after - before as for Metrotec, else kt1's own `volume`.
-- Daily by the refuel's instant (its dateStart, which may fall on the lake day before).
{{ daily_table('occurred_at') }}

with events as (
    select * from {{ ref('stg_kt1__events') }}
    where event_class = 'fuel' and event_type = 'refuel' and {{ in_days('day', 1, 1) }}
),

typed as (
    select
        source_event_id,
        source_vehicle_id,
        coalesce(
            try_cast(json_extract_string(details, '$.dateStart') as timestamptz), occurred_at
        ) as occurred_at,
        try_cast(json_extract_string(details, '$.volume') as double) as reported_volume_l,
        try_cast(json_extract_string(details, '$.levelBefore') as double) as level_before_l,
        try_cast(json_extract_string(details, '$.levelAfter') as double) as level_after_l,
        lat,
        lon,
        address
    from events
),

conformed as (
    select
        md5('kt1|' || source_event_id) as fuel_event_id,
        'kt1' as source,
        source_vehicle_id,
        occurred_at,
        'refuel' as event_type,
        coalesce(round(level_after_l - level_before_l, 1), reported_volume_l) as volume_l,
        level_before_l,
        level_after_l,
        lat,
        lon,
        address
    from typed
),

final as (
    select *
    from conformed
    -- A "refuel" whose level did not rise is a sensor artefact; one with unknown volume stays.
    where (volume_l is null or volume_l > 0) and {{ in_days('occurred_at') }}
)

select * from final
