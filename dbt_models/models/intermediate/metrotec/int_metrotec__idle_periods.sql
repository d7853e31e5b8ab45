-- Metrotec stops with the engine running (runningTime > 0) in the fct_idle_periods shape:
-- idling from the halt (startTime) until the engine stopped or the vehicle moved off
-- (stopTime). Position from a fuel level reading taken during the idle, when there is one.
--
-- Daily by the stop's lake day (its UTC start day): readings and trips are read only around
-- the day's stops (a stop over 24 h long, or inside a trip that began over a day before it, is
-- right after a build of the days it spans).
{{ daily_table('day') }}

with stops as (
    select * from {{ ref('stg_metrotec__stops') }}
    where is_engine_running and {{ in_days('day') }}
),

routelog as (
    select source_trip_id, source_vehicle_id, started_at, ended_at
    from {{ ref('stg_metrotec__routelog') }}
    where {{ in_days('started_at', 2, 1) }}
),

fixes as (
    select source_vehicle_id, recorded_at, lat, lon, address
    from {{ ref('stg_metrotec__fuel_levels') }}
    where lat is not null and lon is not null and {{ in_days('recorded_at', 2, 1) }}
),

reach as (
    select
        min(started_at) - interval 1 day as reach_from,
        max(greatest(started_at, coalesce(engine_stopped_at, started_at))) as reach_to
    from stops
),

-- The route log's trips: the ids int_metrotec__trips gives them.
trips as (
    select
        md5('metrotec|' || source_trip_id) as trip_id,
        source_vehicle_id,
        started_at,
        ended_at
    from routelog
    {%- if fleet_window() is not none %}
        where started_at between (select reach.reach_from from reach) and (select reach.reach_to from reach)
    {%- endif %}
),

positions as (
    select *
    from fixes
    {%- if fleet_window() is not none %}
        where recorded_at between (select reach.reach_from from reach) and (select reach.reach_to from reach)
    {%- endif %}
),

located as (
    {{ latest_reading(
        'stops', 'positions',
        at='stops.engine_stopped_at', since='stops.started_at', columns=['lat', 'lon', 'address'],
    ) }}
),

in_trip as (
    select
        located.*,
        case when located.started_at < trips.ended_at then trips.trip_id end as trip_id
    from located
    asof left join trips
        on trips.source_vehicle_id = located.source_vehicle_id
        and trips.started_at <= located.started_at
),

final as (
    select
        md5('metrotec|' || source_stop_id) as idle_period_id,
        'metrotec' as source,
        source_vehicle_id,
        started_at,
        engine_stopped_at as ended_at,
        running_s as duration_s,
        lat,
        lon,
        address,
        trip_id,
        day
    from in_trip
)

select * from final
