with {{ vehicle_names() }}

select
    vehicle_id,
    display_name,
    round(sum(fuel_used_l), 1) as fuel_used_l,
    sum(refuels) as refuels,
    round(sum(refuel_l), 1) as refuel_l,
    round(sum(refuel_l) - sum(fuel_used_l), 1) as refuelled_minus_used_l
from {{ ref('fleet_daily') }}
join names using (vehicle_id)
group by vehicle_id, display_name
order by vehicle_id
