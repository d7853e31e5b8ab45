with {{ vehicle_names() }},

per_vehicle as (
    select
        vehicle_id,
        sum(distance_km) filter (where fuel_used_l is not null) as km_with_fuel,
        sum(fuel_used_l) as fuel_used_l
    from {{ ref('fleet_daily') }}
    group by vehicle_id
)

select
    rank() over (order by fuel_used_l / km_with_fuel) as rank,
    vehicle_id,
    display_name,
    round(km_with_fuel, 1) as km,
    round(fuel_used_l, 1) as fuel_l,
    round(100 * fuel_used_l / km_with_fuel, 2) as l_per_100km
from per_vehicle
join names using (vehicle_id)
where km_with_fuel > 0
order by fuel_used_l / km_with_fuel, vehicle_id
