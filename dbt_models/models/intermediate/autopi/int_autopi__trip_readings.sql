-- What each AutoPi trip's datapoints say, one row per trip: idle and moving time and top
-- speed from the speed intervals, the GPS track's ends and length, and the first and last
-- fuel level. Daily by the trip's lake day (its UTC start day), like the speed intervals;
-- int_autopi__trips joins it to the trip.
{{ daily_table('day') }}

with trips as (
    select source_trip_id, landed_at as trip_landed_at, day
    from {{ ref('stg_autopi__trips') }}
    where {{ in_days('day') }}
),

points as (
    select source_trip_id, line_no, recorded_at, lat, lon, fuel_level_pct
    from {{ ref('stg_autopi__datapoints') }}
    where {{ in_days('day') }}
),

intervals as (
    select *
    from {{ ref('int_autopi__speed_intervals') }}
    where {{ in_days('day') }}
),

timing as (
    select
        source_trip_id,
        sum(duration_s) filter (where state = 'idle') as idle_s,
        coalesce(sum(duration_s) filter (where state = 'idle'), 0) as idle_or_zero_s,
        max(speed_kmh) as max_speed_kmh
    from intervals
    group by 1
),

positions as (
    select
        source_trip_id,
        recorded_at,
        lat,
        lon,
        lag(lat) over track as prev_lat,
        lag(lon) over track as prev_lon
    from points
    where lat is not null and lon is not null
    window track as (partition by source_trip_id order by recorded_at, line_no)
),

track as (
    select
        source_trip_id,
        arg_min(lat, recorded_at) as first_lat,
        arg_min(lon, recorded_at) as first_lon,
        arg_max(lat, recorded_at) as last_lat,
        arg_max(lon, recorded_at) as last_lon,
        -- haversine on the mean Earth radius, to the metre
        round(sum(
            2 * 6371.0088 * asin(sqrt(
                pow(sin(radians(lat - prev_lat) / 2), 2)
                + cos(radians(prev_lat)) * cos(radians(lat)) * pow(sin(radians(lon - prev_lon) / 2), 2)
            ))
        ), 3) as gps_distance_km
    from positions
    group by 1
),

fuel as (
    select
        source_trip_id,
        arg_min(fuel_level_pct, recorded_at) as first_level_pct,
        min(recorded_at) as first_level_at,
        arg_max(fuel_level_pct, recorded_at) as last_level_pct,
        max(recorded_at) as last_level_at
    from points
    where fuel_level_pct is not null
    group by 1
),

final as (
    select
        trips.source_trip_id,
        timing.source_trip_id is not null as has_speed,
        timing.idle_s,
        timing.idle_or_zero_s,
        timing.max_speed_kmh,
        track.first_lat,
        track.first_lon,
        track.last_lat,
        track.last_lon,
        track.gps_distance_km,
        fuel.first_level_pct,
        fuel.first_level_at,
        fuel.last_level_pct,
        fuel.last_level_at,
        trips.trip_landed_at,
        trips.day
    from trips
    left join timing on timing.source_trip_id = trips.source_trip_id
    left join track on track.source_trip_id = trips.source_trip_id
    left join fuel on fuel.source_trip_id = trips.source_trip_id
)

select * from final
