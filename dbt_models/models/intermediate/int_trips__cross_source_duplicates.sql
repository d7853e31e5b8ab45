-- The same physical trip reported by several sources: one copy is primary, the others point
-- at it. Two trips of one vehicle from different sources are the same trip when their time
-- spans overlap by at least `trip_overlap_share` of the shorter one; the primary is the copy
-- from the source earliest in `trip_source_priority` (richest data first).
-- Daily by the copy's start: a build compares its days' trips with every trip started from
-- the day before to the day after (trips are under a day long).
{{ daily_table('started_at') }}

with unioned as (
    select * from {{ ref('int_trips__unioned') }}
    where {{ in_days('started_at', 1, 1) }}
),

vehicles as (
    select * from {{ ref('int_vehicle_identities') }}
),

trips as (
    select
        unioned.trip_id,
        unioned.source,
        unioned.started_at,
        coalesce(unioned.ended_at, unioned.started_at + to_seconds(coalesce(unioned.duration_s, 0)))
            as ended_at,
        vehicles.vehicle_id,
        {{ source_rank('unioned.source') }} as source_rank
    from unioned
    inner join vehicles
        on vehicles.source = unioned.source
        and vehicles.source_vehicle_id = unioned.source_vehicle_id
),

-- Each trip under every UTC day it spans: overlapping trips share a day, so comparing only
-- trips of one vehicle-day is exact, where a vehicle-wide join compared every pair of a
-- year's trips.
trip_days as (
    select
        *,
        unnest(range(
            cast(floor(epoch(started_at) / 86400) as bigint),
            cast(floor(epoch(ended_at) / 86400) as bigint) + 1
        )) as day_number
    from trips
),

overlapping as (
    select distinct
        copy.trip_id,
        copy.started_at as copy_started_at,
        primary_copy.trip_id as is_duplicate_of,
        primary_copy.source_rank,
        primary_copy.started_at
    from trip_days as copy
    inner join trip_days as primary_copy
        on primary_copy.vehicle_id = copy.vehicle_id
        and primary_copy.day_number = copy.day_number
        and primary_copy.source_rank < copy.source_rank
        and primary_copy.started_at < copy.ended_at
        and primary_copy.ended_at > copy.started_at
    where
        epoch(least(copy.ended_at, primary_copy.ended_at))
        - epoch(greatest(copy.started_at, primary_copy.started_at))
        >= {{ var('trip_overlap_share') }} * greatest(
            least(
                epoch(copy.ended_at) - epoch(copy.started_at),
                epoch(primary_copy.ended_at) - epoch(primary_copy.started_at)
            ),
            1
        )
),

final as (
    select trip_id, is_duplicate_of, copy_started_at as started_at
    from overlapping
    where {{ in_days('copy_started_at') }}
    qualify
        row_number() over (
            partition by trip_id order by source_rank, started_at, is_duplicate_of
        ) = 1
)

select * from final
