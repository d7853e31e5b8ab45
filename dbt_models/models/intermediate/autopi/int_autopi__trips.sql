-- AutoPi trips in the conformed shape of int_trips__unioned. Distance is the trip object's,
-- or the GPS track's length when the export has none; idle seconds are the speed-0,
-- engine-on time between readings (int_autopi__speed_intervals) and driving seconds the
-- rest of the trip (at least what the distance needs at the top speed read, see `split`);
-- litres come from the fuel-level drop only for vehicles whose tank size is known (seed
-- autopi_vehicle_tanks), since AutoPi reports the level in percent. The datapoint figures
-- come from int_autopi__trip_readings. Daily by start instant (a trip's lake day is its UTC
-- start day; the day either side is read in case the two ever disagree).
{{ daily_table('started_at') }}

with trips as (
    select * from {{ ref('stg_autopi__trips') }}
    where {{ in_days('day', 1, 1) }} and {{ in_days('started_at') }}
),

readings as (
    select * from {{ ref('int_autopi__trip_readings') }}
    where {{ in_days('day', 1, 1) }}
),

tanks as (
    select * from {{ ref('autopi_vehicle_tanks') }}
),

-- Driving time is the trip minus its idle readings, but never less than the distance needs at
-- the top speed read: readings minutes apart can call a 2 km trip "idle" all but a second
-- (an average of 7,200 km/h). Then the idle time is what the distance leaves. With a distance
-- but no speed above 0 the split is unknown.
split as (
    select
        trips.source_trip_id,
        coalesce(epoch(trips.ended_at) - epoch(trips.started_at), trips.duration_s) as duration_s,
        coalesce(trips.distance_km, readings.gps_distance_km) as distance_km,
        readings.idle_or_zero_s,
        readings.max_speed_kmh,
        readings.has_speed
    from trips
    left join readings on readings.source_trip_id = trips.source_trip_id
),

driving as (
    select
        source_trip_id,
        case
            when not coalesce(has_speed, false) then null
            when coalesce(distance_km, 0) = 0 then 0.0
            when max_speed_kmh > 0 then distance_km / max_speed_kmh * 3600
        end as needed_s,
        case
            when needed_s is null then null
            when duration_s - idle_or_zero_s >= needed_s then idle_or_zero_s
            else duration_s - least(duration_s, needed_s)
        end as idle_s
    from split
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
        split.duration_s - driving.idle_s as driving_s,
        driving.idle_s,
        split.distance_km,
        readings.max_speed_kmh,
        -- A rise means a refuel during the trip: the consumption is unknown then, not negative.
        case
            when readings.first_level_pct >= readings.last_level_pct
                then round((readings.first_level_pct - readings.last_level_pct) / 100.0 * tanks.tank_l, 3)
        end as fuel_used_l,
        cast(null as double) as fuel_cost,
        case
            when readings.first_level_pct >= readings.last_level_pct and tanks.tank_l is not null
                then 'level_drop'
        end as fuel_source,
        coalesce(trips.start_lat, readings.first_lat) as start_lat,
        coalesce(trips.start_lon, readings.first_lon) as start_lon,
        trips.start_address,
        coalesce(trips.end_lat, readings.last_lat) as end_lat,
        coalesce(trips.end_lon, readings.last_lon) as end_lon,
        trips.end_address
    from trips
    left join readings on readings.source_trip_id = trips.source_trip_id
    left join split on split.source_trip_id = trips.source_trip_id
    left join driving on driving.source_trip_id = trips.source_trip_id
    left join tanks on tanks.source_vehicle_id = trips.source_vehicle_id
)

select * from final
