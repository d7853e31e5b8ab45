-- Metrotec route log trips in the conformed fct_trips shape (columns and order of the `avl`
-- CTE in int_trips__unioned). Idle time is (engine off - engine on) - drivingTimeSeconds;
-- fuel use and positions come from the fuel level log (int_metrotec__trip_readings).
-- Daily by start instant (the route log lands a trip under its UTC start day).
{{ daily_table('started_at') }}

with trips as (
    select * from {{ ref('stg_metrotec__routelog') }}
    where {{ in_days('day', 1, 1) }} and {{ in_days('started_at') }}
),

readings as (
    select * from {{ ref('int_metrotec__trip_readings') }}
    where {{ in_days('day', 1, 1) }}
),

final as (
    select
        md5('metrotec|' || trips.source_trip_id) as trip_id,
        'metrotec' as source,
        trips.source_trip_id,
        trips.source_vehicle_id,
        trips.started_at,
        trips.ended_at,
        cast(trips.duration_s as double) as duration_s,
        trips.driving_s,
        -- Unknown (NULL), not negative, when the route log's own figures disagree.
        case
            when trips.driving_s <= trips.duration_s then trips.duration_s - trips.driving_s
        end as idle_s,
        trips.distance_km,
        trips.max_speed_kmh,
        readings.fuel_used_l,
        cast(null as double) as fuel_cost,
        case when readings.fuel_used_l is not null then 'level_drop' end as fuel_source,
        readings.start_lat,
        readings.start_lon,
        trips.start_address,
        readings.end_lat,
        readings.end_lon,
        trips.end_address
    from trips
    left join readings
        on readings.source_trip_id = trips.source_trip_id
)

select * from final
