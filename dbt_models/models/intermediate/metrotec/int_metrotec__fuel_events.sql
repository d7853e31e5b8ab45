-- Metrotec refuels in the fct_fuel_events shape: event_type 'refuel', volume = after - before.
-- Position from the last fuel level reading at or before the refuel began (the parked vehicle)
-- when one was taken in the hour before.
-- Daily by the refuel's start (its lake day).
{{ daily_table('occurred_at') }}

with refuels as (
    select * from {{ ref('stg_metrotec__refuels') }}
    where {{ in_days('day', 1, 1) }} and {{ in_days('started_at') }}
),

fixes as (
    select source_vehicle_id, recorded_at, lat, lon, day
    from {{ ref('stg_metrotec__fuel_levels') }}
    where lat is not null and lon is not null and {{ in_days('day', 1, 0) }}
),

-- Only the readings of a refuelling vehicle on the UTC day of the refuel or of the hour before
-- it: the one used lies within that hour, so the answer is the same, without ordering a year
-- of readings for a few thousand refuels. Matched on the lake day (the reading's UTC date).
refuel_days as (
    select distinct source_vehicle_id, cast(started_at at time zone 'UTC' as date) as on_day
    from refuels
    union
    select distinct
        source_vehicle_id, cast((started_at - interval 1 hour) at time zone 'UTC' as date) as on_day
    from refuels
),

positions as (
    select fixes.source_vehicle_id, fixes.recorded_at, fixes.lat, fixes.lon
    from fixes
    semi join refuel_days
        on refuel_days.source_vehicle_id = fixes.source_vehicle_id
        and refuel_days.on_day = fixes.day
),

located as (
    {{ latest_reading(
        'refuels', 'positions',
        at='refuels.started_at', since='refuels.started_at - interval 1 hour', columns=['lat', 'lon'],
    ) }}
),

final as (
    select
        md5('metrotec|' || source_refuel_id) as fuel_event_id,
        'metrotec' as source,
        source_vehicle_id,
        started_at as occurred_at,
        'refuel' as event_type,
        volume_l,
        level_before_l,
        level_after_l,
        lat,
        lon,
        address
    from located
    -- A "refuel" whose level did not rise is a sensor artefact; one with unknown levels stays.
    where volume_l is null or volume_l > 0
)

select * from final
