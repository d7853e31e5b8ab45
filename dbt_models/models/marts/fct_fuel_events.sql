-- One row per refuel or drain per source, in UTC and litres. The same refuel reported by
-- several sources (same vehicle and type, within var fuel_event_match_minutes) keeps every
-- row, and all but the first source in var fuel_source_priority point at it in
-- is_duplicate_of, so fleet_daily counts it once. Daily by the event's instant: a build
-- matches its days' events with those of the day either side (the match is 30 minutes).
{{ daily_table('occurred_at') }}

with events as (
    select * from {{ ref('int_fuel_events__unioned') }}
    where {{ in_days('occurred_at', 1, 1) }}
),

vehicles as (
    select * from {{ ref('int_vehicle_identities') }}
),

resolved as (
    select
        events.*,
        vehicles.vehicle_id,
        {{ source_rank('events.source', 'fuel_source_priority') }} as source_rank
    from events
    left join vehicles
        on vehicles.source = events.source
        and vehicles.source_vehicle_id = events.source_vehicle_id
),

duplicates as (
    select
        copy.fuel_event_id,
        arg_min(kept.fuel_event_id, kept.source_rank) as is_duplicate_of
    from resolved as copy
    inner join resolved as kept
        on kept.vehicle_id = copy.vehicle_id
        and kept.event_type = copy.event_type
        and kept.source_rank < copy.source_rank
        and abs(epoch(kept.occurred_at) - epoch(copy.occurred_at))
        <= {{ var('fuel_event_match_minutes') }} * 60
    group by 1
),

final as (
    select
        resolved.fuel_event_id,
        resolved.source,
        resolved.vehicle_id,
        resolved.occurred_at,
        resolved.event_type,
        resolved.volume_l,
        resolved.level_before_l,
        resolved.level_after_l,
        resolved.lat,
        resolved.lon,
        resolved.address,
        duplicates.is_duplicate_of
    from resolved
    left join duplicates on duplicates.fuel_event_id = resolved.fuel_event_id
    where {{ in_days('resolved.occurred_at') }}
)

select * from final
