-- Metrotec stops with the engine running (runningTime > 0) in the fct_idle_periods shape:
-- idling from the halt (startTime) until the engine stopped or the vehicle moved off
-- (stopTime). Position from a fuel level reading taken during the idle, when there is one.
with stops as (
    select * from {{ ref('stg_metrotec__stops') }}
    where is_engine_running
),

trips as (
    select * from {{ ref('int_metrotec__trips') }}
),

positions as (
    select source_vehicle_id, recorded_at, lat, lon, address
    from {{ ref('int_metrotec__fuel_readings') }}
    where lat is not null and lon is not null
),

located as (
    select
        stops.*,
        case when positions.recorded_at >= stops.started_at then positions.lat end as lat,
        case when positions.recorded_at >= stops.started_at then positions.lon end as lon,
        case when positions.recorded_at >= stops.started_at then positions.address end as address
    from stops
    asof left join positions
        on positions.source_vehicle_id = stops.source_vehicle_id
        and positions.recorded_at <= stops.engine_stopped_at
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
        trip_id
    from in_trip
)

select * from final
