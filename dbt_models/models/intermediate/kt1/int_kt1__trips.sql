-- kt1 trips in the conformed shape of int_trips__unioned. KT1's `inactive` trips are parked
-- periods, not journeys, so only `active` and `mixed` ones (or untyped) become trips.
-- KT1 reports no fuel: fuel_used_l and fuel_cost are unknown (NULL), never 0.
-- Daily by start instant; the lake days either side are read as a trip is landed by its item
-- date, which need not be its start.
{{ daily_table('started_at') }}

with trips as (
    select * from {{ ref('stg_kt1__trips') }}
    where trip_type is distinct from 'inactive'
        and {{ in_days('day', 1, 1) }} and {{ in_days('started_at') }}
),

final as (
    select
        kt1_trip_id as trip_id,
        'kt1' as source,
        source_trip_id,
        source_vehicle_id,
        started_at,
        ended_at,
        cast(duration_s as double) as duration_s,
        coalesce(drive_time_s, duration_s - idle_time_s) as driving_s,
        idle_time_s as idle_s,
        distance_km,
        max_speed_kmh,
        cast(null as double) as fuel_used_l,
        cast(null as double) as fuel_cost,
        cast(null as varchar) as fuel_source,
        start_lat,
        start_lon,
        start_address,
        end_lat,
        end_lon,
        end_address
    from trips
)

select * from final
