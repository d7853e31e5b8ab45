-- The time between consecutive speed readings of each AutoPi trip, classified as moving, idle
-- (engine on, speed 0) or engine off. OBD speed is used where the dongle logged it, GPS
-- speed over ground for trips without any. The engine counts as on when the latest rpm
-- reading is above 0, else by the latest engine event; a trip with neither is engine-on,
-- as AutoPi trips run from engine on to engine off. Each interval carries the last GPS fix
-- at or before its start. Daily by the trip's lake day (its UTC start day): a trip's intervals
-- come from its own day's datapoints, so a day's rows need no other day.
{{ daily_table('day') }}

with trips as (
    select source_trip_id, started_at, ended_at, landed_at as trip_landed_at, day
    from {{ ref('stg_autopi__trips') }}
    where {{ in_days('day') }}
),

points as (
    select *
    from {{ ref('stg_autopi__datapoints') }}
    where {{ in_days('day') }}
),

positions as (
    select source_trip_id, recorded_at, lat, lon
    from points
    where lat is not null and lon is not null
    -- one fix per instant (the later line), so a tie never picks a fix at random
    qualify
        row_number() over (
            partition by source_trip_id, recorded_at order by line_no desc
        ) = 1
),

obd_trips as (
    select distinct source_trip_id from points
    where speed_kmh is not null
),

speeds as (
    select source_trip_id, line_no, recorded_at, speed_kmh, 'obd' as speed_source
    from points
    where speed_kmh is not null
    union all
    select
        points.source_trip_id,
        points.line_no,
        points.recorded_at,
        points.gps_speed_kmh as speed_kmh,
        'gps' as speed_source
    from points
    anti join obd_trips on obd_trips.source_trip_id = points.source_trip_id
    where points.gps_speed_kmh is not null
),

rpms as (
    select source_trip_id, recorded_at, rpm from points
    where rpm is not null
),

engine_events as (
    select source_trip_id, recorded_at, event_tag = 'vehicle/engine/running' as engine_running
    from points
    where event_tag like 'vehicle/engine/%'
),

readings as (
    select
        speeds.source_trip_id,
        speeds.line_no,
        speeds.recorded_at,
        speeds.speed_kmh,
        speeds.speed_source,
        coalesce(rpms.rpm > 0, engine_events.engine_running, true) as engine_on,
        positions.lat,
        positions.lon
    from speeds
    asof left join rpms
        on rpms.source_trip_id = speeds.source_trip_id
        and rpms.recorded_at <= speeds.recorded_at
    asof left join engine_events
        on engine_events.source_trip_id = speeds.source_trip_id
        and engine_events.recorded_at <= speeds.recorded_at
    asof left join positions
        on positions.source_trip_id = speeds.source_trip_id
        and positions.recorded_at <= speeds.recorded_at
),

intervals as (
    select
        readings.source_trip_id,
        readings.line_no,
        readings.recorded_at as started_at,
        -- the last reading lasts until the trip ends
        greatest(
            readings.recorded_at,
            least(
                coalesce(
                    lead(readings.recorded_at) over (
                        partition by readings.source_trip_id
                        order by readings.recorded_at, readings.line_no
                    ),
                    trips.ended_at
                ),
                coalesce(trips.ended_at, readings.recorded_at)
            )
        ) as ended_at,
        readings.speed_kmh,
        readings.speed_source,
        readings.lat,
        readings.lon,
        trips.trip_landed_at,
        trips.day,
        case
            when not readings.engine_on then 'engine_off'
            when readings.speed_kmh > 0 then 'moving'
            else 'idle'
        end as state
    from readings
    inner join trips on trips.source_trip_id = readings.source_trip_id
),

final as (
    select
        source_trip_id,
        line_no,
        started_at,
        ended_at,
        epoch(ended_at) - epoch(started_at) as duration_s,
        speed_kmh,
        speed_source,
        state,
        lat,
        lon,
        trip_landed_at,
        day
    from intervals
)

select * from final
