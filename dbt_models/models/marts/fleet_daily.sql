-- Per vehicle and UTC day of trip start: distance, time, idling and fuel.
with trips as (
    select * from {{ ref('fct_trips') }}
),

per_day as (
    select
        cast(started_at at time zone 'UTC' as date) as day,
        vehicle_id,
        count(*) as trips,
        sum(distance_km) as distance_km,
        sum(driving_s) as driving_s,
        sum(idle_s) as idle_s,
        sum(fuel_used_l) as fuel_used_l,
        sum(fuel_cost) as fuel_cost
    from trips
    group by 1, 2
),

final as (
    select
        day,
        vehicle_id,
        trips,
        round(distance_km, 3) as distance_km,
        driving_s,
        idle_s,
        case when driving_s + idle_s > 0 then round(idle_s / (driving_s + idle_s), 4) end
            as idle_share,
        round(fuel_used_l, 3) as fuel_used_l,
        case when distance_km > 0 then round(fuel_used_l / distance_km * 100, 2) end
            as l_per_100km,
        -- No source with refuel events is landed yet: unknown, so NULL rather than 0.
        cast(null as bigint) as refuels,
        cast(null as double) as refuel_l,
        round(fuel_cost, 2) as fuel_cost
    from per_day
)

select * from final
