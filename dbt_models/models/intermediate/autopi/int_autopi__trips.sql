-- AutoPi trips in the conformed shape of int_trips__unioned. Distance is the trip object's,
-- or the GPS track's length when the export has none; idle seconds are the speed-0,
-- engine-on time between readings (int_autopi__speed_intervals) and driving seconds the
-- rest of the trip; litres come from the fuel-level drop only for vehicles whose tank size
-- is known (seed autopi_vehicle_tanks), since AutoPi reports the level in percent.
with trips as (
    select * from {{ ref('stg_autopi__trips') }}
),

points as (
    select * from {{ ref('stg_autopi__datapoints') }}
),

intervals as (
    select * from {{ ref('int_autopi__speed_intervals') }}
),

tanks as (
    select * from {{ ref('autopi_vehicle_tanks') }}
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
        arg_max(fuel_level_pct, recorded_at) as last_level_pct
    from points
    where fuel_level_pct is not null
    group by 1
),

final as (
    select
        trips.autopi_trip_id as trip_id,
        'autopi' as source,
        trips.source_trip_id,
        trips.source_vehicle_id,
        trips.started_at,
        trips.ended_at,
        coalesce(epoch(trips.ended_at) - epoch(trips.started_at), trips.duration_s) as duration_s,
        case
            when timing.source_trip_id is not null
                then coalesce(epoch(trips.ended_at) - epoch(trips.started_at), trips.duration_s)
                - timing.idle_or_zero_s
        end as driving_s,
        case when timing.source_trip_id is not null then timing.idle_or_zero_s end as idle_s,
        coalesce(trips.distance_km, track.gps_distance_km) as distance_km,
        timing.max_speed_kmh,
        -- A rise means a refuel during the trip: the consumption is unknown then, not negative.
        case
            when fuel.first_level_pct >= fuel.last_level_pct
                then round((fuel.first_level_pct - fuel.last_level_pct) / 100.0 * tanks.tank_l, 3)
        end as fuel_used_l,
        cast(null as double) as fuel_cost,
        case
            when fuel.first_level_pct >= fuel.last_level_pct and tanks.tank_l is not null
                then 'level_drop'
        end as fuel_source,
        coalesce(trips.start_lat, track.first_lat) as start_lat,
        coalesce(trips.start_lon, track.first_lon) as start_lon,
        trips.start_address,
        coalesce(trips.end_lat, track.last_lat) as end_lat,
        coalesce(trips.end_lon, track.last_lon) as end_lon,
        trips.end_address
    from trips
    left join timing on timing.source_trip_id = trips.source_trip_id
    left join track on track.source_trip_id = trips.source_trip_id
    left join fuel on fuel.source_trip_id = trips.source_trip_id
    left join tanks on tanks.source_vehicle_id = trips.source_vehicle_id
)

select * from final
