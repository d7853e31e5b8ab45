-- One row per trip per source, in UTC, km, seconds, litres and km/h. Daily by start.
{{ daily_table('started_at') }}

with trips as (
    select * from {{ ref('int_trips__unioned') }}
    where {{ in_days('started_at') }}
),

vehicles as (
    select * from {{ ref('int_vehicle_identities') }}
),

duplicates as (
    select trip_id, is_duplicate_of from {{ ref('int_trips__cross_source_duplicates') }}
    where {{ in_days('started_at') }}
),

final as (
    select
        trips.trip_id,
        trips.source,
        trips.source_trip_id,
        vehicles.vehicle_id,
        trips.started_at,
        trips.ended_at,
        trips.duration_s,
        trips.driving_s,
        trips.idle_s,
        trips.distance_km,
        trips.max_speed_kmh,
        case
            when trips.driving_s > 0 then round(trips.distance_km / (trips.driving_s / 3600.0), 2)
        end as avg_speed_kmh,
        trips.fuel_used_l,
        trips.fuel_cost,
        trips.start_lat,
        trips.start_lon,
        trips.start_address,
        trips.end_lat,
        trips.end_lon,
        trips.end_address,
        duplicates.is_duplicate_of,
        trips.fuel_source
    from trips
    left join vehicles
        on vehicles.source = trips.source
        and vehicles.source_vehicle_id = trips.source_vehicle_id
    left join duplicates
        on duplicates.trip_id = trips.trip_id
)

select * from final
