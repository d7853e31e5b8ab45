-- AutoPi refuels, found as jumps in the fuel level (percent of the tank) between consecutive
-- readings of one device: a rise of at least var autopi_refuel_min_rise_pct is a refuel.
-- Litres need the tank size (seed autopi_vehicle_tanks); devices without one give no events,
-- since a percentage alone cannot say how much was added. AutoPi only reports during trips,
-- so the refuel is dated at the last reading before the rise (the vehicle parked after that
-- trip) and placed at the last GPS fix up to then.
with trips as (
    select source_trip_id, source_vehicle_id from {{ ref('stg_autopi__trips') }}
),

points as (
    select
        trips.source_vehicle_id,
        points.recorded_at,
        points.fuel_level_pct,
        points.lat,
        points.lon
    from {{ ref('stg_autopi__datapoints') }} as points
    inner join trips on trips.source_trip_id = points.source_trip_id
    where points.fuel_level_pct is not null or (points.lat is not null and points.lon is not null)
),

steps as (
    select
        source_vehicle_id,
        recorded_at,
        fuel_level_pct,
        lag(fuel_level_pct) over by_time as level_before_pct,
        lag(recorded_at) over by_time as before_at
    from points
    where fuel_level_pct is not null
    window by_time as (partition by source_vehicle_id order by recorded_at)
),

rises as (
    select *
    from steps
    where fuel_level_pct - level_before_pct >= {{ var('autopi_refuel_min_rise_pct') }}
),

fixes as (
    select source_vehicle_id, recorded_at, lat, lon
    from points
    where lat is not null and lon is not null
),

located as (
    select
        rises.*,
        fixes.lat,
        fixes.lon
    from rises
    asof left join fixes
        on fixes.source_vehicle_id = rises.source_vehicle_id
        and fixes.recorded_at <= rises.before_at
),

tanks as (
    select * from {{ ref('autopi_vehicle_tanks') }}
),

final as (
    select
        md5('autopi|' || located.source_vehicle_id || '|' || cast(located.before_at as varchar))
            as fuel_event_id,
        'autopi' as source,
        located.source_vehicle_id,
        located.before_at as occurred_at,
        'refuel' as event_type,
        round((located.fuel_level_pct - located.level_before_pct) / 100.0 * tanks.tank_l, 1)
            as volume_l,
        round(located.level_before_pct / 100.0 * tanks.tank_l, 1) as level_before_l,
        round(located.fuel_level_pct / 100.0 * tanks.tank_l, 1) as level_after_l,
        located.lat,
        located.lon,
        cast(null as varchar) as address
    from located
    inner join tanks on tanks.source_vehicle_id = located.source_vehicle_id
)

select * from final
