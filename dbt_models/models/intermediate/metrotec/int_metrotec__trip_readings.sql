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

fuel_readings as (
    select * from {{ ref('int_metrotec__fuel_readings') }}
    where {{ in_days('recorded_at', 1, 1) }}
),

refuels as (
    select * from {{ ref('stg_metrotec__refuels') }}
),

reach as (
    select
        min(started_at) - interval 6 hour as reach_from,
        max(coalesce(ended_at, started_at)) + interval 6 hour as reach_to
    from trips
),

readings as (
    select *
    from fuel_readings
    {%- if fleet_window() is not none %}
        where recorded_at between (select reach.reach_from from reach) and (select reach.reach_to from reach)
    {%- endif %}
),

levels as (
    select source_vehicle_id, recorded_at, level_l from readings
    where level_l is not null
),

positions as (
    select source_vehicle_id, recorded_at, lat, lon
    from readings
    where lat is not null and lon is not null
),

level_bounds as (
    {{ readings_at_trip_ends('levels', ['recorded_at', 'level_l']) }}
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
        and refuels.started_at >= level_bounds.start_recorded_at
        and refuels.started_at < level_bounds.end_recorded_at
    group by 1
),

position_bounds as (
    {{ readings_at_trip_ends('positions', ['lat', 'lon']) }}
),

final as (
    select
        level_bounds.source_trip_id,
        trips.day,
        level_bounds.start_recorded_at as level_start_at,
        level_bounds.start_level_l as level_start_l,
        level_bounds.end_recorded_at as level_end_at,
        level_bounds.end_level_l as level_end_l,
        coalesce(refuelled.refuelled_l, 0) as refuelled_l,
        case
            -- A refuel without a volume, or readings out of order, leave the use unknown.
            when level_bounds.start_recorded_at >= level_bounds.end_recorded_at then null
            when coalesce(refuelled.refuels_without_volume, 0) > 0 then null
            -- A rise the refuels do not explain (a missed refuel, a sensor jump) is not a use;
            -- a small one is sensor noise around a use below its resolution.
            when level_bounds.start_level_l - level_bounds.end_level_l
                + coalesce(refuelled.refuelled_l, 0) < -1.0 then null
            else
                round(
                    greatest(
                        level_bounds.start_level_l - level_bounds.end_level_l
                        + coalesce(refuelled.refuelled_l, 0),
                        0
                    ),
                    2
                )
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
