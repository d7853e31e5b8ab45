-- What the fuel level log says about each Metrotec route log trip: the tank level before and
-- after it, litres refuelled in between, the fuel used (an ESTIMATE: the route log carries no
-- fuel figure) and where the trip started and ended.
--
-- "Before" is the last reading at or before engine on, taken in the parking that preceded the
-- trip (not before the previous trip ended, at most 6 h back), else the first reading inside
-- the trip. "After" is the first reading at or after engine off, in the parking that followed
-- (until the next trip started, at most 6 h on), else the last reading inside the trip.
-- Parked, the level only moves with a refuel, whose litres are added back.
--
-- Daily by the route log's lake day (the trip's UTC start day). Readings are read over the
-- rebuilt trips' time span (a reading outside a trip's 6 h reach is never used), refuels
-- whole (one row per refuel).
-- depends_on: {{ ref('stg_metrotec__vehicles') }}
{{ daily_table('day') }}

with trips as (
    select
        source_trip_id,
        source_vehicle_id,
        started_at,
        ended_at,
        greatest(previous_ended_at, started_at - interval 6 hour) as parked_before_from,
        least(parked_until, ended_at + interval 6 hour) as parked_after_until,
        day
    from {{ ref('stg_metrotec__routelog') }}
    where {{ in_days('day') }}
),

reach as (
    select
        min(started_at) - interval 6 hour as reach_from,
        max(coalesce(ended_at, started_at)) + interval 6 hour as reach_to
    from trips
),

readings as (
    select *
    from {{ ref('int_metrotec__fuel_readings') }}
    {%- if fleet_window() is not none %}
    where {{ in_days('recorded_at', 1, 1) }}
        and recorded_at between (select reach_from from reach) and (select reach_to from reach)
    {%- endif %}
),

levels as (
    select source_vehicle_id, recorded_at, level_l from readings where level_l is not null
),

positions as (
    select source_vehicle_id, recorded_at, lat, lon
    from readings
    where lat is not null and lon is not null
),

refuels as (
    select * from {{ ref('stg_metrotec__refuels') }}
),

level_candidates as (
    select
        trips.*,
        before_start.recorded_at as before_start_at,
        before_start.level_l as before_start_l,
        after_start.recorded_at as after_start_at,
        after_start.level_l as after_start_l,
        after_end.recorded_at as after_end_at,
        after_end.level_l as after_end_l,
        before_end.recorded_at as before_end_at,
        before_end.level_l as before_end_l
    from trips
    asof left join levels as before_start
        on before_start.source_vehicle_id = trips.source_vehicle_id
        and before_start.recorded_at <= trips.started_at
    asof left join levels as after_start
        on after_start.source_vehicle_id = trips.source_vehicle_id
        and after_start.recorded_at >= trips.started_at
    asof left join levels as after_end
        on after_end.source_vehicle_id = trips.source_vehicle_id
        and after_end.recorded_at >= trips.ended_at
    asof left join levels as before_end
        on before_end.source_vehicle_id = trips.source_vehicle_id
        and before_end.recorded_at <= trips.ended_at
),

level_bounds as (
    select
        source_trip_id,
        source_vehicle_id,
        case
            when before_start_at >= parked_before_from then before_start_at
            when after_start_at < ended_at then after_start_at
        end as level_start_at,
        case
            when before_start_at >= parked_before_from then before_start_l
            when after_start_at < ended_at then after_start_l
        end as level_start_l,
        case
            when after_end_at <= parked_after_until then after_end_at
            when before_end_at > started_at then before_end_at
        end as level_end_at,
        case
            when after_end_at <= parked_after_until then after_end_l
            when before_end_at > started_at then before_end_l
        end as level_end_l
    from level_candidates
),

refuelled as (
    select
        level_bounds.source_trip_id,
        sum(refuels.volume_l) as refuelled_l,
        count(refuels.source_refuel_id) as refuels,
        count(refuels.source_refuel_id) - count(refuels.volume_l) as refuels_without_volume
    from level_bounds
    inner join refuels
        on refuels.source_vehicle_id = level_bounds.source_vehicle_id
        and refuels.started_at >= level_bounds.level_start_at
        and refuels.started_at < level_bounds.level_end_at
    group by 1
),

position_candidates as (
    select
        trips.source_trip_id,
        trips.started_at,
        trips.ended_at,
        trips.parked_before_from,
        trips.parked_after_until,
        before_start.recorded_at as before_start_at,
        before_start.lat as before_start_lat,
        before_start.lon as before_start_lon,
        after_start.recorded_at as after_start_at,
        after_start.lat as after_start_lat,
        after_start.lon as after_start_lon,
        after_end.recorded_at as after_end_at,
        after_end.lat as after_end_lat,
        after_end.lon as after_end_lon,
        before_end.recorded_at as before_end_at,
        before_end.lat as before_end_lat,
        before_end.lon as before_end_lon
    from trips
    asof left join positions as before_start
        on before_start.source_vehicle_id = trips.source_vehicle_id
        and before_start.recorded_at <= trips.started_at
    asof left join positions as after_start
        on after_start.source_vehicle_id = trips.source_vehicle_id
        and after_start.recorded_at >= trips.started_at
    asof left join positions as after_end
        on after_end.source_vehicle_id = trips.source_vehicle_id
        and after_end.recorded_at >= trips.ended_at
    asof left join positions as before_end
        on before_end.source_vehicle_id = trips.source_vehicle_id
        and before_end.recorded_at <= trips.ended_at
),

position_bounds as (
    select
        source_trip_id,
        case
            when before_start_at >= parked_before_from then before_start_lat
            when after_start_at < ended_at then after_start_lat
        end as start_lat,
        case
            when before_start_at >= parked_before_from then before_start_lon
            when after_start_at < ended_at then after_start_lon
        end as start_lon,
        case
            when after_end_at <= parked_after_until then after_end_lat
            when before_end_at > started_at then before_end_lat
        end as end_lat,
        case
            when after_end_at <= parked_after_until then after_end_lon
            when before_end_at > started_at then before_end_lon
        end as end_lon
    from position_candidates
),

final as (
    select
        level_bounds.source_trip_id,
        trips.day,
        level_bounds.level_start_at,
        level_bounds.level_start_l,
        level_bounds.level_end_at,
        level_bounds.level_end_l,
        coalesce(refuelled.refuelled_l, 0) as refuelled_l,
        case
            -- A refuel without a volume, or readings out of order, leave the use unknown.
            when level_bounds.level_start_at >= level_bounds.level_end_at then null
            when coalesce(refuelled.refuels_without_volume, 0) > 0 then null
            -- A rise the refuels do not explain (a missed refuel, a sensor jump) is not a use;
            -- a small one is sensor noise around a use below its resolution.
            when level_bounds.level_start_l - level_bounds.level_end_l
                + coalesce(refuelled.refuelled_l, 0) < -1.0 then null
            else round(greatest(
                level_bounds.level_start_l - level_bounds.level_end_l
                + coalesce(refuelled.refuelled_l, 0),
                0
            ), 2)
        end as fuel_used_l,
        position_bounds.start_lat,
        position_bounds.start_lon,
        position_bounds.end_lat,
        position_bounds.end_lon
    from level_bounds
    inner join trips on trips.source_trip_id = level_bounds.source_trip_id
    left join refuelled
        on refuelled.source_trip_id = level_bounds.source_trip_id
    left join position_bounds
        on position_bounds.source_trip_id = level_bounds.source_trip_id
)

select * from final
