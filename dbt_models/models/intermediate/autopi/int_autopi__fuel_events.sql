-- AutoPi refuels, found as fuel level jumps (percent of the tank) between one trip's last
-- reading and the next trip's first reading of the same device: a rise of at least var
-- autopi_refuel_min_rise_pct is a refuel (AutoPi only reports while the engine runs, and
-- vehicles refuel parked). Litres need the tank size (seed autopi_vehicle_tanks); devices
-- without one give no events, since a percentage alone cannot say how much was added. The
-- refuel is dated at the last reading before the rise and placed at that trip's last fix.
-- Daily by the refuel's instant. The pair of trips around a refuel may lie days apart (a
-- vehicle parked over a weekend), so every trip's summary row is read (one row per trip, no
-- datapoint) and the build keeps the refuels of its days. A trip landing late changes the
-- refuel dated at the previous trip's end: if that trip ended more than a day before, that
-- day is rebuilt by a build of its own partition, not by the automation's neighbour days.
{{ daily_table('occurred_at') }}

with trips as (
    select source_trip_id, source_vehicle_id, started_at from {{ ref('stg_autopi__trips') }}
),

readings as (
    select * from {{ ref('int_autopi__trip_readings') }}
    where first_level_pct is not null
),

tanks as (
    select * from {{ ref('autopi_vehicle_tanks') }}
),

steps as (
    select
        trips.source_vehicle_id,
        readings.first_level_pct as level_after_pct,
        lag(readings.last_level_pct) over by_trip as level_before_pct,
        lag(readings.last_level_at) over by_trip as before_at,
        lag(readings.last_lat) over by_trip as lat,
        lag(readings.last_lon) over by_trip as lon
    from readings
    inner join trips on trips.source_trip_id = readings.source_trip_id
    window by_trip as (partition by trips.source_vehicle_id order by trips.started_at)
),

final as (
    select
        md5(
            'autopi|' || steps.source_vehicle_id || '|'
            || strftime(steps.before_at at time zone 'UTC', '%Y-%m-%dT%H:%M:%S.%f')
        ) as fuel_event_id,
        'autopi' as source,
        steps.source_vehicle_id,
        steps.before_at as occurred_at,
        'refuel' as event_type,
        round((steps.level_after_pct - steps.level_before_pct) / 100.0 * tanks.tank_l, 1)
            as volume_l,
        round(steps.level_before_pct / 100.0 * tanks.tank_l, 1) as level_before_l,
        round(steps.level_after_pct / 100.0 * tanks.tank_l, 1) as level_after_l,
        steps.lat,
        steps.lon,
        cast(null as varchar) as address
    from steps
    inner join tanks on tanks.source_vehicle_id = steps.source_vehicle_id
    where steps.level_after_pct - steps.level_before_pct >= {{ var('autopi_refuel_min_rise_pct') }}
        and {{ in_days('steps.before_at') }}
)

select * from final
